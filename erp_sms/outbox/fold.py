"""The statements that fold an order's texts to one contact into one (SMSDIGESTMINUTES):
the fold rows locked in the host's transaction, the waiting text that carries the news
(locked too) and its changes.

Why a row of its own: two host transactions firing events of one order at once must not
both keep a text. The first text of a window does not exist yet when the second
transaction looks, so nothing in ``sms_message`` could be locked; the fold row (one per
order and contact, written with insert-or-ignore) can. The second transaction waits on
it until the first commits, then reads the carrier the first wrote."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import Message, Status, fold_table, message_event_table, message_table
from .values import _history_row


@dataclass(frozen=True)
class FoldRow:
    """A fold row as locked: the carrier's key, every item folded so far (JSON values)
    and whether this transaction's insert made it (``fresh``: nothing else to read)."""

    key: str
    carrier_key: str | None
    items: list[dict[str, Any]]
    fresh: bool


@dataclass(frozen=True)
class Carrier:
    """The text a window's news goes to, as locked: whether it still waits."""

    id: int
    key: str
    status: str
    event: str
    attempts: int
    maybe_sent: bool
    claimed_at: dt.datetime | None
    channel: str | None
    next_attempt_at: dt.datetime | None
    send_window: bool

    @property
    def waiting(self) -> bool:
        """Still queued and never taken: its words may change (a text already claimed or
        sent is never touched)."""
        return (
            self.status == Status.QUEUED
            and self.attempts == 0
            and not self.maybe_sent
            and self.claimed_at is None
        )


def _conn(session: Session) -> Connection:
    return session.connection(bind_arguments={"mapper": Message})


@functools.cache
def _insert_fold(name: str) -> Any:
    """Insert-or-ignore of fold rows. On MariaDB ``ON DUPLICATE KEY UPDATE`` with a no-op,
    not ``INSERT IGNORE``: it takes the exclusive lock at once (a shared lock upgraded by
    the ``FOR UPDATE`` that follows would deadlock two transactions)."""
    t = fold_table
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(t).on_conflict_do_nothing(index_elements=["key"])
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(t).on_conflict_do_nothing(index_elements=["key"])
    if name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return mysql_insert(t).on_duplicate_key_update(key=t.c.key)
    return None


def lock(
    session: Session, new: Mapping[str, tuple[str, dict[str, Any]]], token: str
) -> dict[str, FoldRow]:
    """Take the fold rows of ``new`` (fold key -> the text's key and its item) for this
    transaction: written if missing (the text then carries its window), locked, read.
    In key order, so that two transactions take them in the same order."""
    conn = _conn(session)
    now = utcnow()
    keys = sorted(new)
    values = [
        {
            "key": k,
            "carrier_key": new[k][0],
            "carried": json.dumps([new[k][1]], default=str),
            "token": token,
            "updated_at": now,
        }
        for k in keys
    ]
    stmt = _insert_fold(conn.dialect.name)
    if stmt is None:  # no upsert known here: the rows that exist are left alone
        have = set(
            conn.execute(select(fold_table.c.key).where(fold_table.c.key.in_(keys))).scalars()
        )
        values = [v for v in values if v["key"] not in have]
        stmt = insert(fold_table) if values else None
    if stmt is not None:
        conn.execute(stmt, values)
    t = fold_table
    rows = conn.execute(
        select(t.c.key, t.c.carrier_key, t.c.carried, t.c.token)
        .where(t.c.key.in_(keys))
        .order_by(t.c.key)
        .with_for_update()
    ).all()
    return {
        r.key: FoldRow(r.key, r.carrier_key, json.loads(r.carried or "[]"), r.token == token)
        for r in rows
    }


def carriers(session: Session, keys: Sequence[str]) -> dict[str, Carrier]:
    """The texts with these idempotency keys, locked: a worker's claim skips them until
    the host commits (``SKIP LOCKED``), and a claim that came first is seen here."""
    if not keys:
        return {}
    m = message_table.c
    columns = (
        m.id,
        m.idempotency_key,
        m.status,
        m.event,
        m.attempts,
        m.maybe_sent,
        m.claimed_at,
        m.channel,
        m.next_attempt_at,
        m.send_window,
    )
    rows = (
        _conn(session)
        .execute(
            select(*columns)
            .where(m.idempotency_key.in_(sorted(set(keys))))
            .order_by(m.idempotency_key)
            .with_for_update()
        )
        .all()
    )
    return {
        r.idempotency_key: Carrier(
            r.id,
            r.idempotency_key,
            r.status,
            r.event,
            r.attempts,
            bool(r.maybe_sent),
            r.claimed_at,
            r.channel,
            r.next_attempt_at,
            bool(r.send_window),
        )
        for r in rows
    }


@dataclass(frozen=True)
class CarrierChange:
    """What a fold changes on its carrier: the words (None: unchanged) and the event they
    now tell, and the timeline line that says what was folded in."""

    id: int
    note: str
    values: Mapping[str, Any]


_UPDATE_CARRIER = (
    update(message_table)
    .where(message_table.c.id == bindparam("carrier_id"))
    .where(message_table.c.status == Status.QUEUED)
)


def change_carriers(session: Session, changes: Sequence[CarrierChange]) -> None:
    """Write the carriers' new words and their timeline lines (the rows are locked by
    ``carriers``: still waiting)."""
    if not changes:
        return
    conn = _conn(session)
    now = utcnow()
    for c in changes:
        if c.values:
            conn.execute(_UPDATE_CARRIER, {"carrier_id": c.id, "updated_at": now, **c.values})
    conn.execute(
        insert(message_event_table),
        [_history_row(c.id, now, None, c.note, kind="note", source="notifier") for c in changes],
    )


def save(session: Session, rows: Sequence[tuple[str, str, list[dict[str, Any]]]]) -> None:
    """Write fold rows back: (fold key, carrier key, items)."""
    if not rows:
        return
    t = fold_table
    stmt = (
        update(t)
        .where(t.c.key == bindparam("fold_key"))
        .values(
            carrier_key=bindparam("carrier"),
            carried=bindparam("items_json"),
            updated_at=bindparam("now"),
        )
    )
    now = utcnow()
    _conn(session).execute(
        stmt,
        [
            {"fold_key": k, "carrier": c, "items_json": json.dumps(items, default=str), "now": now}
            for k, c, items in rows
        ],
    )
