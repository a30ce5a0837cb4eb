"""Delivery under faults (issue 9): each finding, injected where it happens — a
connection killed by the database server, an SMTP answer that never comes, a worker whose
lease runs out, a Twilio answer after the timeout or not in JSON — with real servers, an
injected clock and events, no sleeps."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from erp_sms import erp, outbox, signals
from erp_sms.channels.twilio import LOOKUP_PAGE_SIZE, TwilioChannel
from erp_sms.cli import cli
from erp_sms.config import get_settings
from erp_sms.db import Database, is_lock_conflict, utcnow
from erp_sms.dispatch import Dispatcher
from erp_sms.models import InboundMessage, Message, MessageEvent, Status
from erp_sms.rule_records import twilio_rule
from erp_sms.testing import SmtpSink, StoredMessage
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import (
    TWILIO_NUMBER,
    Clock,
    LogWatch,
    activate_twilio,
    callback,
    expire_leases,
    make_orders,
    messages,
    post,
    queue_texts,
)

# -- helpers -----------------------------------------------------------------------------------


def rows(db: Database) -> list[Message]:
    with db.session() as s:
        found = list(s.scalars(select(Message).order_by(Message.id)))
        for m in found:
            _ = list(m.history)
        s.expunge_all()
        return found


class ConnectionKiller:
    """The database server kills the connection running a matching statement, just
    before it runs: PostgreSQL ``pg_terminate_backend``, MariaDB ``KILL``; SQLite, which
    has no server, gets its connection closed under it. ``times``: how many kills."""

    def __init__(self, engine: Engine, url: str, match: Callable[[str], bool], times: int = 1):
        self.engine, self.match, self.left, self.kills = engine, match, times, 0
        self.admin = None if engine.dialect.name == "sqlite" else create_engine(url)
        event.listen(engine, "before_cursor_execute", self._maybe_kill)

    def _maybe_kill(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.left <= 0 or not self.match(statement):
            return
        self.left -= 1
        self.kills += 1
        dbapi = conn.connection.dbapi_connection
        if self.admin is None:
            dbapi.close()
        elif self.engine.dialect.name == "postgresql":
            with self.admin.connect() as admin:
                admin.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": dbapi.info.backend_pid}
                )
        else:
            with self.admin.connect() as admin:
                admin.exec_driver_sql(f"KILL {int(dbapi.thread_id())}")

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._maybe_kill)
        if self.admin is not None:
            self.admin.dispose()


def _is_finish(statement: str) -> bool:
    """The statement that records an outcome: the UPDATE of ``finish_many``, or on
    PostgreSQL the one-statement group write."""
    if statement.startswith("WITH v AS (SELECT * FROM unnest("):
        return True
    head = statement.split("WHERE")[0]
    return statement.startswith("UPDATE sms_message SET") and "reason=" in head


def no_wait(_seconds: float) -> None:
    """Backoff between tries to record an outcome: not waited for in tests."""


# -- 4a: the connection drops after the 250 ------------------------------------------------------


def test_a_connection_killed_after_the_250_loses_no_outcome_and_sends_nothing_twice(
    any_db, any_db_url, smtp_sink
):
    with_settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)
    queue_texts(any_db, 5)
    killer = ConnectionKiller(any_db.engine, any_db_url, _is_finish, times=2)
    try:
        summary = Dispatcher(any_db, wait=no_wait).run_once()
    finally:
        killer.close()
    assert killer.kills == 2
    assert summary.counts["sent"] == 5, summary.line()
    rcpts = [r[1][0] for r in smtp_sink.received]
    assert len(rcpts) == 5 and len(set(rcpts)) == 5  # each once
    assert {m.status for m in rows(any_db)} == {Status.SENT}  # none left in `sending`


def test_an_opt_out_that_cannot_be_recorded_at_first_is_recorded_and_nothing_dies(
    any_db, any_db_url, twilio_server
):
    """21610 with the database connection lost while recording the opt-out: the worker
    tries again; the text fails with the reason, the number is opted out."""
    with any_db.session() as s:
        activate_twilio(s)
    with_settings(twilio_api_url=twilio_server.url)
    queue_texts(any_db, 2, gateway=False)
    twilio_server.unsubscribe("+13125550000")
    killer = ConnectionKiller(
        any_db.engine, any_db_url, lambda st: st.startswith("INSERT INTO sms_opt_out")
    )
    try:
        summary = Dispatcher(any_db, wait=no_wait).run_once()
    finally:
        killer.close()
    assert killer.kills == 1
    assert (summary.counts["failed"], summary.counts["sent"]) == (1, 1)
    with any_db.session() as s:
        assert s.scalar(text("SELECT number FROM sms_opt_out")) == "+13125550000"


# -- 4b: no answer after the data was handed over ------------------------------------------------


@pytest.mark.parametrize("how", ["the answer is late", "the connection closes"])
def test_smtp_without_an_answer_after_the_data_is_sent_unconfirmed_and_never_again(
    settings, db, how
):
    never = threading.Event()
    mode = "vanish" if how == "the connection closes" else "accept"
    with SmtpSink(mode, hold=never if mode == "accept" else None) as sink:
        with_settings(
            smtp_host=sink.host,
            smtp_port=sink.port,
            dispatch=replace(settings.dispatch, smtp_timeout_seconds=0.3),
        )
        queue_texts(db, 2)
        summary = Dispatcher(db).run_once()
        never.set()
        received = [r[1][0] for r in sink.received]
    assert sorted(received) == ["3125550000@vtext.com", "3125550001@vtext.com"]  # once each
    assert summary.counts["sent"] == 2
    for m in rows(db):
        assert m.status == Status.SENT
        assert "not confirmed by the mail server" in m.history[-1].detail


def test_an_smtp_outage_before_the_data_is_retried_and_sent_once_it_is_over(settings, db):
    with SmtpSink("down") as sink:
        with_settings(smtp_host=sink.host, smtp_port=sink.port)
        queue_texts(db, 2)
        first = Dispatcher(db).run_once(max_batches=1)
        assert first.counts["retrying"] == 2 and sink.received == []
        sink.mode = "accept"
        Dispatcher(db).run_once()
        assert sorted(r[1][0] for r in sink.received) == [
            "3125550000@vtext.com",
            "3125550001@vtext.com",
        ]
    assert {m.status for m in rows(db)} == {Status.SENT}


# -- 4c: a batch that outlives its lease -----------------------------------------------------------


def _slow_batch(db: Database, twilio_server, clock: Clock, lease: float = 60.0):
    """Worker A claims three Twilio texts at ``clock`` and is stuck on the first create
    (Twilio has it, the answer is held). Returns (A, its thread, the answer event)."""
    settings = with_settings(
        twilio_api_url=twilio_server.url,
        dispatch=replace(get_settings().dispatch, lease_seconds=lease, concurrency=1),
    )
    answer = threading.Event()
    twilio_server.fail_next(status=200, hold=answer)
    a = Dispatcher(db, settings, worker_id="A", clock=clock)
    thread = threading.Thread(target=a.run_once, kwargs={"max_batches": 1}, daemon=True)
    thread.start()
    twilio_server.wait_for(lambda t: t.creates >= 1)
    return a, thread, answer


def test_a_live_worker_keeps_its_lease_so_no_second_worker_takes_its_batch(any_db, twilio_server):
    with any_db.session() as s:
        activate_twilio(s)
    queue_texts(any_db, 3, gateway=False)
    clock = Clock()
    a, thread, answer = _slow_batch(any_db, twilio_server, clock)
    try:
        first = _leases(any_db)
        clock.advance(50)  # most of the lease has gone by: A's heartbeat renews it
        assert a.renew_leases() == 3
        renewed = _leases(any_db)
        # by the database's clock; on MariaDB the text in its handover is share-locked
        # and passed by (no one can take it meanwhile)
        handed = min(first) if any_db.engine.dialect.name == "mysql" else None
        assert all(renewed[i] > first[i] for i in first if i != handed)
        assert outbox.claim_due(any_db, "B", limit=10, lease_seconds=60) == []
    finally:
        answer.set()
        thread.join(30)
    assert [m.status for m in rows(any_db)] == [Status.SENT] * 3
    assert len(twilio_server.messages) == 3


def _leases(db: Database) -> dict[int, dt.datetime]:
    with db.engine.connect() as conn:
        m = Message.__table__.c
        return {r.id: r.lease_expires_at for r in conn.execute(select(m.id, m.lease_expires_at))}


def test_a_worker_that_lost_its_claim_does_not_send_what_another_now_has(any_db, twilio_server):
    with any_db.session() as s:
        activate_twilio(s)
    queue_texts(any_db, 3, gateway=False)
    clock = Clock()
    _a, thread, answer = _slow_batch(any_db, twilio_server, clock)
    try:
        # A's heartbeat could not reach the database: its leases ran out. B reclaims the
        # two A has not started (A then must not send them); the one A is handing over
        # is locked (no one takes a text in the middle of its handover) and stays A's.
        expire_leases(any_db.engine)
        clock.advance(200)  # on A's clock too: its own lease knowledge is stale
        summary = Dispatcher(any_db, worker_id="B").run_once()
        expected = 3 if any_db.engine.dialect.name == "sqlite" else 2
        assert summary.counts["sent"] == expected
    finally:
        answer.set()
        thread.join(30)
    to = [m.to for m in twilio_server.messages]
    assert len(to) == 3 and len(set(to)) == 3  # A sent nothing it no longer held
    assert {m.status for m in rows(any_db)} == {Status.SENT}


# -- 5: Twilio answers after the timeout ----------------------------------------------------------


def test_a_last_attempt_without_an_answer_is_checked_at_twilio_before_it_is_failed(
    delivery, db, session, twilio_server
):
    with_settings(dispatch=replace(delivery.dispatch, http_timeout_seconds=1.0, max_attempts=1))
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    answer = threading.Event()
    twilio_server.fail_next(status=200, hold=answer)  # Twilio creates it; the answer is late
    summary = Dispatcher(db).run_once()
    answer.set()
    (m,) = messages(session)
    assert summary.counts["sent"] == 1
    assert m.status == Status.SENT and m.provider_id == twilio_server.messages[0].sid
    assert "the provider has it" in m.history[-1].detail


def test_the_look_up_before_a_resend_pages_past_the_first_page(
    delivery, db, session, twilio_server
):
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    (claimed,) = outbox.claim_due(db, "w", limit=1, lease_seconds=60)
    earlier = twilio_server.messages
    created = utcnow().replace(microsecond=0)
    earlier.append(_stored(claimed.address, claimed.body, created))
    for i in range(LOOKUP_PAGE_SIZE + 50):  # newer texts to the same customer
        earlier.append(_stored(claimed.address, f"other text {i}", created))
    with db.session() as s:
        channel = TwilioChannel(twilio_rule(s), delivery)
    found = channel.find_previous_send(replace(claimed, maybe_sent=True))
    assert found is not None and found.provider_id == earlier[0].sid


def _stored(to: str | None, body: str, created: dt.datetime) -> StoredMessage:
    import secrets

    from ..helpers import SID

    return StoredMessage(
        sid="SM" + secrets.token_hex(16),
        account_sid=SID,
        to=to or "",
        from_=TWILIO_NUMBER,
        body=body,
        status="queued",
        date_created=created,
        date_sent=None,
        status_callback=None,
        num_segments=1,
    )


# -- 6: a non-JSON 200 -------------------------------------------------------------------------------


def test_a_proxy_page_instead_of_twilio_leaves_nothing_stuck_and_no_traceback(
    delivery, db, session, twilio_server
):
    with_settings(dispatch=replace(delivery.dispatch, max_attempts=2))
    activate_twilio(session)
    make_orders(session, 2, gateway=False)
    twilio_server.fail_next(4, status=200, body=b"<html><body>Proxy login</body></html>")
    result = CliRunner().invoke(cli, ["dispatch"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    found = messages(session)
    assert {m.status for m in found} == {Status.FAILED}
    assert all(m.attempts == 2 for m in found)
    assert all("not the Twilio API" in m.reason for m in found)
    assert twilio_server.messages == []


def test_a_text_reclaimed_past_its_attempts_is_not_sent_again(delivery, db, session, twilio_server):
    """Workers that died with the text in hand, again and again: after max_attempts it
    is given up (Twilio checked first), not sent a seventh time."""
    with_settings(dispatch=replace(delivery.dispatch, max_attempts=2))
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    for worker in ("dead-1", "dead-2"):
        assert outbox.claim_due(db, worker, limit=1, lease_seconds=-1)  # dies; lease gone
    summary = Dispatcher(db).run_once()
    (m,) = messages(session)
    assert summary.counts["failed"] == 1 and m.attempts == 3
    assert "stopped answering" in m.reason
    assert twilio_server.messages == []


# -- 7: races between workers and odd callbacks ------------------------------------------------------


def _a_real_deadlock(db: Database) -> OperationalError:
    """Two transactions that lock two rows in opposite order: the database picks a
    victim. Returns the victim's error, as the driver raised it."""
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS lock_pair (id INT PRIMARY KEY, v INT)")
        conn.exec_driver_sql("DELETE FROM lock_pair")
        conn.exec_driver_sql("INSERT INTO lock_pair VALUES (1, 0), (2, 0)")
    errors: list[OperationalError] = []
    both_hold_one = threading.Barrier(2)

    def take(first: int, second: int) -> None:
        with db.engine.connect() as conn:
            try:
                with conn.begin():
                    bump = text("UPDATE lock_pair SET v = 1 WHERE id = :id")
                    conn.execute(bump, {"id": first})
                    both_hold_one.wait(10)
                    conn.execute(bump, {"id": second})
            except OperationalError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=take, args=p) for p in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with db.engine.begin() as conn:  # the schema check (test_databases) sees our tables only
        conn.exec_driver_sql("DROP TABLE lock_pair")
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_claim_that_loses_a_deadlock_is_tried_again_quietly(kind, request, caplog):
    """InnoDB picks a deadlock victim among workers claiming at once: the loser tries
    again and nothing is logged as an error."""
    url = request.getfixturevalue("server_urls")[kind]
    if url is None:
        pytest.skip(f"{kind} not reachable")
    from ..conftest import _empty

    _empty(url)
    db = Database(url)
    try:
        deadlock = _a_real_deadlock(db)
        assert is_lock_conflict(deadlock)
        queue_texts(db, 3)
        left = [1]

        def lose_the_first_claim(conn, cursor, statement, *args):
            if left and statement.lstrip().startswith("SELECT sms_message.id"):
                left.pop()
                raise deadlock

        event.listen(db.engine, "before_cursor_execute", lose_the_first_claim)
        try:
            got = outbox.claim_due(db, "w", limit=10, lease_seconds=60)
        finally:
            event.remove(db.engine, "before_cursor_execute", lose_the_first_claim)
        assert not left and len(got) == 3
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
    finally:
        db.dispose()


