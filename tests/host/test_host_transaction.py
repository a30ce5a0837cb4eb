"""The host's transaction is sacred (issue 9, finding 1 and 2): erp-sms never raises for
its own problems, but when the database aborted the host's transaction, the host's
commit fails exactly as it would without us — it never commits half its work."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.orm import Session

from erp_sms import erp, signals
from erp_sms.db import Database, make_engine
from erp_sms.models import Message, Status

from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import three_contact_order


def _url(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=False)


@pytest.fixture
def shop(any_db: Database):
    engine = make_engine(_url(any_db))
    order_id = three_contact_order(engine)
    yield {"engine": engine, "order_id": order_id}
    engine.dispose()


def test_concurrent_firings_of_one_event_commit_every_host_change_once(any_db, shop):
    """8 host transactions each write their own row and fire the same event: every commit
    that returns OK keeps its row, and each contact gets one text — no failed rows."""
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def host_action(i: int) -> None:
        barrier.wait(timeout=60)  # all start together (SQLite then queues the writers)
        with Session(shop["engine"]) as s:
            s.add(erp.Organization(name=f"host change {i}"))
            s.flush()
            order = s.get(erp.SalesOrder, shop["order_id"])
            signals.sent_to_production.send(order, session=s)
            try:
                s.commit()
                outcomes.append("ok")
            except Exception as exc:  # the host would retry; it must not lose silently
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=host_action, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(shop["engine"]) as s:
        stored = s.scalar(select(func.count()).where(erp.Organization.name.like("host change %")))
        texts = list(s.scalars(select(Message)))
    assert stored == outcomes.count("ok"), outcomes
    assert outcomes.count("ok") == n, outcomes  # insert-or-ignore: nobody deadlocks
    assert sorted(m.contact_name for m in texts) == ["C0", "C1", "C2"]
    assert {m.status for m in texts} == {Status.QUEUED}


@pytest.mark.mariadb
def test_a_deadlock_victims_commit_fails_and_keeps_nothing(any_db_url, any_db, shop):
    """InnoDB rolls a deadlock victim's whole transaction back (error 1213) and the
    connection lives on; our SAVEPOINT is gone with it. The host's commit must fail."""
    if not any_db_url.startswith("mysql"):
        pytest.skip("InnoDB's deadlock behaviour")
    import pymysql

    engine = shop["engine"]

    def deadlock_on_our_insert(conn, cursor, statement, params, context, executemany):
        if statement.startswith("INSERT INTO sms_message"):
            cursor.connection.rollback()  # what InnoDB does to the victim
            raise pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")

    event.listen(engine, "before_cursor_execute", deadlock_on_our_insert)
    try:
        with Session(engine) as s:
            s.add(erp.Organization(name="host change"))
            order = s.get(erp.SalesOrder, shop["order_id"])
            signals.sent_to_production.send(order, session=s)  # never raises
            s.add(erp.Organization(name="written after the signal"))
            with pytest.raises(Exception, match="Deadlock"):
                s.commit()
            s.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", deadlock_on_our_insert)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).where(erp.Organization.name != "Acme")) == 0
        # the host can retry: the same session works again
    with Session(engine) as s:
        s.add(erp.Organization(name="retried"))
        signals.sent_to_production.send(s.get(erp.SalesOrder, shop["order_id"]), session=s)
        s.commit()
        assert len(list(s.scalars(select(Message)))) == 3


@pytest.mark.parametrize("engine_kind", ["plain create_engine", "erp_sms make_engine"])
def test_sqlite_our_reads_never_leave_the_host_a_stale_snapshot(db_url, settings, engine_kind):
    """A writer that commits between our first read and our write must not make the
    host's transaction fail: we hold SQLite's write lock before reading."""
    path = db_url.removeprefix("sqlite:///")
    engine = create_engine(db_url) if engine_kind.startswith("plain") else make_engine(db_url)
    with Session(engine, expire_on_commit=False) as s:
        org = OrganizationFactory(name="Acme")
        c = ContactFactory(name="Ann", email2="3125550101@vtext.com", organizations=[org])
        order = SalesOrderFactory(number="SO-5", organization=org, contact=c)
        s.add_all([org, c, order])
        s.commit()
    other_writer: list[str] = []

    def another_program_writes(conn, cursor, statement, params, context, executemany):
        if statement.startswith("INSERT INTO sms_message") and not other_writer:
            other = sqlite3.connect(path, timeout=0)  # fails at once if we hold the lock
            try:
                other.execute("INSERT INTO erp_organization (name) VALUES ('other program')")
                other.commit()
                other_writer.append("committed")
            except sqlite3.OperationalError as exc:
                other_writer.append(str(exc))
            finally:
                other.close()

    event.listen(engine, "before_cursor_execute", another_program_writes)
    with Session(engine, expire_on_commit=False) as s:
        signals.sent_to_production.send(order, session=s)  # our receiver reads first
        s.add(erp.Organization(name="host change"))
        s.commit()
    event.remove(engine, "before_cursor_execute", another_program_writes)
    assert other_writer == ["database is locked"]  # it waited for us instead
    with Session(engine) as s:
        assert [m.status for m in s.scalars(select(Message))] == [Status.QUEUED]
        assert s.scalar(select(func.count()).where(erp.Organization.name == "host change")) == 1
    engine.dispose()


