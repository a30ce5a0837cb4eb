"""Engines and sessions for the plugin's own work (dispatch, CLI, web).

The host's signal path never uses these: it writes into the host's own Session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_CLOCK_SQL = {
    "postgresql": "SELECT clock_timestamp() AT TIME ZONE 'UTC'",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "mariadb": "SELECT UTC_TIMESTAMP(6)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def database_now(conn: Any) -> dt.datetime:
    """The database server's clock (UTC, aware): what leases are judged by, so that no
    worker's own clock decides whether another worker's claim ran out (CONTRACT.md "The
    email log tells the truth"). SQLite is in-process: its clock is the machine's real
    one, never a clock a test or a worker injected. Other databases: this process's."""
    sql = _CLOCK_SQL.get(conn.dialect.name)
    if sql is None:
        return utcnow()
    value = conn.exec_driver_sql(sql).scalar_one()
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stored as naive UTC on every database, returned timezone-aware (UTC)."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        # MySQL/MariaDB DATETIME keeps whole seconds unless told otherwise; leases and
        # "created after the claim" checks need microseconds.
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("erp-sms stores aware datetimes only (use datetime.now(UTC))")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC)


def _sqlite_setup(engine: Engine, immediate: bool) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; let
    # SQLAlchemy emit BEGIN itself (the recipe in SQLAlchemy's SQLite dialect docs).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
            if immediate:
                # erp-sms's own connections (worker, CLI): in WAL mode NORMAL survives a
                # crash of the process, not of the machine — a power cut can undo the
                # last outcomes, which then go out again (docs/operations.md "Delivery guarantees").
                # FULL costs an fsync per outcome: a third of a gateway send.
                cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Claims write after reading: take the write lock up front so two workers wait
        # for each other (busy_timeout) instead of failing to upgrade a read lock.
        wanted = conn.get_execution_options().get("erp_sms_begin_immediate")
        if wanted if wanted is not None else immediate:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


_DRIVER_EXTRAS = {"psycopg": "postgresql", "psycopg2": "postgresql", "pymysql": "mariadb"}


def _backend(url: str) -> str | None:
    try:
        return make_url(url).get_backend_name()
    except ArgumentError:
        return None  # open_engine says what is wrong with it


