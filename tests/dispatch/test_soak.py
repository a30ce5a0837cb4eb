"""The fault soak (`make soak`, minutes; not in the default suite).

Four `erp-sms worker` processes deliver 5,000 texts — 2,500 to carrier gateways over SMTP,
then 2,500 through Twilio — on PostgreSQL and on MariaDB while the harness breaks things
on a schedule: SIGKILLs of random workers (each restarted), database connections killed
by the server, Twilio 429s, 500s and creates answered after the client's timeout, SMTP
outages (421) and 250s that come after the client's timeout.

It prints, per database: in, once, duplicated, lost, stuck — and asserts lost = 0,
stuck = 0, Twilio duplicates = 0 and SMTP duplicates ≤ workers killed (a worker killed
between the server's 250 and our commit: the one window SMTP leaves open).

The fault schedule is paced by the clock (it is the load, not a synchronisation); the
end is deterministic: the workers are stopped with SIGTERM, the killed ones' leases are
expired, and one `erp-sms dispatch` delivers what is left.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text, update

from erp_sms.db import Database, utcnow
from erp_sms.models import Message, Status
from erp_sms.testing import SmtpSink, TwilioServer

from ..conftest import _empty
from ..helpers import (
    AUTH,
    SID,
    activate_twilio,
    erp_sms_command,
    expire_leases,
    queue_texts,
    worker_env,
)

pytestmark = [pytest.mark.soak, pytest.mark.slow]

WORKERS = 4
PER_CHANNEL = 2_500
SEED = 20261121


@dataclass
class Faults:
    sigkills: int = 0
    db_kills: int = 0
    smtp_outages: int = 0
    log: list[str] = field(default_factory=list)


def _env(tmp_path: Path, url: str, twilio_url: str, smtp_port: int) -> dict[str, str]:
    dispatch = {
        "lease_seconds": 3.0,
        "poll_seconds": 0.2,
        "batch_size": 50,
        "concurrency": 4,
        "max_attempts": 100,
        "backoff_base_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        "http_timeout_seconds": 1.0,
        "smtp_timeout_seconds": 1.0,
    }
    return worker_env(tmp_path, url, twilio_url, smtp_port, dispatch)


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        erp_sms_command("worker"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _kill_a_connection(admin_url: str, rand: random.Random) -> bool:
    """The server kills one of the workers' connections to the soak database."""
    eng = create_engine(admin_url)
    try:
        with eng.connect() as conn:
            if eng.dialect.name == "postgresql":
                pids = conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()"
                    )
                ).scalars()
                choice = list(pids)
                if not choice:
                    return False
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": rand.choice(choice)})
            else:
                ids = conn.execute(
                    text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                    )
                ).scalars()
                choice = list(ids)
                if not choice:
                    return False
                try:
                    conn.exec_driver_sql(f"KILL {int(rand.choice(choice))}")
                except Exception:
                    return False
        return True
    finally:
        eng.dispose()


def _phase(
    name: str,
    url: str,
    env: dict[str, str],
    delivered: Callable[[], int],
    total: int,
    faults: Faults,
    rand: random.Random,
    smtp: SmtpSink,
    deadline_seconds: float = 240.0,
) -> None:
    """Run the workers under faults until the provider has every text (or the
    deadline), then stop them and drain what is left."""
    workers = [_start(env) for _ in range(WORKERS)]
    pause = threading.Event()  # never set: its wait() paces the fault schedule
    started = time.monotonic()
    tick = 0
    try:
        while delivered() < total and time.monotonic() - started < deadline_seconds:
            pause.wait(0.25)
            tick += 1
            if tick % 8 == 0:  # every ~2 s: SIGKILL a worker, start a new one
                i = rand.randrange(WORKERS)
                workers[i].send_signal(signal.SIGKILL)
                workers[i].wait(10)
                faults.sigkills += 1
                workers[i] = _start(env)
            if tick % 3 == 0 and _kill_a_connection(url, rand):
                faults.db_kills += 1
            if name == "smtp" and tick % 12 == 0:  # every ~3 s: a short outage
                smtp.mode = "down"
                faults.smtp_outages += 1
            elif smtp.mode == "down" and tick % 12 == 2:
                smtp.mode = "accept"
    finally:
        smtp.mode = "accept"
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(60)
            except subprocess.TimeoutExpired:
                w.kill()
                faults.sigkills += 1
    # The killed workers' leases would run out within 3 s; expire them now instead of
    # waiting, then deliver what is left in one run.
    eng = create_engine(url)
    expire_leases(eng)
    with eng.begin() as conn:
        conn.execute(
            update(Message.__table__)
            .where(Message.status == Status.QUEUED)
            .values(next_attempt_at=utcnow())
        )
    eng.dispose()
    done = subprocess.run(erp_sms_command("dispatch"), env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]


