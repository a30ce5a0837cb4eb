"""The host path's statements sent straight to the database driver.

An event's statements run on the host's own connection, inside the host's transaction:
a SAVEPOINT, two reads, one INSERT and the RELEASE. SQLAlchemy writes every one of them
(the SQL is compiled by SQLAlchemy for the connection's dialect, once), but sending them
through ``Connection.execute`` cost about half a millisecond an event on PostgreSQL —
its execution context, result set-up and the driver's column descriptions, five times
over — a quarter of the event (bench/NOTES.md). Here they go to the DB-API cursor of
the same connection, with the same parameters and the same type processing, and a
driver error is raised as SQLAlchemy would raise it (``DBAPIError``, the connection
invalidated when it was lost), so the host path's error handling cannot tell them apart.

SQLAlchemy's own path is kept, and taken, whenever something should see each statement:
a statement or error listener on the connection or its engine (a host's SQL logging or
tracing, the test suite's fault injection) or ``echo``. It is also taken on SQLite,
whose host path has no SAVEPOINT and whose multi-row INSERT is SQLAlchemy's own
``insertmanyvalues`` (``outbox._one_statement``).
"""

from __future__ import annotations

import contextlib
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

# The events through which someone watches statements: with any of them listened to,
# statements go through SQLAlchemy so that the listener sees every one.
_WATCHED = ("before_execute", "after_execute", "before_cursor_execute", "after_cursor_execute")


def usable(conn: Connection) -> bool:
    """Whether ``conn``'s host-path statements may go straight to its driver."""
    if conn.dialect.name == "sqlite" or conn._echo:  # echo=True, or sqlalchemy.engine at INFO
        return False
    watched = conn.dispatch
    if any(getattr(watched, name) for name in _WATCHED):
        return False
    return not conn.dialect.dispatch.handle_error  # (a dialect event since SQLAlchemy 2.0)


@dataclass(frozen=True)
class _Compiled:
    sendable: bool  # False: SQL that SQLAlchemy finishes per execute (expanding IN…)
    sql: str
    names: tuple[str, ...] | None  # positional paramstyles: the parameters' order
    defaults: Mapping[str, Any]  # the values SQLAlchemy bound itself (literals)
    binders: Mapping[str, Callable[[Any], Any]]
    escaped: Mapping[str, str]  # parameter names SQLAlchemy renders differently
    row: Any  # a namedtuple class, or None for a statement that returns no rows
    readers: tuple[Callable[[Any], Any] | None, ...]


# Per dialect (an engine's; gone with it), (statement, INSERT columns) -> compiled. The
# host path's statements are module-level objects built once (functools.cache), and the
# entry holds the statement, so its id is not reused while it is here: a handful of
# entries.
_Key = tuple[int, tuple[str, ...] | None]
_compiled: weakref.WeakKeyDictionary[Dialect, dict[_Key, tuple[ClauseElement, _Compiled]]] = (
    weakref.WeakKeyDictionary()
)


def _compile(conn: Connection, stmt: ClauseElement, columns: Sequence[str] | None) -> _Compiled:
    dialect = conn.dialect
    mine = _compiled.get(dialect)
    if mine is None:
        mine = _compiled.setdefault(dialect, {})
    key = (id(stmt), tuple(columns) if columns else None)
    found = mine.get(key)
    if found is not None and found[0] is stmt:
        return found[1]
    compiled: Any = stmt.compile(
        dialect=dialect,
        column_keys=list(columns) if columns else None,
        for_executemany=bool(columns),
    )
    binders: dict[str, Callable[[Any], Any]] = {}
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binders[name] = process
    row: Any = None
    readers: tuple[Callable[[Any], Any] | None, ...] = ()
    selected = getattr(stmt, "selected_columns", None)
    if selected is not None:
        cols = list(selected)
        fields = [c.key or f"c{i}" for i, c in enumerate(cols)]
        row = namedtuple("Row", fields, rename=True)  # type: ignore[misc,no-redef]
        readers = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in cols)
    names = tuple(compiled.positiontup) if compiled.positional else None
    defaults = {
        name: bind.value
        for name, bind in compiled.binds.items()
        if not bind.required and bind.callable is None
    }
    sendable = not (compiled.literal_execute_params or compiled.post_compile_params)
    escaped = dict(compiled.escaped_bind_names or {})
    out = _Compiled(sendable, compiled.string, names, defaults, binders, escaped, row, readers)
    mine[key] = (stmt, out)
    return out


