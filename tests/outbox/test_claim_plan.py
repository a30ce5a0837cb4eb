"""Issue 27 (scale): a claim reads a batch, not every row that is due. With one OR over
queued texts and expired leases, PostgreSQL read all 100,000 due rows, ran the opt-out
EXISTS for each and sorted them on disk to keep 50 (175 ms against 33 ms at 5,000 due).
Each branch now reads its own index in order and stops at the batch: a plan test, not a
timed one."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from erp_sms.db import utcnow
from erp_sms.outbox.claim import due_batch

from ..helpers import queue_texts

DUE = 100_000
# n copies of the one row the notifier's writer made, with status :status.
FILL = (
    "INSERT INTO sms_message (idempotency_key, event, template, order_ref, order_number, "
    "status, body, attempts, maybe_sent, next_attempt_at, created_at, updated_at, channel, "
    "address, raw_address, recipient, lease_expires_at) "
    "SELECT idempotency_key || :status || i, event, template, order_ref, order_number, "
    ":status, body, 0, false, next_attempt_at, created_at, updated_at, channel, address, "
    "raw_address, '+1312' || lpad(i::text, 7, '0'), LEASE "
    "FROM sms_message, generate_series(1, :n) i WHERE idempotency_key = 'k0'"
)


def _plan(conn, stmt) -> str:
    compiled = stmt.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    return "\n".join(
        str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + compiled.string, params).all()
    )


@pytest.mark.parametrize("branch", ["queued", "expired leases"])
def test_a_claim_branch_reads_its_index_in_order_and_stops_at_the_batch(any_db, branch):
    if any_db.engine.dialect.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's (SQLite walks the same index; MariaDB: bench)")
    queue_texts(any_db, 1)
    now = utcnow()
    with any_db.engine.begin() as conn:
        # 100,000 due texts (and as many sending, half with leases run out), as one
        # INSERT … SELECT copying the one row the notifier's writer made.
        for status, lease in (("queued", "NULL"), ("sending", "now() - interval '1 minute'")):
            conn.execute(text(FILL.replace("LEASE", lease)), {"status": status, "n": DUE})
        conn.exec_driver_sql("ANALYZE sms_message")
    with any_db.engine.connect() as conn:
        if branch == "queued":
            stmt = due_batch(now=now + dt.timedelta(seconds=1), limit=50)
        else:
            stmt = due_batch(lease_clock=now + dt.timedelta(days=1), limit=50)
        plan = _plan(conn, stmt)
        found = conn.execute(stmt).all()
    assert len(found) == 50
    assert plan.lstrip().startswith("Limit"), plan
    index = "ix_sms_message_due" if branch == "queued" else "ix_sms_message_lease"
    assert f"Index Scan using {index}" in plan, plan
    assert "Sort" not in plan and "Seq Scan on sms_message" not in plan, plan