def safe_url(url: str) -> str:
    """The URL without its password (for messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


# URLs as people write them (Heroku's postgres://, a bare mysql://) -> the drivers erp-sms
# installs and documents (psycopg 3, PyMySQL): SQLAlchemy's defaults for those schemes are
# drivers erp-sms does not ship (psycopg2, mysqlclient).
_SCHEMES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def normalise_url(url: str) -> str:
    """``url`` with a bare scheme given its documented driver (``postgres://`` ->
    ``postgresql+psycopg://``); any other URL as it is."""
    scheme, sep, rest = url.partition("://")
    driver = _SCHEMES.get(scheme.lower()) if sep else None
    return f"{driver}://{rest}" if driver else url


def open_engine(url: str, *, sqlite_immediate: bool = False, **kwargs: Any) -> Engine:
    """``make_engine`` with a ``ConfigurationError`` saying what to fix for a malformed
    URL, an unknown database kind or a driver that is not installed."""
    from .errors import ConfigurationError

    url = normalise_url(url)

    try:
        make_url(url)
    except ArgumentError:
        raise ConfigurationError(
            f"ERP_SMS_DATABASE_URL={url!r} is not a database URL: use e.g. "
            "sqlite:///erp_sms.db or postgresql+psycopg://user@host/dbname"
        ) from None
    try:
        return make_engine(url, sqlite_immediate=sqlite_immediate, **kwargs)
    except NoSuchModuleError:
        raise ConfigurationError(
            f"ERP_SMS_DATABASE_URL={safe_url(url)}: unknown database kind; use sqlite, "
            "postgresql+psycopg or mysql+pymysql"
        ) from None
    except ImportError as exc:
        driver = (exc.name or "").split(".")[0]
        extra = _DRIVER_EXTRAS.get(driver)
        fix = f"pip install 'erp-sms[{extra}]'" if extra else f"pip install {driver}"
        raise ConfigurationError(
            f"ERP_SMS_DATABASE_URL={safe_url(url)} needs the {driver or 'database'} driver, "
            f"which is not installed: {fix}"
        ) from None


def describe_error(exc: SQLAlchemyError, url: str) -> str:
    """One line for staff about a database error, with what to do."""
    orig = getattr(exc, "orig", None)
    text = (str(orig) if orig is not None else str(exc)).strip().splitlines()[0]
    where = safe_url(url)
    lowered = text.lower()
    missing = _missing_database(text)
    if missing is not None:
        return (
            f"the database {missing} does not exist on the server of {where}: create it "
            f"(PostgreSQL: createdb {missing}; MariaDB: CREATE DATABASE {missing}), then run "
            "`erp-sms db upgrade`"
        )
    if "no such table" in lowered or "does not exist" in lowered or "doesn't exist" in lowered:
        return f"the erp-sms tables are missing in {where}: run `erp-sms db upgrade`"
    if "file is not a database" in lowered or "malformed" in lowered or "not a database" in lowered:
        return (
            f"{where} is not a readable SQLite database ({text}): restore it from a backup, "
            "or point ERP_SMS_DATABASE_URL at the right file"
        )
    if "unable to open database" in lowered:
        return f"cannot open {where} ({text}): check the path and its folder's permissions"
    if "readonly" in lowered or "read-only" in lowered:
        return f"{where} is read-only ({text}): give the erp-sms user write access"
    if "locked" in lowered:
        return f"{where} is locked by another program ({text}); try again"
    if "connect" in lowered or "connection" in lowered or "server" in lowered:
        return f"cannot reach the database {where}: {text}"
    return f"database error in {where}: {text}"


def _missing_database(text: str) -> str | None:
    """The name of a database the server says does not exist (PostgreSQL: database "x"
    does not exist; MariaDB: Unknown database 'x'), else None."""
    import re

    found = re.search(r'database "([^"]+)" does not exist', text) or re.search(
        r"unknown database '([^']+)'", text, re.IGNORECASE
    )
    return found.group(1) if found else None


def make_engine(url: str, *, sqlite_immediate: bool = False, **kwargs: Any) -> Engine:
    """An engine set up for erp-sms (SQLite: real transactions and SAVEPOINTs, WAL, busy
    timeout). ``sqlite_immediate``: every transaction takes the write lock at BEGIN — for
    erp-sms's own worker threads, which all write; a WAL reader that later writes after
    another connection's commit fails at once instead of waiting."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = create_engine(url, **kwargs)
        _sqlite_setup(engine, sqlite_immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


class Database:
    """An engine and a session factory."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        if isinstance(url_or_engine, str):
            kwargs: dict[str, Any] = {}
            url_or_engine = normalise_url(url_or_engine)
            if _backend(url_or_engine) in ("mysql", "mariadb"):
                # erp-sms's own transactions (claims, outcomes, webhooks, staff) read
                # committed rows: REPEATABLE READ's gap locks on the outbox's indexes made
                # hosts' concurrent INSERTs deadlock with the worker's claims.
                kwargs["isolation_level"] = "READ COMMITTED"
            self.engine = open_engine(url_or_engine, sqlite_immediate=True, **kwargs)
        else:
            self.engine = url_or_engine
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reading only (reports, timelines): on SQLite it takes no write
        lock, so a long export never holds up the worker."""
        engine = self.engine.execution_options(erp_sms_begin_immediate=False)
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


_MYSQL_CONFLICTS = {1213, 1205}  # deadlock victim, lock wait timeout
_PG_CONFLICTS = {"40P01", "40001"}  # deadlock detected, serialization failure
_SQLITE_CONFLICTS = {5, 6}  # busy, locked


def is_lock_conflict(exc: BaseException) -> bool:
    """A deadlock, serialization failure or lock timeout: the statement lost a race
    with another transaction and may simply be tried again."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_CONFLICTS:
        return True
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate in _PG_CONFLICTS:
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_CONFLICTS


def rowcount(result: Any) -> int:
    """The rows an UPDATE or DELETE changed (a ``CursorResult``'s, typed loosely: the
    Session's ``execute`` is annotated as returning a plain ``Result``)."""
    return int(getattr(result, "rowcount", 0) or 0)


def one_line(exc: BaseException) -> str:
    """One line for a log or a summary: a database error without its SQL and parameters
    (they carry customers' numbers and texts)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
