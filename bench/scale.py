"""Flat with history (issue 27): the claim with 5,000 vs 100,000 texts due, the staff
pages at 10,000 vs 1,000,000 messages, and ``report --group-by month`` at 1,000,000
against one hand-written GROUP BY — each size and its peer in the same run."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import create_engine, text

from erp_sms import customers, report, testing, users
from erp_sms.config import get_settings
from erp_sms.db import Database, utcnow
from erp_sms.outbox.claim import claim_due, due_batch
from erp_sms.webhooks import create_app

from . import common, history, threads

CLAIMS = 20
PAGES = {
    "dashboard": "/",
    "email log, first page": "/log",
    "email log, needs attention": "/log?status=failed,held,undelivered,skipped",
    "search by phone": "/find?q=(312) 555-0123",
    "search by name": "/find?q=muller",
    "search by order": "/find?q=SO-123",
}
PASSWORD = "correct horse battery"


def _mariadb_url() -> str | None:
    admin = "mysql+pymysql://root@127.0.0.1:3306/"
    try:
        eng = create_engine(admin)
        with eng.begin() as c:
            c.execute(text("DROP DATABASE IF EXISTS erp_sms_bench_scale"))
            c.execute(text("CREATE DATABASE erp_sms_bench_scale CHARACTER SET utf8mb4"))
        eng.dispose()
    except Exception:
        return None
    return admin + "erp_sms_bench_scale"


def _claim_ms(db: Database) -> float:
    samples = common.timed(lambda: claim_due(db, "bench", limit=50, lease_seconds=300), CLAIMS)
    return common.median_ms(samples)


def _plan(db: Database) -> str:
    stmt = due_batch(now=utcnow() + dt.timedelta(seconds=1), limit=50)
    with db.engine.connect() as c:
        sql = str(stmt.compile(c, compile_kwargs={"literal_binds": True}))
        rows = [" ".join(str(v) for v in r) for r in c.execute(text("EXPLAIN " + sql))]
    if db.engine.dialect.name == "postgresql":
        return "; ".join(r.strip() for r in rows[:3])
    return "key " + ", ".join(r.split()[5] for r in rows[:1])  # EXPLAIN's `key` column


def claim_row(name: str, url: str) -> dict[str, Any]:
    engine = common.fresh(url)
    if name == "PostgreSQL":
        history.fill(engine, 1_000_000)
    db = Database(engine)
    common.queue_texts(engine, 5_000, gateway=True)
    small = _claim_ms(db)
    testing.queue_texts(engine, 95_000, gateway=True, start=5_000)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(
            text("ANALYZE sms_message" if name == "PostgreSQL" else "ANALYZE TABLE sms_message")
        )
    big = _claim_ms(db)
    plan = _plan(db)
    db.dispose()
    ratio = big / small
    history_note = " and 1,000,000 sent in history" if name == "PostgreSQL" else ""
    return {
        "work": f"claim a batch of 50, {name}, 100,000 texts due{history_note}",
        "peers": f"the same claim with 5,000 due: p50 {small:.2f} ms",
        "ours": f"p50 {big:.2f} ms ({ratio:.2f}x); plan: {plan}",
        "target": "<= 1.5x the claim at 5,000 due",
        "met": ratio <= 1.5,
    }


def _pages(url: str, size: int) -> dict[str, float]:
    engine = common.fresh(url)
    history.fill(engine, size)
    db = Database(engine)
    # What `erp-sms db upgrade` does after an upgrade: the search's directory, filled.
    out = {"directory": common.timed(lambda: customers.refresh(db), 1)[0]}
    with db.session() as s:
        users.add(s, "bench", PASSWORD, by="bench", role="admin")
    app = create_app(db=db, settings=get_settings())
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    assert client.post("/sign-in", data={"name": "bench", "password": PASSWORD}).status_code == 302
    for label, path in PAGES.items():

        def get(path: str = path) -> None:
            r = client.get(path)
            r.get_data()
            assert r.status_code == 200, (path, r.status_code)

        get()  # warm: templates compiled, statements cached
        out[label] = common.p(common.timed(get, 10), 0.95)
    db.dispose()
    return out


def page_rows(name: str) -> list[dict[str, Any]]:
    small = _pages(common.new_url(name), 10_000)
    big = _pages(common.new_url(name), 1_000_000)
    rows = []
    for label in PAGES:
        ratio = big[label] / small[label]
        rows.append(
            {
                "work": f"staff page at 1,000,000 messages, {name}: {label}",
                "peers": f"the same page at 10,000 messages (same last 31 days): p95 "
                f"{small[label]:.1f} ms",
                "ours": f"p95 {big[label]:.1f} ms ({ratio:.2f}x)"
                + (
                    f"; the directory filled once by `db upgrade` in {big['directory']:.0f} s"
                    if label.startswith("search")
                    else ""
                ),
                "target": "<= 2x its 10,000 time and <= 250 ms",
                "met": ratio <= 2 and big[label] <= 250,
            }
        )
    return rows


HAND = {
    "postgresql": "SELECT to_char(created_at, 'YYYY-MM'), status, channel, count(*), "
    "sum(segments), sum(CAST(price AS numeric)) FROM sms_message GROUP BY 1, 2, 3",
}


def report_row(url: str) -> dict[str, Any]:
    engine = common.fresh(url)
    history.fill(engine, 1_000_000)
    db = Database(engine)

    def ours() -> None:
        with db.read_session() as s:
            report.grouped(s, report.Filters(), "month")

    def hand() -> None:
        with engine.connect() as c:
            c.execute(text(HAND[engine.dialect.name])).all()

    mine, theirs = [], []
    for _ in range(3):  # alternated
        theirs += common.timed(hand, 1)
        mine += common.timed(ours, 1)
    db.dispose()
    ratio = common.median(mine) / common.median(theirs)
    return {
        "work": "`report --group-by month`, 1,000,000 messages, PostgreSQL",
        "peers": "one hand-written GROUP BY month, status, channel (count, segments, "
        f"cost), alternated: {common.median_ms(theirs):.0f} ms",
        "ours": f"{common.median_ms(mine):.0f} ms ({ratio:.2f}x)",
        "target": "<= 1.2x the hand-written query",
        "met": ratio <= 1.2,
    }


def main() -> list[dict[str, Any]]:
    rows = []
    pg = common.postgres_url()
    if pg:
        rows.append(claim_row("PostgreSQL", pg))
    maria = _mariadb_url()
    if maria:
        rows.append(claim_row("MariaDB", maria))
    if pg:
        rows += page_rows("PostgreSQL")
        rows.append(report_row(common.new_url("PostgreSQL")))
    threaded = threads.row()
    if threaded is not None:
        rows.append(threaded)
    return rows
