"""Data for a host's tests and the demo: texts queued straight into the outbox."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert

from ..db import utcnow
from ..models import Status, message_table


def queue_texts(
    engine: Any,
    n: int,
    *,
    gateway: bool = True,
    prefix: str = "k",
    start: int = 0,
    body: str = "order {order} is in production",
) -> None:
    """``n`` queued texts written as the notifier writes them, straight into the outbox of
    ``engine`` (tests, soaks and benchmarks that need a backlog without the host path).
    Numbers are 312-555-0000 upwards; ``body`` may name ``{order}``."""

    now = utcnow()
    rows = []
    for i in range(start, start + n):
        number = f"312{555 + i // 10000:03d}{i % 10000:04d}"
        address = f"{number}@vtext.com" if gateway else f"+1{number}"
        rows.append(
            {
                "idempotency_key": f"{prefix}{i}",
                "event": "sent_to_production",
                "template": "SMS S2P",
                "order_ref": str(i),
                "order_number": f"SO-{i}",
                "status": Status.QUEUED,
                "body": body.format(order=f"SO-{i}"),
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
        for first in range(0, len(rows), 5000):
            conn.execute(insert(message_table), rows[first : first + 5000])
