"""Host-path cost: what firing an order event adds to the host's transaction, for an order
whose organization has 200 contacts, 5 of them opted in, in a database of 10k and 100k
contacts (``BENCH_HOST_CONTACTS`` to change; 1,000,000 takes minutes to fill).

Peer in the same run: a synchronous send inside the transaction (the Frappe / Odoo
stock_sms style) — the twilio client creating the 5 texts against the loopback API at
50 ms latency. Also: SQL statements per event, and the first event in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from sqlalchemy import delete, event, insert, select
from sqlalchemy.orm import Session

import erp_sms
from erp_sms import erp, signals
from erp_sms.config import Settings, set_settings
from erp_sms.models import Message, Option, Status, fold_table

from .common import databases, fresh, median, new_url, p, twilio_api, twilio_client

ORG_SIZE, OPTED_IN = 200, 5
EVENTS = 300
ROUNDS = 3


def _fill(engine: Any, contacts: int) -> None:
    """Organizations of 200 contacts, 5 opted in each, one order per organization."""
    orgs = max(1, contacts // ORG_SIZE)
    with engine.begin() as conn:
        conn.execute(
            insert(erp.Organization.__table__),
            [{"id": o, "name": f"Org {o}"} for o in range(1, orgs + 1)],
        )
        for start in range(0, contacts, 20000):
            ids = range(start + 1, min(contacts, start + 20000) + 1)
            conn.execute(
                insert(erp.Contact.__table__),
                [
                    {
                        "id": i,
                        "name": f"C{i}",
                        "email2": f"312{555 + i // 10000:03d}{i % 10000:04d}@vtext.com",
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(erp.contact_organization),
                [{"contact_id": i, "organization_id": (i - 1) // ORG_SIZE + 1} for i in ids],
            )
            conn.execute(
                insert(erp.ContactAttribute.__table__),
                [
                    {"contact_id": i, "code": erp.SMSUPDATE}
                    for i in ids
                    if (i - 1) % ORG_SIZE < OPTED_IN
                ],
            )
        orders = [(n, (n - 1) % orgs + 1) for n in range(1, max(orgs, EVENTS) + 1)]
        conn.execute(
            insert(erp.SalesOrder.__table__),
            [
                {"id": n, "number": f"SO-{n}", "organization_id": o, "sms_update": True}
                for n, o in orders
            ],
        )
        # Configured as the README asks of staff: without an opt-out contact every
        # gateway text is skipped, and the bench would time the skip, not the queueing.
        conn.execute(
            insert(Option.__table__),
            [
                {"name": "SMSOPTOUTCONTACT", "value": "+13125550100", "updated_by": "bench"},
                {"name": "SMSCOMPANYNAME", "value": "Northwind Machining", "updated_by": "bench"},
            ],
        )
        conn.execute(
            insert(erp.ShippingEvent.__table__),
            [
                {
                    "sales_order_id": n,
                    "status": "Shipped",
                    "carrier": "UPS",
                    "tracking_number": "1Z999",
                }
                for n, _o in orders
            ],
        )


def _watched(engine: Any, n: int) -> float:
    """The p50 ms of ``n`` events on an engine with a statement listener (a host's SQL
    logging or tracing): the host path then goes through SQLAlchemy's own execute."""

    def listener(*_a: Any) -> None:
        pass

    _forget(engine)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        return p(_run(engine, range(1, n + 1), None), 0.5)
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def _events(engine: Any, n: int) -> tuple[float, float, float]:
    """Three rounds of ``n`` events, each event in its own host transaction (timed: the
    signal only): the median over the rounds of their p50 and of their p99 (ms), so that
    one burst of this shared machine's noise does not make the figure; and the statements
    per event, counted over 20 more events — a statement listener sends the host path
    through SQLAlchemy's own execute (``erp_sms.direct``), so the timed events run
    without one, as a host's that does not listen do."""
    p50s, p99s = [], []
    for _ in range(ROUNDS):
        _forget(engine)
        samples = _run(engine, range(1, n + 1), None)
        p50s.append(p(samples, 0.5))
        p99s.append(p(samples, 0.99))
    counted = [0]

    def count(*_a: Any) -> None:
        counted[0] += 1

    _forget(engine)
    _run(engine, range(1, min(n, 20) + 1), count)
    # The host's own commit statements are not ours: COMMIT is not a cursor execute.
    return median(p50s), median(p99s), counted[0] / min(n, 20)


