"""Email log export of a million rows: peak memory (tracemalloc and RSS) must stay flat
as the log grows. Baseline in the same run: loading the same rows into a list."""

from __future__ import annotations

import datetime as dt
import io
import os
import resource
import time
import tracemalloc

from sqlalchemy import insert
from sqlalchemy.orm import Session

from erp_sms import report
from erp_sms.models import Message

from .common import fresh, sqlite_url

ROWS = int(os.environ.get("BENCH_REPORT_ROWS", "1000000"))


class _Null(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def _fill(engine, n: int) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    chunk = 20000
    with engine.begin() as conn:
        for start in range(0, n, chunk):
            conn.execute(
                insert(Message.__table__),
                [
                    {
                        "idempotency_key": f"k{i}",
                        "event": "shipment_shipped",
                        "template": "SMS SESHIP",
                        "order_ref": str(i),
                        "order_number": f"SO-{i}",
                        "status": "sent",
                        "channel": "twilio",
                        "address": f"+1312{i % 10**7:07d}",
                        "body": "Acme: order shipped via UPS, tracking 1Z999. Reply STOP to opt out, HELP for help.",
                        "attempts": 1,
                        "created_at": now,
                        "updated_at": now,
                        "segments": 1,
                        "contact_name": f"Contact {i}",
                    }
                    for i in range(start, min(n, start + chunk))
                ],
            )


def measure(engine, n: int, fmt: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    t0 = time.perf_counter()
    with Session(engine) as s:
        totals = report.WRITERS[fmt](report.rows(s, report.Filters()), _Null())  # type: ignore[operator]
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert totals.rows == n
    return peak, seconds


def main() -> None:
    print(f"email log export: peak Python memory while streaming (tracemalloc), rows {ROWS:,}")
    for n in sorted({ROWS // 10, ROWS}):
        engine = fresh(sqlite_url())
        _fill(engine, n)
        for fmt in ("csv", "json"):
            peak, seconds = measure(engine, n, fmt)
            print(f"  {n:>9,} rows {fmt:<4} peak {peak:6.1f} MiB  {n / seconds:8.0f} rows/s")
        engine.dispose()
    engine = fresh(sqlite_url())
    n = ROWS // 10
    _fill(engine, n)
    tracemalloc.start()
    with Session(engine) as s:
        rows = list(report.rows(s, report.Filters()))
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"  baseline: the {len(rows):,} rows loaded into a list peak {peak:6.1f} MiB")
    print(f"  process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
