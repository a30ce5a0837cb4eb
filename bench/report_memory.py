"""Email-log export as CSV through the real command (`erp-sms report --format csv
--output FILE`, a fresh process: its peak RSS is measured by the OS), at 10k and 1M rows
(``BENCH_REPORT_ROWS`` to change the large size).

Peers in the same run: the database driver and the csv module alone (a plain cursor,
rows written as they come) and, on PostgreSQL, ``COPY … TO STDOUT``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from sqlalchemy import insert

from erp_sms import report
from erp_sms.db import utcnow
from erp_sms.models import Message

from .common import databases, fresh, median, new_url

LARGE = int(os.environ.get("BENCH_REPORT_ROWS", "1000000"))
SMALL = 10_000


def _fill(engine: Any, n: int) -> None:
    now = utcnow()
    with engine.begin() as conn:
        for start in range(0, n, 20000):
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
                        "body": "Acme: order shipped via UPS, tracking 1Z999. Reply STOP to opt out.",
                        "attempts": 1,
                        "created_at": now,
                        "updated_at": now,
                        "sent_at": now,
                        "segments": 1,
                        "contact_name": f"Contact {i}",
                        "price": "-0.0079",
                        "price_unit": "USD",
                    }
                    for i in range(start, min(n, start + 20000))
                ],
            )


def _rate(url: str, n: int) -> float:
    """Rows per second of the export itself (no process start-up)."""
    from erp_sms import report
    from erp_sms.db import Database

    db = Database(url)
    with db.session() as s, open(os.devnull, "w", newline="") as fh:
        t0 = time.perf_counter()
        totals = report.export_csv(s, report.Filters(), fh)
        seconds = time.perf_counter() - t0
    db.dispose()
    assert totals.rows == n, totals.rows
    return n / seconds


def _ours(url: str, n: int) -> tuple[float, float]:
    """Rows per second (start-up included) and peak RSS (MB) of the real command."""
    fd, out = tempfile.mkstemp(suffix=".csv")
    os.close(fd)
    env = {**os.environ, "ERP_SMS_DATABASE_URL": url}
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "erp-sms"),
        "report",
        "--format",
        "csv",
        "--output",
        out,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The peak RSS of the command itself (VmHWM, reset at exec): the OS's ru_maxrss for a
    # child also counts the bench's own memory, copied at fork before the exec.
    peak_kb = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            break
        time.sleep(0.02)  # polling a running command: a measurement, not a test wait
    status = proc.wait()
    seconds = time.perf_counter() - t0
    assert status == 0, proc.stderr.read() if proc.stderr else status
    with open(out) as fh:
        rows = sum(1 for _ in fh) - 1
    os.unlink(out)
    assert rows == n, rows
    return n / seconds, peak_kb / 1024


def _driver_csv(url: str, n: int) -> float:
    from erp_sms.db import make_engine

    engine = make_engine(url)
    # The report's columns as stored (the peer formats and computes nothing).
    stored = {"message_id": "id", "scheduled_for": "next_attempt_at"}
    cols = ", ".join(stored.get(c, c) for c in report.COLUMNS)
    t0 = time.perf_counter()
    with engine.connect() as conn, open(os.devnull, "w", newline="") as fh:
        w = csv.writer(fh)
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = raw.cursor()
        cur.execute(f"SELECT {cols} FROM sms_message ORDER BY id")  # noqa: S608 - constant
        while rows := cur.fetchmany(10000):
            w.writerows(rows)
    engine.dispose()
    return n / (time.perf_counter() - t0)


def _copy(url: str, n: int) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    t0 = time.perf_counter()
    copy = "COPY (SELECT * FROM sms_message ORDER BY id) TO STDOUT WITH CSV"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(copy) as cp:
        for _ in cp:
            pass
    return n / (time.perf_counter() - t0)


def main() -> list[dict[str, Any]]:
    out = []
    for db_name in databases():
        for n in (SMALL, LARGE):
            url = new_url(db_name)
            engine = fresh(url)
            _fill(engine, n)
            engine.dispose()
            _whole, rss = _ours(url, n)
            # A 10k export takes ~0.1 s: one run is one burst of this shared machine's
            # noise. Small sizes: the median of 5 runs after one not counted (imports,
            # statement compilation), for ours and the peer alike.
            runs = 5 if n <= 100_000 else 1
            if runs > 1:
                _rate(url, n)
                _driver_csv(url, n)
            rate = median([_rate(url, n) for _ in range(runs)])
            peer = median([_driver_csv(url, n) for _ in range(runs)])
            peers = f"driver + csv alone {peer / 1000:.0f}k rows/s"
            if db_name == "PostgreSQL":
                peers += f"; COPY {_copy(url, n) / 1000:.0f}k rows/s"
            out.append(
                {
                    "work": f"email log export, CSV, {n:,} rows, {db_name}",
                    "peers": peers,
                    "ours": f"{rate / 1000:.0f}k rows/s ({rate / peer:.2f}x the driver + csv), "
                    f"peak RSS {rss:.0f} MB",
                    "target": ">= 100k rows/s, RSS < 150 MB, flat from 10k to 1M",
                    "met": rate >= 100_000 and rss < 150,
                }
            )
            print(out[-1])
    return out