def _order_and_shipment(s: Session, order_id: int) -> tuple[Any, Any]:
    """The host's own work, not timed: the order and the shipment it just changed."""
    o = s.get_one(erp.SalesOrder, order_id)
    ship = s.scalars(
        select(erp.ShippingEvent).where(erp.ShippingEvent.sales_order_id == order_id)
    ).one()
    return o, ship


def _forget(engine: Any) -> None:
    """Delete the texts and their fold rows: the same orders fired again are new, not
    left alone as repeats, and each opens a window of its own (SMSDIGESTMINUTES)."""
    with engine.begin() as conn:
        conn.execute(delete(Message))
        conn.execute(delete(fold_table))


def _folding(engine: Any, n: int) -> tuple[float, float, float]:
    """The delivered event of ``n`` orders, each folded into its shipped text still
    waiting (fired in the host transaction before): p50 and p99 ms over three rounds
    (medians) and the statements per folded event, counted over 20 more."""
    p50s, p99s = [], []
    counted = [0]

    def count(*_a: Any) -> None:
        counted[0] += 1

    def rounds(orders: range, listen: Any) -> list[float]:
        samples = []
        with Session(engine) as s:
            for order_id in orders:
                o, ship = _order_and_shipment(s, order_id)
                signals.shipment_shipped.send(o, session=s, shipping_event=ship)
                s.commit()
                ship.status = "Delivered"
                s.flush()
                if listen is not None:
                    event.listen(engine, "before_cursor_execute", listen)
                t0 = time.perf_counter()
                result = signals.shipment_delivered.send(o, session=s, shipping_event=ship)
                samples.append(time.perf_counter() - t0)
                if listen is not None:
                    event.remove(engine, "before_cursor_execute", listen)
                merged = [m for _r, rows in result for m in rows if m.status == Status.MERGED]
                if len(merged) != OPTED_IN:  # time the fold, never a text of its own
                    raise SystemExit(f"bench: order {order_id} folded {len(merged)}: {result}")
                ship.status = "Shipped"
                s.commit()
        return samples

    if engine.dialect.name == "postgresql":
        # A live log has statistics: planned on an empty sms_message (the fill's ANALYZE),
        # the carriers' read by key would scan the table.
        _forget(engine)
        rounds(range(1, n + 1), None)
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE sms_message")
            conn.exec_driver_sql("ANALYZE sms_fold")
            conn.commit()
    for _ in range(ROUNDS):
        _forget(engine)
        samples = rounds(range(1, n + 1), None)
        p50s.append(p(samples, 0.5))
        p99s.append(p(samples, 0.99))
    _forget(engine)
    rounds(range(1, min(n, 20) + 1), count)
    return median(p50s), median(p99s), counted[0] / min(n, 20)


def _run(
    engine: Any,
    orders: range,
    count: Any,
    *,
    fire: bool = True,
    whole: list[float] | None = None,
) -> list[float]:
    """One host transaction per order, each firing the event; the signal's seconds
    (``count``: listens to the statements of the signal, not the host's own). ``whole``
    gets each transaction's signal and commit together; ``fire`` False: the same host
    transactions without erp-sms (the peer of the commit's cost)."""
    samples = []
    with Session(engine) as s:
        for order_id in orders:
            # The host's own work, not timed: it has the order and the shipment it just
            # changed in its session (not the organization: that load is ours).
            o, ship = _order_and_shipment(s, order_id)
            ship.status = "Shipped" if fire or ship.status != "Shipped" else "Delivered"
            s.flush()
            if count is not None:
                event.listen(engine, "before_cursor_execute", count)
            t0 = time.perf_counter()
            if fire:
                result = signals.shipment_shipped.send(o, session=s, shipping_event=ship)
            samples.append(time.perf_counter() - t0)
            if count is not None:
                event.remove(engine, "before_cursor_execute", count)
            if fire:
                queued = [m for _r, rows in result for m in rows if m.status == Status.QUEUED]
                if len(queued) != OPTED_IN:  # time the queueing, never a skip or a failure
                    raise SystemExit(
                        f"bench: order {order_id} queued {len(queued)} texts: {result}"
                    )
            s.commit()
            if whole is not None:
                whole.append(time.perf_counter() - t0)
    return samples


