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
from ..models import Message, Status, fold_table, message_table


@dataclass(frozen=True)
class FoldRow:
    """A fold row as locked: the carrier's key, every item folded so far (JSON values)
    and whether this transaction's insert made it (``fresh``: nothing else to read)."""

    key: str
    carrier_key: str | None
    items: list[dict[str, Any]]
    fresh: bool
    raw: str = "[]"  # ``items`` as stored: the same for the order's contacts, mostly

    @property
    def window(self) -> int:
        """The current window's number (its items carry it; the carrier is its text)."""
        return max((int(i.get("window", 0)) for i in self.items), default=0)


@dataclass(frozen=True)
class Carrier:
    """The text a window's news goes to, as locked: whether it still waits."""

    id: int
    key: str
    status: str
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
def _upsert_returning(name: str, returning: bool) -> Any:
    """One statement that writes missing fold rows and returns every row locked, as it
    stands: ``ON CONFLICT DO UPDATE`` with a no-op (PostgreSQL and SQLite 3.35+) locks
    an existing row as ``FOR UPDATE`` would — waiting for a transaction that wrote it —
    and RETURNING gives it back. None where that is not known (then two statements)."""
    t = fold_table
    cols = (t.c.key, t.c.carrier_key, t.c.carried, t.c.token)
    if name == "postgresql" and returning:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(t)
        return pg.on_conflict_do_update(
            index_elements=["key"], set_={"key": pg.excluded.key}
        ).returning(*cols)
    if name == "sqlite" and returning:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(t)
        return lite.on_conflict_do_update(
            index_elements=["key"], set_={"key": lite.excluded.key}
        ).returning(*cols)
    return None


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
    dialect = conn.dialect
    one = _upsert_returning(dialect.name, bool(dialect.insert_executemany_returning))
    if one is not None:
        rows = (
            conn.execute(one, values).all()
            if len(values) > 1
            else conn.execute(one, values[0]).all()
        )
    else:
        rows = _insert_then_lock(conn, keys, values)
    return {
        r.key: FoldRow(
            r.key, r.carrier_key, json.loads(r.carried or "[]"), r.token == token, r.carried
        )
        for r in rows
    }


def _insert_then_lock(conn: Connection, keys: list[str], values: list[dict[str, Any]]) -> Any:
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
    return conn.execute(
        select(t.c.key, t.c.carrier_key, t.c.carried, t.c.token)
        .where(t.c.key.in_(keys))
        .order_by(t.c.key)
        .with_for_update()
    ).all()


_m = message_table.c
# Built once (issue 27's lesson: building a statement cost more than running it).
_CARRIERS = (
    select(
        _m.id,
        _m.idempotency_key,
        _m.status,
        _m.attempts,
        _m.maybe_sent,
        _m.claimed_at,
        _m.channel,
        _m.next_attempt_at,
        _m.send_window,
    )
    .where(_m.idempotency_key.in_(bindparam("keys", expanding=True)))
    .order_by(_m.idempotency_key)
    .with_for_update()
)
_LOGGED = select(_m.idempotency_key).where(
    _m.idempotency_key.in_(bindparam("keys", expanding=True))
)
# The SET clause comes from the parameters given (the words, the event, the flags).
_CHANGE = update(message_table).where(
    _m.id.in_(bindparam("ids", expanding=True)), _m.status == Status.QUEUED
)
_SAVE = update(fold_table).where(fold_table.c.key.in_(bindparam("keys", expanding=True)))


def carriers(
    session: Session, keys: Sequence[str], ours: Sequence[str]
) -> tuple[dict[str, Carrier], set[str]]:
    """The texts with idempotency keys ``keys``, locked — a worker's claim skips them
    until the host commits (``SKIP LOCKED``), and a claim that came first is seen here —
    and which of ``ours`` (the event's new texts) are in the log already (an event fired
    again). One statement; on MariaDB two: a locking read of keys not in the log would
    lock the gaps between them (and other hosts' inserts with them)."""
    if not keys:
        return {}, set()
    conn = _conn(session)
    gaps = conn.dialect.name in ("mysql", "mariadb")
    wanted = set(keys) if gaps else set(keys) | set(ours)
    found = {
        r.idempotency_key: Carrier(*r[:4], bool(r.maybe_sent), *r[5:8], bool(r.send_window))
        for r in conn.execute(_CARRIERS, {"keys": sorted(wanted)})
    }
    if gaps:
        logged = set(conn.execute(_LOGGED, {"keys": list(ours)}).scalars())
    else:
        logged = set(ours) & set(found)
    return found, logged


@dataclass(frozen=True)
class CarrierChange:
    """What a fold changes on its carrier: the words and the event they now tell (empty:
    unchanged — a stage already superseded). What it carries is told by the merged
    texts themselves (``merged_into``), not by a line of its own: one statement fewer
    on the host path."""

    id: int
    values: Mapping[str, Any]


def change_carriers(session: Session, changes: Sequence[CarrierChange]) -> None:
    """Write the carriers' new words (the rows are locked by ``carriers``: still
    waiting). The texts an event folds into for each of its contacts get the same words:
    one UPDATE for them all, not one per contact."""
    if not changes:
        return
    conn = _conn(session)
    now = utcnow()
    alike: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for c in changes:
        if c.values:
            said = repr(sorted(c.values.items()))
            alike.setdefault(said, (dict(c.values), []))[1].append(c.id)
    for values, ids in alike.values():
        conn.execute(_CHANGE, {"ids": ids, "updated_at": now, **values})


def save(session: Session, rows: Sequence[tuple[str, str | None, list[dict[str, Any]]]]) -> None:
    """Write fold rows back: (fold key, the new window's carrier or None, items). Rows
    that read alike (an order's contacts) go in one statement."""
    if not rows:
        return
    conn = _conn(session)
    now = utcnow()
    alike: dict[tuple[str | None, str], list[str]] = {}
    for key, carrier, items in rows:
        said = json.dumps(items, default=str)
        alike.setdefault((carrier, said), []).append(key)
    for (carrier, said), keys in alike.items():
        values: dict[str, Any] = {"keys": keys, "carried": said, "updated_at": now}
        if carrier is not None:
            values["carrier_key"] = carrier
        conn.execute(_SAVE, values)
