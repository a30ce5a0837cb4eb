"""Workers die, leases expire, several workers claim at once: nothing is lost, nothing is
sent twice (Twilio), and the one SMTP window that remains is measured."""

from __future__ import annotations

import datetime as dt
import functools
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert

from erp_sms import outbox, testing
from erp_sms.db import Database, utcnow
from erp_sms.models import Message, Status
from erp_sms.outbox import Outcome
from erp_sms.testing import SmtpSink

from ..helpers import (
    activate_twilio,
    erp_sms_command,
    expire_leases,
    make_orders,
    messages,
    worker_env,
)

pytestmark = pytest.mark.slow


def _env(
    tmp_path: Path, db_url: str, twilio_url: str, smtp_port: int, lease: float = 1.5
) -> dict[str, str]:
    dispatch = {
        "lease_seconds": lease,
        "concurrency": 1,
        "poll_seconds": 0.2,
        "backoff_base_seconds": 0.0,
        "backoff_max_seconds": 0.0,
        "http_timeout_seconds": 10.0,
    }
    return worker_env(tmp_path, db_url, twilio_url, smtp_port, dispatch)


def test_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice_via_twilio(
    delivery, db, session, twilio_server, tmp_path
):
    activate_twilio(session)
    make_orders(session, 6, gateway=False)
    # the third create is answered late: the worker is killed while it waits for it
    slow = threading.Event()
    twilio_server.fail_next(2, status=200)
    twilio_server.fail_next(status=200, hold=slow)
    env = _env(tmp_path, delivery.database_url, twilio_server.url, 1)
    worker = subprocess.Popen(
        erp_sms_command("worker"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        twilio_server.wait_for(lambda t: t.creates >= 3)  # Twilio has the slow one
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        slow.set()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL
    stuck = [m for m in messages(session) if m.status == Status.SENDING]
    assert stuck, "the kill should leave claimed rows behind"
    assert expire_leases(db.engine) == len(stuck)
    done = subprocess.run(
        erp_sms_command("dispatch"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rows = messages(session)
    assert {m.status for m in rows} == {Status.SENT}
    to = [m.to for m in twilio_server.messages]
    assert len(to) == 6 and len(set(to)) == 6  # no duplicate
    found = [m for m in rows if any("not sent again" in (h.detail or "") for h in m.history)]
    # The slow one was found at Twilio, not sent again; so is any sent before it whose
    # outcome was still on its way to the database (outcomes are written by the recorder
    # thread, asynchronously: Twilio's look-up covers that window).
    assert 1 <= len(found) <= 3
    assert twilio_server.messages[2].to in {m.address for m in found}
    assert any("reclaimed" in (h.detail or "") for h in found[0].history)


def test_smtp_duplicate_window_is_the_one_message_in_hand(delivery, db, session, tmp_path):
    """SMTP has no way to ask whether a mail went out: a worker killed after the server
    stored a mail and before the outcome was committed sends that one again. Measured
    here: exactly one duplicate, the message in hand; the rest exactly once."""
    answer = threading.Event()
    with SmtpSink(hold=answer) as sink:
        make_orders(session, 4)
        env = _env(tmp_path, delivery.database_url, "http://127.0.0.1:9", sink.port)
        worker = subprocess.Popen(
            erp_sms_command("worker"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            sink.wait_for(1)  # stored; the 250 is held back
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
        sink.hold = None
        answer.set()
        assert expire_leases(db.engine) >= 1
        done = subprocess.run(
            erp_sms_command("dispatch"), env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        rcpts = [r[1][0] for r in sink.received]
    assert {m.status for m in messages(session)} == {Status.SENT}
    assert len(set(rcpts)) == 4
    duplicates = len(rcpts) - len(set(rcpts))
    assert duplicates == 1


def test_sigterm_finishes_the_text_in_hand_and_hands_back_the_rest(
    delivery, db, session, twilio_server, tmp_path
):
    activate_twilio(session)
    make_orders(session, 8, gateway=False)
    twilio_server.latency = 0.3
    env = _env(tmp_path, delivery.database_url, twilio_server.url, 1, lease=60)
    worker = subprocess.Popen(
        erp_sms_command("worker"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        twilio_server.wait_for(lambda t: t.requests >= 2)
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "SIGTERM" in err and "stopped" in err
    rows = messages(session)
    assert Status.SENDING not in {m.status for m in rows}  # nothing left claimed
    sent = [m for m in rows if m.status == Status.SENT]
    assert len(sent) == len(twilio_server.messages) >= 2
    queued = [m for m in rows if m.status == Status.QUEUED]
    assert queued and all(m.attempts == 0 for m in queued)  # handed back, attempt not counted
    done = subprocess.run(
        erp_sms_command("dispatch"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("dispatch: ")
    assert len(twilio_server.messages) == 8 and len({m.to for m in twilio_server.messages}) == 8


# -- claims on every database ------------------------------------------------------------------


def _queue(db: Database, n: int) -> None:
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(
            insert(Message.__table__),
            [
                {
                    "idempotency_key": f"k{i}",
                    "event": "sent_to_production",
                    "template": "SMS S2P",
                    "order_ref": str(i),
                    "order_number": f"SO-{i}",
                    "status": Status.QUEUED,
                    "body": "hi",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                    "channel": "twilio",
                    "address": f"+1312555{i:04d}",
                    "raw_address": f"+1312555{i:04d}",
                }
                for i in range(n)
            ],
        )


def test_concurrent_workers_claim_each_message_exactly_once(any_db: Database, any_db_url: str):
    _queue(any_db, 120)
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        db = Database(any_db_url)
        try:
            while True:
                got = outbox.claim_due(db, name, limit=7, lease_seconds=60)
                if not got:
                    return
                with lock:
                    claimed.extend(c.id for c in got)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(claimed) == 120 and len(set(claimed)) == 120


def test_an_expired_lease_is_reclaimed_and_the_old_claim_cannot_record(any_db: Database):
    _queue(any_db, 1)
    (first,) = outbox.claim_due(any_db, "old", limit=5, lease_seconds=-1)  # expires at once
    (second,) = outbox.claim_due(any_db, "new", limit=5, lease_seconds=60)
    assert second.id == first.id and second.reclaimed_after == first.claimed_at
    assert second.attempts == 2 and second.may_have_been_sent
    assert not outbox.finish(any_db, first, Outcome(Status.SENT, provider_id="SMold"))
    assert outbox.finish(any_db, second, Outcome(Status.SENT, provider_id="SMnew"))
    assert outbox.claim_due(any_db, "third", limit=5, lease_seconds=60) == []
    with any_db.sessions() as s:
        (m,) = messages(s)
        assert (m.status, m.provider_id) == (Status.SENT, "SMnew")


def test_a_live_lease_is_not_reclaimed(any_db: Database):
    _queue(any_db, 3)
    assert len(outbox.claim_due(any_db, "a", limit=5, lease_seconds=60)) == 3
    assert outbox.claim_due(any_db, "b", limit=5, lease_seconds=60) == []


def test_a_claim_sends_as_many_statements_for_thirty_texts_as_for_one(any_db: Database):
    """The batch goes to ``sending`` in one UPDATE and its timeline lines in one INSERT:
    a statement per text held the claim's transaction (on SQLite the file's write lock,
    which the recorder waits for) a round trip per text."""
    counts = []
    for n in (1, 30):
        _queue_more(any_db, n)
        seen: list[str] = []
        count = functools.partial(_append_statement, seen)
        event.listen(any_db.engine, "before_cursor_execute", count)
        try:
            got = outbox.claim_due(any_db, "w", limit=100, lease_seconds=60)
        finally:
            event.remove(any_db.engine, "before_cursor_execute", count)
        assert len(got) == n
        counts.append(len(seen))
        with any_db.sessions() as s:
            for c in got:
                m = s.get_one(Message, c.id)
                assert (m.status, m.claimed_by, m.attempts) == (Status.SENDING, c.token, 1)
                assert [h.detail for h in m.history] == [f"claimed by {c.token}"]
    assert counts[0] == counts[1], counts


def test_a_row_another_worker_took_between_the_read_and_the_update_is_not_claimed(
    any_db: Database,
):
    """Without row locks (or with a server that did not keep one) a due row can change
    between the claim's read and its UPDATE: only rows still due get the claim."""
    _queue(any_db, 3)
    with any_db.sessions() as s:
        taken = min(m.id for m in messages(s))
    done: list[bool] = []

    def another_worker(conn: Any, cursor: Any, statement: str, *_a: object) -> None:
        if not done and statement.lstrip().startswith("UPDATE sms_message"):
            done.append(True)
            cursor.execute(
                "UPDATE sms_message SET status = 'sending', claimed_by = 'other', "  # noqa: S608
                f"lease_expires_at = '2999-01-01 00:00:00' WHERE id = {int(taken)}"
            )

    event.listen(any_db.engine, "before_cursor_execute", another_worker)
    try:
        got = outbox.claim_due(any_db, "w", limit=10, lease_seconds=60)
    finally:
        event.remove(any_db.engine, "before_cursor_execute", another_worker)
    assert done and sorted(c.id for c in got) == sorted(c for c in _ids(any_db) if c != taken)
    with any_db.sessions() as s:
        m = s.get_one(Message, taken)
        assert (m.status, m.claimed_by) == (Status.SENDING, "other")
        assert not [h for h in m.history if "claimed by w" in (h.detail or "")]


def _append_statement(
    seen: list[str], _c: object, _cur: object, statement: str, *_a: object
) -> None:
    seen.append(statement)


def _ids(db: Database) -> list[int]:
    with db.sessions() as s:
        return [m.id for m in messages(s)]


def _queue_more(db: Database, n: int) -> None:
    with db.sessions() as s:
        start = len(messages(s))
    testing.queue_texts(db.engine, n, prefix="more", start=start)


def test_a_message_waits_until_its_time(any_db: Database):
    _queue(any_db, 1)

    with any_db.sessions() as s:
        (m,) = messages(s)
        m.next_attempt_at = utcnow() + dt.timedelta(hours=1)
        s.commit()
    assert outbox.claim_due(any_db, "a", limit=5, lease_seconds=60) == []
    later = utcnow() + dt.timedelta(hours=2)
    assert len(outbox.claim_due(any_db, "a", limit=5, lease_seconds=60, now=later)) == 1


def test_a_long_report_export_does_not_hold_up_claims(db, settings):
    """SQLite: the report reads in a deferred transaction, so the worker can still claim
    and record while an export is half-way through."""
    from erp_sms import report

    _queue(db, 30)
    with db.read_session() as s:
        rows = report.rows(s, report.Filters(), chunk=5)
        first = [next(rows) for _ in range(10)]  # the export is under way
        claimed = outbox.claim_due(db, "w", limit=30, lease_seconds=60)
        assert len(claimed) == 30
        assert all(
            outbox.finish(db, c, Outcome(Status.SENT, provider_id=f"SM{c.id}")) for c in claimed
        )
        rest = list(rows)
    assert len(first) + len(rest) == 30


def test_a_worker_asked_to_stop_while_it_starts_exits_cleanly(tmp_path, db_url, db, smtp_sink):
    """A SIGTERM during the worker's first second (its imports) killed it: exit -15, as
    if it had crashed. It is kept until the worker is up, which then stops at once."""
    import subprocess
    import sys

    from ..helpers import worker_env

    env = worker_env(tmp_path, db_url, "http://127.0.0.1:9", smtp_sink.port, {})
    script = (
        "import os, signal, sys\n"
        "sys.argv = ['erp-sms', 'worker']  # as the console script runs it\n"
        "import erp_sms\n"
        "os.kill(os.getpid(), signal.SIGTERM)  # the supervisor, while it is still starting\n"
        "from erp_sms.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "worker: SIGTERM" in done.stderr and "worker: stopped" in done.stderr
    assert "Traceback" not in done.stderr
    # A host importing erp-sms (this process) keeps its own signal handling.
    import signal

    from erp_sms import _early

    assert signal.getsignal(signal.SIGTERM) is not _early._note
