"""Our part of the host's transaction: a SAVEPOINT on PostgreSQL and MariaDB (SQLite's
own rules), never raising for our problems, and failing the host's commit when the
database aborted the host's transaction."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, object_session

from .. import direct
from ..db import one_line
from ..events import EventType
from ..models import Message, Status
from ..outbox import (
    insert_new,
)
from .plan import _new_message, _order_identity, _row, idempotency_key

log = logging.getLogger(__name__)


Work = Callable[["EventType", Any, Session, Mapping[str, Any]], list[Message]]


def guarded(
    event: EventType,
    order: Any,
    session: Session | None,
    kwargs: Mapping[str, Any],
    work: Work,
) -> list[Message]:
    """Run ``work`` (queue an event's texts, start or stop a sequence) in the host's
    session the way every host call runs: never raising for our own problems, leaving a
    failed entry with the reason, and making the host's commit fail when the database
    aborted its transaction."""
    try:
        if session is None:
            session = object_session(order) if _is_mapped(order) else None
            if session is None:
                log.error(
                    "erp-sms: %s was fired without session= for order %r and the order is "
                    "in no session; no text was queued — pass session=<the host's Session>",
                    event.name,
                    getattr(order, "number", order),
                    extra={"event": event.name},
                )
                return []
            log.warning(
                "erp-sms: %s was fired without session=; using the order's own session",
                event.name,
                extra={"event": event.name},
            )
        return work(event, order, session, kwargs)
    except Exception as exc:
        aborted = aborts_host_transaction(exc)
        if session is not None and aborted is not None:
            # Not our problem to hide: the database threw the host's transaction away.
            # Touch nothing more; the host's commit raises this error.
            log.error(
                "erp-sms: the database aborted the transaction while %s texts were queued "
                "for order %r (%s); the host's commit will fail so that it can retry",
                event.name,
                getattr(order, "number", order),
                one_line(aborted),
                extra={"event": event.name},
            )
            _fail_host_commit(session, aborted)
            return []
        log.exception(
            "erp-sms: could not queue %s texts for order %r: %s",
            event.name,
            getattr(order, "number", order),
            exc,
            extra={"event": event.name},
        )
        if session is not None:
            _record_failure(event, order, session, kwargs, exc)
        return []


def _begin_sqlite_transaction(session: Session) -> None:
    """On SQLite, hold the write lock before our first read.

    pysqlite's legacy transaction handling opens no transaction before a SAVEPOINT (its
    RELEASE would commit our rows past the host's rollback), and a transaction that
    reads first and writes later fails at once ("database is locked") when another
    connection committed in between — the host's own commit would then fail because of
    our reads. So: no transaction yet → ``BEGIN IMMEDIATE``; a transaction that holds no
    write lock yet → take it with a write that changes nothing. Both wait for another
    writer (the busy timeout) as the host's own first write would."""
    conn = session.connection(bind_arguments={"mapper": Message})
    if conn.dialect.name != "sqlite":
        return
    driver = conn.connection.driver_connection
    if driver is not None and not getattr(driver, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("UPDATE sms_message SET id = id WHERE 0")


def _our_part(session: Session) -> contextlib.AbstractContextManager[Any]:
    """Where an event's statements run in the host's transaction: a SAVEPOINT, so that an
    error of ours undoes our rows only and leaves the host's transaction usable (on the
    driver's cursor when ``direct`` may send the statements, else the Session's).

    Not on SQLite: there a failed statement undoes itself and leaves the transaction as
    it was, our reads change nothing and our one write is one statement
    (``outbox.insert_new``), so the SAVEPOINT and its RELEASE would be two statements
    for nothing. (The errors after which SQLite rolls back the whole transaction — a
    full disk, I/O — are ``aborts_host_transaction``'s, with or without a SAVEPOINT.)"""
    conn = session.connection(bind_arguments={"mapper": Message})
    if conn.dialect.name == "sqlite":
        return contextlib.nullcontext()
    if direct.usable(conn):
        return direct.savepoint(conn)
    return session.begin_nested()


# Errors after which the database has rolled back (or lost) the host's whole transaction:
# the host must find out at its commit, exactly as it would without us.
_MYSQL_ABORTS = {1213, 1305, 1180, 1181, 2006, 2013, 1927, 4031}  # deadlock, savepoint gone…
# (A PostgreSQL deadlock inside our SAVEPOINT is undone by ROLLBACK TO SAVEPOINT: only a
# transaction left aborted (25P02) or a lost server counts.)
_PG_ABORTS = {"25P02", "57P01", "57P02", "57P03"}
_SQLITE_ABORTS = {5, 6, 7, 8, 10, 11, 13}  # busy, locked, nomem, readonly, ioerr, corrupt, full


def _aborts(e: DBAPIError) -> bool:
    if e.connection_invalidated:
        return True
    orig = e.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_ABORTS:
        return True
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str) and (sqlstate in _PG_ABORTS or sqlstate.startswith("08")):
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_ABORTS


def aborts_host_transaction(exc: BaseException) -> BaseException | None:
    """The error that shows the database aborted the host's transaction — a deadlock
    victim, a lost connection, a full disk — rather than a problem of ours inside our
    SAVEPOINT; None otherwise. Of a chain (a deadlock, then "SAVEPOINT does not exist"
    while undoing ours) it is the first cause, the one a host's retry logic knows."""
    found: BaseException | None = None
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DBAPIError) and _aborts(e):
            found = e
        e = e.__cause__ or e.__context__
    return found


def _fail_host_commit(session: Session, exc: BaseException) -> None:
    """Make the host's ``commit()`` raise ``exc`` (its rollback clears this): a
    transaction the database aborted must never look committed."""
    session.info["erp_sms_aborted"] = exc
    if session.info.get("erp_sms_guard"):
        return
    session.info["erp_sms_guard"] = True

    def before_commit(sess: Session) -> None:
        aborted = sess.info.get("erp_sms_aborted")
        if aborted is not None:
            raise aborted

    def after_rollback(sess: Session, _previous: object = None) -> None:
        sess.info.pop("erp_sms_aborted", None)

    event.listen(session, "before_commit", before_commit)
    event.listen(session, "after_soft_rollback", after_rollback)


def _record_failure(
    event: EventType, order: Any, session: Session, kwargs: Mapping[str, Any], exc: Exception
) -> None:
    """Leave a failed order-level row explaining what went wrong, in the host's
    transaction, when our tables can still be written."""
    try:
        order_ref, number = _order_identity(event, order, session)
        key = idempotency_key(event.name, order_ref, None, "!error")
        reason = f"erp-sms could not queue texts: {type(exc).__name__}: {exc}"[:2000]
        with session.begin_nested():
            base = {
                "event": event.name,
                "template": event.template,
                "order_ref": order_ref,
                "order_number": number,
                "organization_name": None,
            }
            insert_new(session, [_row(_new_message(base, key, Status.FAILED, reason))])
    except Exception as exc2:
        aborted = aborts_host_transaction(exc2)
        if aborted is not None:
            _fail_host_commit(session, aborted)
        log.exception("erp-sms: could not record the failure of %s either", event.name)


def _is_mapped(obj: Any) -> bool:
    return hasattr(obj, "_sa_instance_state")