def _report(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], name: str, line: str
) -> None:
    """Print the soak's line past pytest's capture, and keep it in ``name`` (untracked)."""
    with capsys.disabled():
        print("\n" + line)
    (Path(request.config.rootpath) / name).write_text(line + "\n")


def _figures(copies: Counter[str], expected: list[str]) -> dict[str, int]:
    return {
        "in": len(expected),
        "once": sum(1 for r in expected if copies[r] == 1),
        "duplicated": sum(max(copies[r] - 1, 0) for r in expected),
        "lost": sum(1 for r in expected if copies[r] == 0),
    }


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_fault_soak(kind, request, tmp_path, capsys):
    url = request.getfixturevalue("server_urls")[kind]
    if url is None:
        pytest.skip(f"{kind} not reachable")
    _empty(url)
    rand = random.Random(SEED)
    faults = Faults()
    db = Database(url)
    started = time.monotonic()
    with (
        TwilioServer(transient_rate=0.08, slow_rate=0.02, slow_seconds=1.5, seed=SEED) as tw,
        SmtpSink(slow_rate=0.02, slow_seconds=1.5, seed=SEED) as smtp,
    ):
        tw.add_account(SID, AUTH)
        env = _env(tmp_path, url, tw.url, smtp.port)

        # Phase 1: carrier gateways over SMTP (TWILIO inactive).
        queue_texts(db, PER_CHANNEL, prefix="g")
        gateway = [f"312555{i:04d}@vtext.com" for i in range(PER_CHANNEL)]
        _phase(
            "smtp",
            url,
            env,
            lambda: len({r[1][0] for r in smtp.received}),
            PER_CHANNEL,
            faults,
            rand,
            smtp,
        )
        smtp_copies = Counter(r[1][0] for r in smtp.received)
        smtp_kills = faults.sigkills

        # Phase 2: Twilio.
        with db.session() as s:
            activate_twilio(s)
        queue_texts(db, PER_CHANNEL, gateway=False, prefix="t", start=PER_CHANNEL)
        numbers = [f"+1312555{i:04d}" for i in range(PER_CHANNEL, 2 * PER_CHANNEL)]
        _phase(
            "twilio",
            url,
            env,
            lambda: len({m.to for m in tw.messages}),
            PER_CHANNEL,
            faults,
            rand,
            smtp,
        )
        twilio_copies = Counter(m.to for m in tw.messages)
        transient, slow_creates, slow_250s = tw.transient_faults, tw.slow_answers, smtp.slow_answers

    with db.session() as s:
        statuses = dict(
            s.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        )
    db.dispose()
    stuck = sum(n for st, n in statuses.items() if st in (Status.QUEUED, Status.SENDING))
    sm, tf = _figures(smtp_copies, gateway), _figures(twilio_copies, numbers)
    seconds = time.monotonic() - started
    line = (
        f"soak {kind}: in {sm['in'] + tf['in']}, once {sm['once'] + tf['once']}, "
        f"duplicated {sm['duplicated'] + tf['duplicated']} (smtp {sm['duplicated']}, "
        f"twilio {tf['duplicated']}), lost {sm['lost'] + tf['lost']}, stuck {stuck}; "
        f"rows {dict(sorted(statuses.items()))}; faults: {faults.sigkills} SIGKILLs "
        f"({smtp_kills} in the SMTP phase), {faults.db_kills} DB connections killed, "
        f"{transient} Twilio 429/500, {slow_creates} Twilio creates answered after the "
        f"timeout, {faults.smtp_outages} SMTP outages, {slow_250s} SMTP 250s after the "
        f"timeout; {seconds:.0f} s"
    )
    _report(request, capsys, f".soak-{kind}.txt", line)
    assert sm["lost"] + tf["lost"] == 0, line
    assert stuck == 0, line
    assert tf["duplicated"] == 0, line
    assert sm["duplicated"] <= smtp_kills, line


