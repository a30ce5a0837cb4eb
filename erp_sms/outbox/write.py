"""New message rows: the host path's inserts (one statement where the driver allows),
staff's planned rows, reminder runs."""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    insert,
    select,
)
from sqlalchemy.orm import Session

from .. import direct as _direct
from ..models import (
    Message,
    message_table,
    sequence_run_table,
)

log = logging.getLogger(__name__)


def insert_new(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert message rows, skipping any whose idempotency key is already in the log —
    one statement, no read first, no IntegrityError: PostgreSQL and SQLite ``ON CONFLICT
    DO NOTHING``, MariaDB ``ON DUPLICATE KEY UPDATE`` with a no-op (it takes the
    exclusive lock at once, so concurrent firings of one event wait in line instead of
    deadlocking on a shared-to-exclusive upgrade). Rows go in key order for the same
    reason."""
    if not rows:
        return
    ordered = sorted(rows, key=lambda r: str(r["idempotency_key"]))
    conn = session.connection(bind_arguments={"mapper": Message})
    name = conn.dialect.name
    stmt = _insert_or_ignore(name)
    if stmt is None:  # no upsert syntax known here: read, then insert what is missing
        have = existing_keys(session, [str(r["idempotency_key"]) for r in ordered])
        ordered = [r for r in ordered if r["idempotency_key"] not in have]
        if not ordered:
            return
        stmt = insert(message_table)
    one = _one_statement(conn, stmt, len(ordered), len(ordered[0]))
    if one is None:
        with session.begin_nested():
            # asked again: the SAVEPOINT is emitted when the nested transaction's
            # connection is first asked for, not by begin_nested() itself
            session.connection(bind_arguments={"mapper": Message}).execute(stmt, ordered)
        return
    _direct.insert(conn, one, ordered)  # SQLAlchemy's execute where it must (SQLite)


def _one_statement(conn: Connection, stmt: Any, rows: int, columns: int) -> Any | None:
    """The statement that writes ``rows`` rows as one statement, or None (then they go
    inside a SAVEPOINT of their own).

    Only SQLite needs this: the host path runs no SAVEPOINT there
    (``notifier._our_part``), and SQLite undoes a failed statement whole, but plain
    executemany is a statement per row, so a failure could keep an event's first rows.
    With RETURNING, SQLAlchemy sends executemany as multi-row INSERTs
    ("insertmanyvalues", compiled once) up to its page of rows and its cap on
    parameters — and this SQLite's own cap (999 before SQLite 3.32)."""
    dialect = conn.dialect
    if dialect.name != "sqlite":
        return stmt
    if not dialect.insert_executemany_returning:  # SQLite before 3.35: no RETURNING
        return None
    getlimit = getattr(conn.connection.driver_connection, "getlimit", None)  # Python 3.11+
    own = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else 999
    limit = min(dialect.insertmanyvalues_max_parameters, own)
    if rows > dialect.insertmanyvalues_page_size or rows * columns > limit:
        return None
    return _returning(stmt)


@functools.cache
def _returning(stmt: Any) -> Any:
    return stmt.returning(message_table.c.id)


def host_insert(conn: Connection, rows: Sequence[dict[str, Any]], *, direct: bool) -> None:
    """Run the statement an event's rows go in with, for ``notifier.warm_up``: it
    compiles it (the caller rolls back) — through ``direct`` or through SQLAlchemy."""
    stmt = _insert_or_ignore(conn.dialect.name)
    if stmt is not None:
        one = _one_statement(conn, stmt, len(rows), len(rows[0]))
        one = stmt if one is None else one
        if direct:
            _direct.insert(conn, one, rows)
        else:
            conn.execute(one, list(rows))


@functools.cache
def _insert_or_ignore(name: str) -> Any:
    """The insert-or-ignore statement of dialect ``name`` (built once), or None."""
    stmt: Any
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(message_table).on_conflict_do_nothing(index_elements=["idempotency_key"])
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(message_table).on_conflict_do_nothing(
            index_elements=["idempotency_key"]
        )
    elif name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(message_table).on_duplicate_key_update(id=message_table.c.id)
    else:
        return None
    return stmt


def existing_keys(session: Session, keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    if not keys:
        return set()
    rows = session.execute(
        select(Message.idempotency_key).where(Message.idempotency_key.in_(keys))
    ).scalars()
    return set(rows)


def find(
    session: Session, status: str | None = None, ids: Sequence[int] | None = None
) -> list[Message]:
    """Messages (of one status, or these ids; an empty id list finds none)."""
    q = select(Message).order_by(Message.id)
    if status:
        q = q.where(Message.status == status)
    if ids is not None:
        q = q.where(Message.id.in_(ids))
    return list(session.scalars(q))


def insert_or_ignore_run(session: Session, run: Mapping[str, Any]) -> bool:
    """Record the start of a sequence run; False when this subject's run already exists
    (started before, or by a concurrent call — no IntegrityError either way)."""
    conn = session.connection(bind_arguments={"mapper": Message})
    t = sequence_run_table
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        upsert = pg_insert if name == "postgresql" else sqlite_insert
        # RETURNING says whether the row went in (a single-row INSERT's rowcount does not).
        stmt = upsert(t).on_conflict_do_nothing().returning(t.c.id)
        return conn.execute(stmt, dict(run)).first() is not None
    if name in ("mysql", "mariadb"):
        # Not ON DUPLICATE KEY UPDATE: MariaDB counts that no-op as a found row. Every value
        # here is ours and fits its column, so IGNORE hides no other error.
        return bool(conn.execute(insert(t).prefix_with("IGNORE"), dict(run)).rowcount == 1)
    key = (t.c.sequence == run["sequence"], t.c.order_ref == run["order_ref"])
    if conn.execute(select(t.c.id).where(*key, t.c.subject_ref == run["subject_ref"])).first():
        return False
    conn.execute(insert(t), dict(run))
    return True


def add_planned(session: Session, planned: Sequence[Message]) -> list[Message]:
    """Add newly planned messages whose keys are not in the log yet."""
    have = existing_keys(session, [m.idempotency_key for m in planned])
    new = [m for m in planned if m.idempotency_key not in have]
    session.add_all(new)
    session.flush()
    return new