def _with_commit(engine: Any, n: int) -> tuple[float, float]:
    """p50 ms of the signal and the host's commit together, and of the same host
    transactions' commit without erp-sms — alternated, three rounds each."""
    ours: list[float] = []
    alone: list[float] = []
    for _ in range(ROUNDS):
        _forget(engine)
        _run(engine, range(1, n + 1), None, whole=ours)
        _run(engine, range(1, n + 1), None, fire=False, whole=alone)
    return p(ours, 0.5), p(alone, 0.5)


def _floor(engine: Any, n: int) -> float:
    """The p50 ms of the same statements one event sends, replayed by the database driver
    alone on a connection of its own (no SQLAlchemy, no Python of ours; prepared by the
    driver as the host path's are): what the round trips and the server's work cost on
    this machine — the floor under our p50."""
    captured: list[tuple[str, Any, bool]] = []

    def seen(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        captured.append((statement, params, many))

    with Session(engine) as s:
        o = s.get_one(erp.SalesOrder, 1)
        ship = s.scalars(
            select(erp.ShippingEvent).where(erp.ShippingEvent.sales_order_id == 1)
        ).one()
        event.listen(engine, "before_cursor_execute", seen)
        signals.shipment_shipped.send(o, session=s, shipping_event=ship)
        event.remove(engine, "before_cursor_execute", seen)
        s.rollback()
    raw = engine.raw_connection()
    sqlite = engine.dialect.name == "sqlite"
    cur = raw.cursor()
    cur.execute("SELECT COALESCE(MAX(id), 0) FROM sms_message")
    (last_id,) = cur.fetchone()
    cur.close()
    raw.commit()
    samples = []
    try:
        for _ in range(n):
            cur = raw.cursor()
            t0 = time.perf_counter()
            if sqlite:  # as the notifier opens it (no BEGIN yet)
                cur.execute("BEGIN IMMEDIATE")
            for statement, params, many in captured:
                if many and isinstance(params, list):  # not SQLAlchemy's multi-row INSERT
                    cur.executemany(statement, params)
                else:
                    cur.execute(statement, params)
                if cur.description:
                    cur.fetchall()
            samples.append(time.perf_counter() - t0)
            if sqlite:
                cur.close()
                raw.rollback()
            else:
                # Not a ROLLBACK: psycopg forgets its prepared statements at every
                # ROLLBACK, and the host path's statements, whose transactions commit,
                # are prepared after five runs — so would the floor's never be.
                cur.execute(f"DELETE FROM sms_message WHERE id > {int(last_id)}")  # noqa: S608
                cur.close()
                raw.commit()
    finally:
        raw.close()
    return p(samples, 0.5)


FIRST = """
import time, sys
from sqlalchemy.orm import Session
from erp_sms import erp, signals
from erp_sms.db import make_engine
engine = make_engine(sys.argv[1])
if sys.argv[2] == "warm":
    import erp_sms
    erp_sms.warm_up(engine)
with Session(engine) as s:
    o = s.get(erp.SalesOrder, 1); ev = o.shipping_events[0]
    s.commit(); o = s.get(erp.SalesOrder, 1); ev = o.shipping_events[0]
    t0 = time.perf_counter()
    signals.shipment_shipped.send(o, session=s, shipping_event=ev)
    print((time.perf_counter() - t0) * 1000)
    s.rollback()
"""


def _first_event(url: str, how: str) -> float:
    env = {**os.environ, "ERP_SMS_DATABASE_URL": url, "ERP_SMS_SMTP_FROM": "o@example.com"}
    out = subprocess.run(
        [sys.executable, "-c", FIRST, url, how], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _peer() -> float:
    """The median ms of a synchronous 5-text send inside the transaction."""

    with twilio_api(latency=0.05) as api:
        client = twilio_client(api.url)
        samples = []
        for _ in range(7):
            t0 = time.perf_counter()
            for j in range(OPTED_IN):
                client.messages.create(
                    to=f"+1312555{j:04d}", from_="+13125550100", body="Acme: shipped"
                )
            samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2] * 1000


def main() -> list[dict[str, Any]]:
    sizes = [int(x) for x in os.environ.get("BENCH_HOST_CONTACTS", "10000,100000").split(",")]
    peer = _peer()
    out = []
    for db_name in databases():
        for contacts in sizes:
            url = new_url(db_name)
            engine = fresh(url)
            set_settings(Settings(database_url=url, smtp_from="o@example.com"))
            _fill(engine, contacts)
            if db_name == "PostgreSQL":  # a live database has statistics; a fresh fill not yet
                with engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
            erp_sms.warm_up(engine)  # as the README asks of hosts; the cold first event is below
            p50, p99, per_event = _events(engine, EVENTS)
            watched = _watched(engine, EVENTS)
            committed, commit_alone = _with_commit(engine, EVENTS)
            floor = _floor(engine, EVENTS)
            cold, first = _first_event(url, "cold"), _first_event(url, "warm")
            fold50, fold99, fold_statements = _folding(engine, EVENTS)
            engine.dispose()
            out.append(
                {
                    "work": f"host path, {db_name}, {contacts:,} contacts "
                    f"({OPTED_IN} opted in of {ORG_SIZE} in the organization)",
                    "peers": f"synchronous send in the transaction: {peer:.0f} ms",
                    "ours": f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (medians of {ROUNDS} rounds of "
                    f"{EVENTS} events; {peer / p50:.0f}x less); "
                    f"{per_event:.0f} statements (the same statements sent by the driver alone: "
                    f"p50 {floor:.2f} ms; with a statement listener on the engine, which sends "
                    f"them through SQLAlchemy's execute: p50 {watched:.2f} ms); "
                    f"with the host's commit p50 {committed:.2f} ms against "
                    f"{commit_alone:.2f} ms for the same transaction without erp-sms "
                    f"(alternated); "
                    f"first event in a process {first:.1f} ms after "
                    f"`erp_sms.warm_up(engine)` ({cold:.0f} ms without)",
                    "target": "p50 <= 2 ms, p99 <= 10 ms, >= 100x less, <= 6 statements "
                    "(5, and the fold row of SMSDIGESTMINUTES), first event <= 10 ms",
                    "met": p50 <= 2
                    and p99 <= 10
                    and peer / p50 >= 100
                    and per_event <= 6
                    and first <= 10,
                }
            )
            print(out[-1])
            out.append(
                {
                    "work": f"host path, {db_name}, {contacts:,} contacts: the delivered "
                    f"event folded into the {OPTED_IN} shipped texts still waiting "
                    "(SMSDIGESTMINUTES, issue 28)",
                    "peers": f"the shipped event that opened the window: p50 {p50:.2f} ms",
                    "ours": f"p50 {fold50:.2f} ms, p99 {fold99:.2f} ms (medians of {ROUNDS} "
                    f"rounds of {EVENTS} events; {fold50 / p50:.2f}x the shipped event); "
                    f"{fold_statements:.0f} statements",
                    "target": "p50 <= 2 ms, p99 <= 10 ms, <= 6 statements more than the "
                    "shipped event",
                    "met": fold50 <= 2 and fold99 <= 10 and fold_statements <= per_event + 6,
                }
            )
            print(out[-1])
    return out
