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

from .conftest import _empty
from .helpers import AUTH, SID, activate_twilio, erp_sms_command, expire_leases, worker_env
from .test_faults import queue_texts

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
    with capsys.disabled():
        print("\n" + line)
    (Path(request.config.rootpath) / f".soak-{kind}.txt").write_text(line + "\n")
    assert sm["lost"] + tf["lost"] == 0, line
    assert stuck == 0, line
    assert tf["duplicated"] == 0, line
    assert sm["duplicated"] <= smtp_kills, line
