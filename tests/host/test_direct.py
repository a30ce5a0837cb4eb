"""The host path's statements sent straight to the driver (``erp_sms.direct``, issue 10):
the same statements, rows and errors as through SQLAlchemy's execute, and the host's
transaction as sacred — checked at the driver itself, with real faults, since a
statement listener would send the host path through SQLAlchemy instead."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import bindparam, event, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from erp_sms import direct, erp, signals
from erp_sms.db import Database, make_engine
from erp_sms.models import Message, OptOut, Status
from erp_sms.notifier import _settings_statement

from ..helpers import three_contact_order

SERVERS = ["postgresql", "mariadb"]


class Driver:
    """What the host's engine's DB-API cursors are asked to run, recorded (and made to
    fail on demand) by a cursor class of the driver's own: it sees the statements of
    both paths and, unlike a SQLAlchemy listener, leaves ``direct`` usable."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.fail: Callable[[Any, str], None] | None = None

    def install(self, engine: Any) -> None:
        driver = self

        def seen(cursor: Any, sql: str) -> None:
            driver.statements.append(" ".join(sql.split()))
            if driver.fail is not None:
                driver.fail(cursor, sql)

        if engine.dialect.name == "postgresql":
            import psycopg

            class PgCursor(psycopg.Cursor):  # type: ignore[type-arg]
                def execute(self, query: Any, *a: Any, **k: Any) -> Any:
                    seen(self, str(query))
                    return super().execute(query, *a, **k)

                def executemany(self, query: Any, *a: Any, **k: Any) -> Any:
                    seen(self, str(query))
                    return super().executemany(query, *a, **k)

            factory: Any = PgCursor
            attribute = "cursor_factory"
        else:
            import pymysql

            class MyCursor(pymysql.cursors.Cursor):
                inside = False  # PyMySQL's executemany runs its multi-row INSERT itself

                def execute(self, query: Any, args: Any = None) -> Any:
                    if not self.inside:
                        seen(self, str(query))
                    return super().execute(query, args)

                def executemany(self, query: Any, args: Any) -> Any:
                    seen(self, str(query))
                    self.inside = True
                    try:
                        return super().executemany(query, args)
                    finally:
                        self.inside = False

            factory, attribute = MyCursor, "cursorclass"

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            setattr(dbapi_connection, attribute, factory)

    def ours(self, start: int = 0) -> list[str]:
        """The statements from ``start`` on, savepoint names made alike and each cut to
        what tells it apart."""
        out = []
        for sql in self.statements[start:]:
            sql = re.sub(r"SAVEPOINT \w+", "SAVEPOINT sp", sql)
            out.append(sql[:60])
        return out


@pytest.fixture
def shop(any_db: Database) -> Iterator[dict[str, Any]]:
    if any_db.engine.dialect.name == "sqlite":
        pytest.skip("SQLite's host path always goes through SQLAlchemy (no SAVEPOINT)")
    driver = Driver()
    engine = make_engine(any_db.engine.url.render_as_string(hide_password=False))
    driver.install(engine)
    order_id = three_contact_order(engine)
    yield {"engine": engine, "order_id": order_id, "driver": driver}
    engine.dispose()


def _fire(shop: dict[str, Any], s: Session) -> list[Message]:
    s.add(erp.Organization(name="host change"))
    s.flush()
    order = s.get_one(erp.SalesOrder, shop["order_id"])
    start = len(shop["driver"].statements)
    result = signals.sent_to_production.send(order, session=s)
    shop["start"] = start
    return [m for _r, rows in result for m in rows]


def _host_changes(engine: Any) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).where(erp.Organization.name == "host change")) or 0


