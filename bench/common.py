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