@pytest.mark.parametrize("contacts", [3, 1_050])  # one multi-row INSERT; more than one holds
def test_sqlite_a_failed_insert_keeps_none_of_the_events_rows(db_url, settings, contacts):
    """On SQLite the event runs without a SAVEPOINT: its rows must still go in whole or
    not at all. A real SQLite error on the event's second row (a trigger) leaves none
    of its texts, the failure in the log, and the host's own change committed."""
    engine = make_engine(db_url)
    with Session(engine, expire_on_commit=False) as s:
        org = OrganizationFactory(name="Acme")
        people = [
            ContactFactory(name=f"C{i}", email2=f"312555{i:04d}@vtext.com", organizations=[org])
            for i in range(contacts)
        ]
        order = SalesOrderFactory(number="SO-7", organization=org, contact=people[0])
        s.add_all([org, order, *people])
        s.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER second_row BEFORE INSERT ON sms_message WHEN "
            "(SELECT count(*) FROM sms_message WHERE order_number = NEW.order_number) >= 1 "
            "BEGIN SELECT RAISE(ABORT, 'disk quota for texts'); END"
        )
    with Session(engine, expire_on_commit=False) as s:
        s.add(erp.Organization(name="host change"))
        assert signals.sent_to_production.send(s.merge(order), session=s)[0][1] == []
        s.commit()
    with Session(engine) as s:
        rows = list(s.scalars(select(Message)))
        assert [(m.status, m.contact_ref) for m in rows] == [(Status.FAILED, None)]
        assert "disk quota for texts" in (rows[0].reason or "")
        assert s.scalar(select(func.count()).where(erp.Organization.name == "host change")) == 1
    engine.dispose()


@pytest.mark.mariadb
def test_hosts_firing_events_while_workers_claim_never_deadlock(any_db_url, any_db):
    """8 host threads fire shipped events (30 % of their transactions rolled back) while
    two workers claim and send: no host commit fails. erp-sms's own transactions used
    REPEATABLE READ, whose gap locks on the outbox's indexes deadlocked with the hosts'
    INSERTs (1213 in 4 of 5 runs of this test before). Its own connections now read
    committed rows; the host's keep the host's isolation."""
    import random
    from dataclasses import replace

    from sqlalchemy import text

    from erp_sms.dispatch import Dispatcher
    from erp_sms.testing import SmtpSink

    from ..conftest import with_settings

    if not any_db_url.startswith("mysql"):
        pytest.skip("InnoDB's gap locks")
    with any_db.engine.connect() as conn:
        assert conn.execute(text("SELECT @@tx_isolation")).scalar() == "READ-COMMITTED"
    engine = make_engine(_url(any_db))  # the host's own engine: REPEATABLE READ
    orders = []
    with Session(engine, expire_on_commit=False) as s:
        for k in range(20):
            org = OrganizationFactory(name=f"O{k}")
            people = [
                ContactFactory(
                    name=f"C{k}-{i}", email2=f"312555{k:02d}{i:02d}@vtext.com", organizations=[org]
                )
                for i in range(3)
            ]
            order = SalesOrderFactory(number=f"SO-{k}", organization=org, contact=people[0])
            s.add_all([org, order, *people])
            s.commit()
            orders.append(order.id)
    failed: list[str] = []
    with SmtpSink() as sink:
        settings = with_settings(smtp_host=sink.host, smtp_port=sink.port)
        settings = with_settings(
            dispatch=replace(settings.dispatch, poll_seconds=0.05, batch_size=10)
        )
        stop = threading.Event()
        workers = [
            threading.Thread(
                target=Dispatcher(any_db, settings, worker_id=f"w{i}", stop=stop).run_forever
            )
            for i in range(2)
        ]
        for t in workers:
            t.start()

        def host(i: int) -> None:
            pick = random.Random(i)
            for j in range(40):
                with Session(engine) as s:
                    order = s.get(erp.SalesOrder, pick.choice(orders))
                    ev = erp.ShippingEvent(
                        sales_order=order,
                        status="Shipped",
                        carrier="UPS",
                        tracking_number=f"1Z{i}-{j}",
                    )
                    s.add(ev)
                    s.flush()
                    signals.shipment_shipped.send(order, session=s, shipping_event=ev)
                    if pick.random() < 0.3:
                        s.rollback()
                        continue
                    try:
                        s.commit()
                    except Exception as exc:  # counted, asserted below
                        failed.append(type(exc).__name__)

        hosts = [threading.Thread(target=host, args=(i,)) for i in range(8)]
        for t in hosts:
            t.start()
        for t in hosts:
            t.join()
        stop.set()
        for t in workers:
            t.join()
    engine.dispose()
    assert failed == []