def _parameters(c: _Compiled, given: Mapping[str, Any]) -> Any:
    values = {**c.defaults, **given}
    for name, process in c.binders.items():
        if name in values:
            values[name] = process(values[name])
    if c.names is not None:
        return [values[n] for n in c.names]
    if c.escaped:
        return {c.escaped.get(k, k): v for k, v in values.items()}
    return values


def _raise(conn: Connection, exc: Any, sql: str, params: Any, cursor: Any) -> NoReturn:
    """Raise the driver's ``exc`` as SQLAlchemy would: wrapped in its ``DBAPIError``
    subclass, and the connection invalidated when the driver says it was lost."""
    dialect = conn.dialect
    lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    wrapped = DBAPIError.instance(
        sql,
        params,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=conn.engine.hide_parameters,
        connection_invalidated=lost,
        dialect=dialect,
        ismulti=False,
    )
    if lost:
        conn.invalidate(exc)
    raise wrapped from exc


@contextlib.contextmanager
def _cursor(conn: Connection, sql: str, params: Any) -> Iterator[Any]:
    """A DB-API cursor of ``conn`` for running ``sql``: closed after, and a driver error
    raised as SQLAlchemy raises it (``_raise``)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except conn.dialect.loaded_dbapi.Error as exc:
        _raise(conn, exc, sql, params, cursor)
    finally:
        cursor.close()


def rows(conn: Connection, stmt: ClauseElement, params: Mapping[str, Any]) -> list[Any]:
    """Run the SELECT ``stmt`` with ``params``: its rows (attribute and index access, as
    SQLAlchemy's rows; values through the columns' types)."""
    c = _compile(conn, stmt, None) if usable(conn) else None
    if c is None or not c.sendable:
        return list(conn.execute(stmt, params).all())  # type: ignore[call-overload]
    bound = _parameters(c, params)
    with _cursor(conn, c.sql, bound) as cursor:
        cursor.execute(c.sql, bound)
        fetched = cursor.fetchall()
    readers = c.readers
    if not any(readers):
        return [c.row._make(r) for r in fetched]
    return [
        c.row._make(v if f is None else f(v) for f, v in zip(readers, r, strict=True))
        for r in fetched
    ]


def insert(conn: Connection, stmt: ClauseElement, values: Sequence[Mapping[str, Any]]) -> None:
    """Run the INSERT ``stmt`` for ``values`` (rows with the same keys) with the
    driver's executemany."""
    c = _compile(conn, stmt, list(values[0])) if usable(conn) else None
    if c is None or not c.sendable:
        conn.execute(stmt, list(values))  # type: ignore[call-overload]
        return
    bound = [_parameters(c, v) for v in values]
    with _cursor(conn, c.sql, bound) as cursor:
        cursor.executemany(c.sql, bound)


def _command(conn: Connection, sql: str) -> None:
    with _cursor(conn, sql, ()) as cursor:
        cursor.execute(sql)


_DEPTH = "erp_sms_savepoint_depth"


@contextlib.contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A SAVEPOINT around the block, on the driver's cursor: released when the block
    ends, rolled back to (and released) when it raises. The name is the nesting depth,
    so the statements' text repeats and the driver prepares them."""
    info = conn.info  # this dict, even if the connection is lost inside the block
    depth = info.get(_DEPTH, 0) + 1
    name = f"erp_sms_{depth}"
    _command(conn, f"SAVEPOINT {name}")
    info[_DEPTH] = depth
    try:
        yield
    except BaseException:
        # As the Session's nested transaction does: when this fails too (the database
        # threw the transaction away), its error goes out chained to the first one.
        _command(conn, f"ROLLBACK TO SAVEPOINT {name}")
        _command(conn, f"RELEASE SAVEPOINT {name}")
        raise
    else:
        _command(conn, f"RELEASE SAVEPOINT {name}")
    finally:
        info[_DEPTH] = depth - 1
