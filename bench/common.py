from __future__ import annotations

import atexit
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text

from erp_sms import migrate, testing
from erp_sms.db import make_engine


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def sqlite_url() -> str:
    d = tempfile.mkdtemp(prefix="erp-sms-bench-")
    atexit.register(shutil.rmtree, d, True)  # a 1M-contact file is hundreds of MB
    return f"sqlite:///{os.path.join(d, 'bench.db')}"


_DROP_AT_EXIT: set[str] = set()


def _drop_databases(admin: str) -> None:
    """Drop this run's PostgreSQL databases: left behind, each 1M-contact one is ~0.5 GB
    that autovacuum then works through while the next run measures."""
    eng = create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        for name in _DROP_AT_EXIT:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    eng.dispose()


def postgres_url() -> str | None:
    admin = os.environ.get(
        "ERP_SMS_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    name = f"erp_sms_bench_{os.getpid()}"
    try:
        eng = create_engine(admin, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            c.execute(text(f"CREATE DATABASE {name}"))
        eng.dispose()
    except Exception:
        return None
    if not _DROP_AT_EXIT:
        atexit.register(_drop_databases, admin)
    _DROP_AT_EXIT.add(name)
    return admin.rsplit("/", 1)[0] + "/" + name


def fresh(url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    migrate.upgrade(engine)
    return engine


def p(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``samples``, in ms."""
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def median(values: list[float]) -> float:
    return statistics.median(values)


def databases() -> list[str]:
    """SQLite always; PostgreSQL when reachable on loopback."""
    return ["SQLite"] + (["PostgreSQL"] if postgres_url() else [])


def new_url(name: str) -> str:
    """An empty database of kind ``name`` (PostgreSQL: dropped and created again)."""
    url = sqlite_url() if name == "SQLite" else postgres_url()
    assert url is not None
    return url


def queue_texts(engine, n: int, *, gateway: bool) -> None:  # type: ignore[no-untyped-def]
    """``n`` queued texts of a realistic length, straight into the outbox."""
    testing.queue_texts(
        engine,
        n,
        gateway=gateway,
        body="Acme Fabrication: your order {order} has shipped via UPS, tracking "
        "1Z999AA10123456784. Reply STOP to opt out.",
    )


SID, TOKEN = "AC" + "1" * 32, "2" * 32  # the loopback Twilio account of the benches

SINK = """
import sys
from erp_sms.testing import SmtpSink
with SmtpSink() as sink:
    print(sink.host, sink.port, flush=True)
    sys.stdin.read()  # until the bench closes our stdin
"""

TWILIO = """
import json, sys
from erp_sms.testing import TwilioServer
with TwilioServer(latency=%(latency)r, concurrency_limit=%(limit)r) as api:
    api.add_account(%(sid)r, %(token)r)
    host, port = api.url.rsplit(":", 1)
    print(host.removeprefix("http://"), port, flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    counts = {k: getattr(api, k) for k in ("requests", "creates", "over_limit")}
    print(json.dumps(counts), flush=True)
"""


class ServerProcess:
    """A loopback server in a process of its own, as a real mail server or Twilio's API
    is: in the bench's process its threads would compete with the sender for the GIL and
    the rate measured would be partly the server's. ``counts`` (Twilio) holds the
    server's request counters once the block has ended."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.counts: dict[str, int] = {}

    def __enter__(self) -> ServerProcess:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        host, port = self.proc.stdout.readline().split()
        self.host, self.port = host, int(port)
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        tail = self.proc.stdout.read().strip()
        self.counts = json.loads(tail) if tail else {}
        self.proc.wait(30)


def smtp_sink() -> ServerProcess:
    """The loopback SMTP sink, in its own process."""
    return ServerProcess(SINK)


def twilio_api(latency: float, concurrency_limit: int = 0) -> ServerProcess:
    """The loopback Twilio-compatible API with the bench's account, in its own process."""
    return ServerProcess(
        TWILIO % {"latency": latency, "limit": concurrency_limit, "sid": SID, "token": TOKEN}
    )


def twilio_client(api_url: str) -> Any:
    """The real twilio client pointed at a loopback Twilio server (the peers' sender)."""
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    client = Client(
        SID,
        TOKEN,
        http_client=TwilioHttpClient(timeout=10),
        environment={"TWILIO_REGION": "", "TWILIO_EDGE": ""},
    )
    client.api.base_url = api_url
    return client