@pytest.fixture
def hook_app(any_db: Database):
    with any_db.session() as s:
        activate_twilio(s)
    queue_texts(any_db, 1, gateway=False)
    sid = "SM" + "a" * 32
    with any_db.engine.begin() as conn:
        conn.execute(Message.__table__.update().values(status=Status.SENT, provider_id=sid))
    settings = with_settings(public_url="https://erp.example.com/sms")
    return create_app(db=any_db, settings=settings).test_client(), sid


def test_callbacks_with_values_that_do_not_fit_get_4xx_or_are_stored_as_they_fit(any_db, hook_app):
    client, sid = hook_app
    huge = post(client, "status", callback(sid, "undelivered", ErrorCode=str(2**31 + 5)))
    assert huge.status_code == 204
    long_sid = post(client, "status", callback("SM" + "b" * 298, "delivered"))
    assert long_sid.status_code == 400
    nul = post(client, "status", callback(sid, "delivered", ErrorMessage="bad\x00byte"))
    assert nul.status_code == 204
    with any_db.session() as s:
        m = s.scalar(select(Message))
        assert m.status == Status.UNDELIVERED and m.error_code is None
        assert str(2**31 + 5) in (m.reason or "")
        raws = [e.raw for e in s.scalars(select(MessageEvent))]
        assert any("badbyte" in (r or "") for r in raws)