# -- the races of issue 24: a skewed clock, a STOP mid-flight, callbacks racing outcomes -------

RACE_TEXTS = 600
STOP_TEXTS = 300
STOP_NUMBER = "+13125559999"
SKEW = 15.0  # seconds, against a 6 s lease


def _in_process_worker(url: str, env: dict[str, str], skew: float, stop: threading.Event):
    """A worker in this process whose clock is ``skew`` seconds off."""
    import datetime as dt

    from erp_sms.config import Settings
    from erp_sms.dispatch import Dispatcher

    settings = Settings.from_env(env)
    offset = dt.timedelta(seconds=skew)
    worker = Dispatcher(
        Database(url),
        settings,
        worker_id=f"skewed{skew:+.0f}",
        stop=stop,
        clock=lambda: utcnow() + offset,
    )
    return threading.Thread(target=worker.run_forever, daemon=True)


# An in-process worker's psycopg connection is left for the garbage collector at the end
# (a ResourceWarning, in this soak only): not found yet, noted in CHANGES.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_race_soak(kind, request, tmp_path, capsys):
    """Phase 1: 600 gateway texts, two worker processes and two in-process workers
    whose clocks are 15 s ahead and behind, 6 s leases (the outside test sent 303 and
    380 duplicates). Phase 2: 600 Twilio texts plus 300 to one number that texts STOP
    to `erp-sms serve` once 50 of them are at Twilio; every create's status callback is
    posted while the sender is still recording the send. Asserts: 0 duplicates from the
    skewed clocks, 0 texts at Twilio after the STOP was answered, 0 rows that contradict
    what Twilio has or said."""
    from erp_sms.testing import post_signed

    from ..helpers import start_serve

    url = request.getfixturevalue("server_urls")[kind]
    if url is None:
        pytest.skip(f"{kind} not reachable")
    _empty(url)
    db = Database(url)
    started = time.monotonic()
    dispatch = {
        "lease_seconds": 6.0,
        "poll_seconds": 0.2,
        "batch_size": 20,
        "concurrency": 4,
        "backoff_base_seconds": 0.05,
        "backoff_max_seconds": 0.5,
    }
    pause = threading.Event()  # never set: paces the harness's looks
    with SmtpSink() as smtp, TwilioServer() as tw:
        tw.add_account(SID, AUTH)
        env = worker_env(tmp_path, url, tw.url, smtp.port, dispatch)
        # -- phase 1: skewed clocks over SMTP
        queue_texts(db, RACE_TEXTS, prefix="g")
        stop = threading.Event()
        skewed = [_in_process_worker(url, env, s, stop) for s in (SKEW, -SKEW)]
        procs = [_start(env) for _ in range(2)]
        for t in skewed:
            t.start()
        while len({r[1][0] for r in smtp.received}) < RACE_TEXTS:
            assert time.monotonic() - started < 240, "phase 1 did not finish"
            pause.wait(0.2)
        smtp_copies = Counter(r[1][0] for r in smtp.received)
        skew_duplicates = sum(n - 1 for n in smtp_copies.values())
        # -- phase 2: a STOP mid-flight and callbacks racing the outcomes
        serve, public = start_serve(env)
        # its -v log goes to a pipe: read it, or the server stops once the pipe is full
        threading.Thread(target=serve.stderr.read, daemon=True).start()
        env2 = {**env, "ERP_SMS_PUBLIC_URL": public}
        stop.set()
        for t in skewed:
            t.join(60)
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(60)
        callbacks: list[int] = []
        rand = random.Random(SEED)

        def report(msg) -> None:  # Twilio's callback, racing the sender's own write
            status = "undelivered" if rand.random() < 0.1 else "delivered"
            threading.Thread(
                target=lambda: callbacks.append(
                    tw.deliver(msg.sid, status, 30005 if status == "undelivered" else None)
                )
            ).start()

        tw.on_create = report
        with db.session() as s:
            activate_twilio(s)
        queue_texts(db, RACE_TEXTS, gateway=False, prefix="t", start=RACE_TEXTS)
        queue_to_one(db, STOP_TEXTS, STOP_NUMBER)
        procs = [_start(env2) for _ in range(4)]
        while sum(1 for m in tw.messages if m.to == STOP_NUMBER) < 50:
            assert time.monotonic() - started < 240, (
                f"the STOP number's texts did not start: {tw.creates} creates, "
                f"{len(callbacks)} callbacks, workers {[p.poll() for p in procs]}"
            )
            pause.wait(0.01)
        stop_form = {
            "MessageSid": "SM" + "5" * 32,
            "AccountSid": SID,
            "From": STOP_NUMBER,
            "To": "+13125550100",
            "Body": "STOP",
        }
        assert post_signed(f"{public}/twilio/inbound", stop_form, AUTH) == 200
        answered = time.monotonic()
        while len({m.to for m in tw.messages if m.to != STOP_NUMBER}) < RACE_TEXTS:
            assert time.monotonic() - started < 300, "phase 2 did not finish"
            pause.wait(0.2)
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(60)
        # callbacks still on their way: wait for every thread's answer
        while len(callbacks) < len(tw.messages):
            assert time.monotonic() - started < 360, "callbacks did not finish"
            pause.wait(0.05)
        serve.terminate()
        serve.wait(30)
        serve.stderr.close()
        after_stop = sum(1 for m in tw.messages if m.to == STOP_NUMBER and m.arrived > answered)
        at_twilio = {m.sid: m for m in tw.messages}
        stop_at_twilio = sum(1 for m in tw.messages if m.to == STOP_NUMBER)
        twilio_copies = Counter(m.to for m in tw.messages if m.to != STOP_NUMBER)
    with db.session() as s:
        rows = list(s.scalars(select(Message).where(Message.channel == "twilio")))
        contradictions = 0
        for m in rows:
            got = at_twilio.get(m.provider_id or "")
            if m.status in (Status.CANCELED, Status.SKIPPED, Status.FAILED, Status.HELD):
                contradictions += got is not None
            elif got is None:
                contradictions += 1  # says it went out, Twilio has no such message
            elif m.status != got.status:
                contradictions += 1  # Twilio said delivered/undelivered, the row did not
        stop_rows = [m for m in rows if m.recipient == STOP_NUMBER]
        stop_sent = sum(1 for m in stop_rows if m.provider_id)
        stop_canceled = sum(1 for m in stop_rows if m.status == Status.CANCELED)
    db.dispose()
    line = (
        f"race soak {kind}: skewed clocks ±{SKEW:.0f} s on 6 s leases: {skew_duplicates} "
        f"duplicate gateway texts of {RACE_TEXTS}; STOP mid-flight: {stop_at_twilio} of "
        f"{STOP_TEXTS} at Twilio before it was answered, {after_stop} after, {stop_canceled} "
        f"canceled; callbacks racing outcomes: {len(callbacks)} posted "
        f"({sum(c == 204 for c in callbacks)} answered 204); rows that contradict "
        f"Twilio: {contradictions} of {len(rows)}; Twilio duplicates "
        f"{sum(n - 1 for n in twilio_copies.values())}; {time.monotonic() - started:.0f} s"
    )
    _report(request, capsys, f".soak-races-{kind}.txt", line)
    assert skew_duplicates == 0, line
    assert all(c == 204 for c in callbacks), line
    assert after_stop == 0, line
    assert contradictions == 0, line
    assert stop_sent == stop_at_twilio and stop_sent + stop_canceled == STOP_TEXTS, line
    assert all(n == 1 for n in twilio_copies.values()), line


def queue_to_one(db: Database, n: int, number: str) -> None:
    """``n`` queued Twilio texts, all to one number (different orders), due one every
    50 ms from now: a stream the STOP lands in the middle of."""
    import datetime as dt

    from sqlalchemy import bindparam

    from erp_sms import testing

    testing.queue_texts(db.engine, n, gateway=False, prefix="s", start=10_000)
    now = utcnow()
    m = Message.__table__
    with db.engine.begin() as conn:
        conn.execute(
            update(m)
            .where(m.c.idempotency_key == bindparam("key"))
            .values(
                recipient=number,
                address=number,
                raw_address=number,
                next_attempt_at=bindparam("due"),
            ),
            [
                {"key": f"s{10_000 + i}", "due": now + dt.timedelta(milliseconds=50 * i)}
                for i in range(n)
            ],
        )
