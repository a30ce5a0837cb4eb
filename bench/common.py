from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

from sqlalchemy import create_engine, text

from erp_sms import migrate
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
    return f"sqlite:///{os.path.join(d, 'bench.db')}"


def postgres_url() -> str | None:
    admin = os.environ.get(
        "ERP_SMS_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    name = f"erp_sms_bench_{os.getpid()}"
    try:
        eng = create_engine(admin, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            c.execute(text(f"CREATE DATABASE {name}"))
        eng.dispose()
    except Exception:
        return None
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
    """``n`` queued texts written as the notifier writes them, straight into the outbox."""
    from sqlalchemy import insert

    from erp_sms.db import utcnow
    from erp_sms.models import Message

    now = utcnow()
    rows = []
    for i in range(n):
        number = f"312{555 + i // 10000:03d}{i % 10000:04d}"
        address = f"{number}@vtext.com" if gateway else f"+1{number}"
        rows.append(
            {
                "idempotency_key": f"k{i}",
                "event": "shipment_shipped",
                "template": "SMS SESHIP",
                "order_ref": str(i),
                "order_number": f"SO-{100000 + i}",
                "status": "queued",
                "body": f"Acme Fabrication: your order SO-{100000 + i} has shipped via UPS, "
                "tracking 1Z999AA10123456784. Reply STOP to opt out.",
                "attempts": 0,
                "maybe_sent": False,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
                "channel": "email_gateway" if gateway else "twilio",
                "address": address,
                "raw_address": address,
                "recipient": f"+1{number}",
            }
        )
    with engine.begin() as conn:
        for start in range(0, n, 5000):
            conn.execute(insert(Message.__table__), rows[start : start + 5000])


SINK = """
import sys, threading
from erp_sms.testing import SmtpSink
with SmtpSink() as sink:
    print(sink.port, flush=True)
    sys.stdin.read()  # until the bench closes our stdin
"""


class SinkProcess:
    """The loopback SMTP sink in a process of its own, as a real mail server is: in the
    bench's process its event loop would compete with the sender for the GIL."""

    host = "127.0.0.1"

    def __enter__(self) -> SinkProcess:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)