def test_an_inbound_request_without_a_message_sid_is_refused_so_a_replay_changes_nothing(
    any_db, hook_app
):
    client, _sid = hook_app
    stop = {"From": "+13125550000", "To": TWILIO_NUMBER, "Body": "STOP", "AccountSid": "AC1"}
    assert post(client, "inbound", stop).status_code == 400
    assert post(client, "inbound", {**stop, "MessageSid": "SM" + "c" * 32}).status_code == 200
    start = {**stop, "Body": "START", "MessageSid": "SM" + "d" * 32}
    assert post(client, "inbound", start).status_code == 200
    # the STOP again, replayed: same MessageSid, so START stays in force
    assert post(client, "inbound", {**stop, "MessageSid": "SM" + "c" * 32}).status_code == 200
    with any_db.session() as s:
        assert s.scalar(text("SELECT count(*) FROM sms_opt_out")) == 0
        assert len(list(s.scalars(select(InboundMessage)))) == 2


# -- 2: the SQLite host path with a locked or read-only file -----------------------------------------


@pytest.mark.parametrize("how", ["locked by another program", "opened read-only"])
def test_sqlite_a_host_whose_texts_cannot_be_queued_finds_out_at_its_commit(db_url, settings, how):
    path = db_url.removeprefix("sqlite:///")
    with Session(create_engine(db_url)) as s:
        org = OrganizationFactory(name="Acme")
        c = ContactFactory(name="Ann", email2="3125550101@vtext.com", organizations=[org])
        s.add_all([org, c, SalesOrderFactory(number="SO-5", organization=org, contact=c)])
        s.commit()
    blocker = sqlite3.connect(path, isolation_level=None)
    if how.startswith("locked"):
        blocker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        engine = create_engine(db_url, connect_args={"timeout": 0.2})
    else:
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    warned = LogWatch("erp_sms", "the database aborted the transaction")
    try:
        with Session(engine) as s:
            order = s.scalar(select(erp.SalesOrder))
            signals.sent_to_production.send(order, session=s)  # never raises
            with pytest.raises(OperationalError):
                s.commit()  # …but the host finds out, as with a write of its own
    finally:
        blocker.close()
        warned.close()
        engine.dispose()
    assert warned.seen.is_set()
    with Session(create_engine(db_url)) as s:  # the host retries once the file is usable
        order = s.scalar(select(erp.SalesOrder))
        signals.sent_to_production.send(order, session=s)
        s.commit()
        assert len(list(s.scalars(select(Message)))) == 1