def test_without_a_listener_the_host_path_sends_sqlalchemys_statements_itself(any_db, shop):
    """The same five statements and the same rows whichever path sends them; the
    savepoint's name shows which did."""
    engine, driver = shop["engine"], shop["driver"]
    with Session(engine) as s:
        straight = _fire(shop, s)
        sent_straight = driver.statements[shop["start"] :]
        s.rollback()

    def listener(*_a: Any) -> None:
        pass

    event.listen(engine, "before_cursor_execute", listener)
    try:
        with Session(engine) as s:
            through = _fire(shop, s)
            sent_through = driver.statements[shop["start"] :]
            s.commit()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert sent_straight[0].startswith("SAVEPOINT erp_sms_1"), sent_straight
    assert sent_through[0].startswith("SAVEPOINT sa_savepoint_"), sent_through
    normal = [re.sub(r"SAVEPOINT \w+", "SAVEPOINT sp", q) for q in sent_straight]
    assert normal == [re.sub(r"SAVEPOINT \w+", "SAVEPOINT sp", q) for q in sent_through]
    assert len(normal) == 5 and normal[-1] == "RELEASE SAVEPOINT sp", normal

    def what(rows: list[Message]) -> list[tuple[Any, ...]]:
        return [(m.contact_name, m.status, m.channel, m.address, m.body) for m in rows]

    assert what(straight) == what(through)
    assert {m.status for m in straight} == {Status.QUEUED} and len(straight) == 3
    with Session(engine) as s:
        assert len(list(s.scalars(select(Message)))) == 3


def test_a_read_sent_straight_comes_back_as_through_sqlalchemy(any_db):
    """Values go through the columns' types both ways: an opt-out's time is aware UTC."""
    at = dt.datetime(2026, 11, 2, 9, 30, 15, 250000, tzinfo=dt.UTC)
    with any_db.session() as s:
        s.add(OptOut(number="+13125550101", at=at, source="STOP from +13125550101"))
        s.commit()
    stmt = _settings_statement("sent_to_production", 2)
    params = {
        "number_0": "+13125550101",
        "number_1": "+13125550102",
        "org_ref": "7",
        "program": "orders",
    }
    with any_db.engine.connect() as conn:
        through = [tuple(r) for r in conn.execute(stmt, params).all()]
        straight = direct.rows(conn, stmt, params)
    assert [tuple(r) for r in straight] == through
    assert straight[0].number == "+13125550101" and straight[0].at == at


def test_statements_sqlalchemy_finishes_per_execute_or_renames_parameters_still_work(any_db):
    """An expanding IN goes through SQLAlchemy (its SQL depends on the values); a
    parameter name SQLAlchemy escapes in the SQL is sent under that name."""
    with any_db.session() as s:
        for n in ("+13125550101", "+13125550102", "+13125550103"):
            s.add(OptOut(number=n, at=dt.datetime.now(dt.UTC), source="test"))
        s.commit()
    expanding = select(OptOut.number).where(OptOut.number.in_(bindparam("n", expanding=True)))
    escaped = select(OptOut.number).where(OptOut.number == bindparam("the number"))
    with any_db.engine.connect() as conn:
        found = direct.rows(conn, expanding, {"n": ["+13125550101", "+13125550103"]})
        assert sorted(r.number for r in found) == ["+13125550101", "+13125550103"]
        found = direct.rows(conn, escaped, {"the number": "+13125550102"})
        assert [r.number for r in found] == ["+13125550102"]


@pytest.mark.parametrize("when", ["before the event", "at our INSERT"])
def test_a_lost_connection_under_the_host_path_fails_the_hosts_commit(any_db, shop, caplog, when):
    """The database server ends the host's connection (a restart, an admin's kill) just
    before the event or while our INSERT is on its way: the signal returns, and the
    host's commit fails — as it would without us — instead of looking committed."""
    engine, driver = shop["engine"], shop["driver"]
    admin = make_engine(engine.url.render_as_string(hide_password=False))
    postgres = engine.dialect.name == "postgresql"

    def kill(pid: int) -> None:
        with admin.connect() as other:
            other.exec_driver_sql(
                f"SELECT pg_terminate_backend({pid})" if postgres else f"KILL {pid}"
            )

    with Session(engine) as s, caplog.at_level(logging.ERROR, logger="erp_sms"):
        s.add(erp.Organization(name="host change"))
        s.flush()
        order = s.get_one(erp.SalesOrder, shop["order_id"])
        me = s.connection().exec_driver_sql(
            "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
        )
        pid = int(me.scalar_one())
        if when == "before the event":
            kill(pid)
        else:

            def kill_at_insert(cursor: Any, sql: str) -> None:
                if sql.startswith("INSERT INTO sms_message"):
                    kill(pid)

            driver.fail = kill_at_insert
        start = len(driver.statements)
        result = signals.sent_to_production.send(order, session=s)  # never raises
        driver.fail = None
        assert [rows for _r, rows in result] == [[]]
        assert "SAVEPOINT erp_sms_1" in driver.statements[start]
        with pytest.raises(DBAPIError):
            s.commit()
        s.rollback()
    admin.dispose()
    assert "the database aborted the transaction" in caplog.text
    assert _host_changes(engine) == 0
    with Session(engine) as s:  # the host retries on a new connection
        _fire(shop, s)
        s.commit()
    assert _host_changes(engine) == 1


