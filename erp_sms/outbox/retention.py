"""Forgetting: what finished texts keep after ``purge`` (retention) and ``erase`` (one
person's request). A text keeps what the reports count and cost — status, channel,
segments, price, dates, order and organization — and loses its words, its number and
address, the provider's raw reports and the link it carried.

Rows are changed in batches of ``BATCH`` (each its own short transaction, the caller's):
a purge of a year of texts never holds the log locked for long.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from ..addresses import NUMBER_IN_TEXT
from ..codes import Status
from ..db import rowcount, utcnow
from ..models import Click, message_event_table, message_table

BATCH = 1000

#: A text in one of these will not change again: it may be purged.
FINISHED = (
    Status.SENT,
    Status.DELIVERED,
    Status.READ,
    Status.UNDELIVERED,
    Status.FAILED,
    Status.SKIPPED,
    Status.CANCELED,
    Status.MERGED,
)


def scrub(text: str | None, names: Sequence[str] = ()) -> str | None:
    """``text`` (a reason, a timeline line) without phone numbers and ``names``."""
    if not text:
        return text
    text = NUMBER_IN_TEXT.sub("(number removed)", text)
    for name in names:
        if name:
            text = text.replace(name, "(name removed)")
    return text


def purgeable(session: Session, cutoff: dt.datetime, *, limit: int = BATCH) -> list[int]:
    """Up to ``limit`` ids of texts finished before ``cutoff`` and not purged yet, oldest
    first (through the ``created_at`` index: a text finishes after it is created)."""
    m = message_table.c
    return list(
        session.scalars(
            select(m.id).where(_finished_before(cutoff)).order_by(m.created_at, m.id).limit(limit)
        )
    )


def count_purgeable(session: Session, cutoff: dt.datetime) -> int:
    """How many texts ``purge`` would change (``--dry-run``)."""
    return int(session.scalar(select(func.count()).where(_finished_before(cutoff))) or 0)


def _finished_before(cutoff: dt.datetime) -> ColumnElement[bool]:
    """Texts finished before ``cutoff`` and not purged yet (a text finishes after it is
    created: ``created_at`` bounds the read through its index)."""
    m = message_table.c
    return and_(
        m.created_at < cutoff,
        m.updated_at < cutoff,
        m.status.in_(FINISHED),
        m.purged_at.is_(None),
    )


def forget(
    session: Session, ids: Sequence[int], *, forget_contact: bool = False, names: Sequence[str] = ()
) -> int:
    """Strip the texts ``ids`` of their personal data; ``forget_contact``: also which
    contact they were for (an erasure). The number of texts changed."""
    if not ids:
        return 0
    now = utcnow()
    values: dict[str, object] = {
        "body": "",
        "address": None,
        "raw_address": None,
        "recipient": None,
        "contact_name": None,
        "link_urls": None,
        "purged_at": now,
    }
    if forget_contact:
        values["contact_ref"] = None
    m = message_table.c
    reasons = session.execute(
        select(m.id, m.reason).where(m.id.in_(ids), m.reason.is_not(None))
    ).all()
    changed = rowcount(session.execute(update(message_table).where(m.id.in_(ids)).values(**values)))
    # Only what names a number or a person is rewritten, in one executemany each.
    scrubbed = [
        {"_id": mid, "_text": clean}
        for mid, reason in reasons
        if (clean := scrub(reason, names)) != reason
    ]
    if scrubbed:
        session.connection().execute(
            update(message_table).where(m.id == bindparam("_id")).values(reason=bindparam("_text")),
            scrubbed,
        )
    e = message_event_table.c
    session.execute(update(message_event_table).where(e.message_id.in_(ids)).values(raw=None))
    details = session.execute(
        select(e.id, e.detail).where(e.message_id.in_(ids), e.detail.is_not(None))
    ).all()
    scrubbed = [
        {"_id": eid, "_text": clean}
        for eid, detail in details
        if (clean := scrub(detail, names)) != detail
    ]
    if scrubbed:
        session.connection().execute(
            update(message_event_table)
            .where(e.id == bindparam("_id"))
            .values(detail=bindparam("_text")),
            scrubbed,
        )
    session.execute(update(Click).where(Click.message_id.in_(ids)).values(user_agent=None))
    return changed


def of_contact(
    session: Session, contact_ref: str | None, numbers: Sequence[str], *, limit: int = BATCH
) -> list[int]:
    """Up to ``limit`` ids of texts for ``contact_ref`` or to ``numbers`` that still hold
    personal data (erasure)."""
    m = message_table.c
    who = []
    if contact_ref:
        who.append(m.contact_ref == contact_ref)
    if numbers:
        who.append(m.recipient.in_(list(numbers)))
    if not who:
        return []
    still = or_(m.purged_at.is_(None), m.contact_ref.is_not(None))
    return list(
        session.scalars(select(m.id).where(and_(or_(*who), still)).order_by(m.id).limit(limit))
    )