def test_an_error_in_our_insert_undoes_our_rows_only_and_the_host_commits(any_db, shop, caplog):
    """Our INSERT fails at the database (here a trigger refusing it): ROLLBACK TO our
    SAVEPOINT, sent straight too, leaves the host's transaction as it was."""
    engine, driver = shop["engine"], shop["driver"]

    def refuse(cursor: Any, sql: str) -> None:
        if sql.startswith("INSERT INTO sms_message"):
            raise _integrity_error(engine, "refused by a trigger")

    driver.fail = refuse
    with Session(engine) as s, caplog.at_level(logging.ERROR, logger="erp_sms"):
        assert _fire(shop, s) == []
        sent = driver.ours(shop["start"])
        s.commit()
    driver.fail = None
    assert sent[0] == "SAVEPOINT sp" and "ROLLBACK TO SAVEPOINT sp" in sent, sent
    assert "could not queue sent_to_production texts" in caplog.text
    assert _host_changes(engine) == 1
    with Session(engine) as s:
        assert list(s.scalars(select(Message))) == []


def _integrity_error(engine: Any, text: str) -> Exception:
    if engine.dialect.name == "postgresql":
        import psycopg

        return psycopg.errors.RaiseException(text)
    import pymysql

    return pymysql.err.IntegrityError(1644, text)


def test_a_deadlock_victim_under_the_host_path_fails_the_hosts_commit(any_db, shop):
    """InnoDB rolls a deadlock victim's whole transaction back (error 1213) — our
    SAVEPOINT with it. Sent straight, the host's commit still fails, and keeps nothing."""
    engine, driver = shop["engine"], shop["driver"]
    if engine.dialect.name != "mariadb" and engine.dialect.name != "mysql":
        pytest.skip("InnoDB's deadlock behaviour (a PostgreSQL deadlock ends at our SAVEPOINT)")
    import pymysql

    def deadlock(cursor: Any, sql: str) -> None:
        if sql.startswith("INSERT INTO sms_message"):
            cursor.connection.rollback()  # what InnoDB does to the victim
            raise pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")

    driver.fail = deadlock
    with Session(engine) as s:
        _fire(shop, s)
        assert driver.ours(shop["start"])[0] == "SAVEPOINT sp"
        assert "SAVEPOINT erp_sms_1" in driver.statements[shop["start"]]
        with pytest.raises(DBAPIError, match="Deadlock"):
            s.commit()
        s.rollback()
    driver.fail = None
    assert _host_changes(engine) == 0


def test_direct_is_not_used_where_someone_watches_statements_or_on_sqlite(any_db):
    """A listener, echo or SQL logging sees every statement: SQLAlchemy sends them."""
    url = any_db.engine.url.render_as_string(hide_password=False)
    echoing = make_engine(url, echo=True)
    with echoing.connect() as conn:
        assert direct.usable(conn) is False
    echoing.dispose()
    with any_db.engine.connect() as conn:
        server = conn.dialect.name != "sqlite"
        assert direct.usable(conn) is server

        def listener(*_a: Any) -> None:
            pass

        event.listen(conn, "before_cursor_execute", listener)
        assert direct.usable(conn) is False
        event.remove(conn, "before_cursor_execute", listener)
        assert direct.usable(conn) is server
