"""Issue 28: one text per moment — an order's texts to one contact folded into one
(SMSDIGESTMINUTES): a later stage supersedes an earlier one still waiting, several work
orders or shipments are named together, a text already claimed or sent is never touched,
and two host transactions never both keep a text."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from erp_sms import consent, erp, options, outbox, register_event, signals, staff, timeline
from erp_sms.db import make_engine
from erp_sms.dispatch import Dispatcher
from erp_sms.errors import InputError
from erp_sms.models import Fold, Message, Status

from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import Clock, three_contact_order

ANN = "3125550101@vtext.com"


def _order(session: Session, number: str = "SO-1") -> erp.SalesOrder:
    """An order of an organization with one opted-in contact, Ann (a gateway address);
    folding on at its default, 5 minutes."""
    options.set_value(session, "SMSDIGESTMINUTES", "5", by="test")
    org = OrganizationFactory(name=f"Org {number}")
    ann = ContactFactory(name="Ann", email2=ANN, organizations=[org])
    order = SalesOrderFactory(number=number, organization=org, contact=ann)
    session.add_all([org, ann, order])
    session.commit()
    return order


def _wo(i: int) -> dict[str, object]:
    return {"id": i, "number": f"PWO-{i}", "status": "complete"}


def _se(i: int, carrier: str, tracking: str, status: str) -> dict[str, object]:
    return {"id": i, "status": status, "carrier": carrier, "tracking_number": tracking}


def _fire(session: Session, signal, order, **kwargs) -> None:
    """One host transaction firing one event (a new one: not the reads' snapshot)."""
    session.rollback()
    signal.send(order, session=session, **kwargs)
    session.commit()


def _rows(session: Session, number: str = "SO-1") -> list[Message]:
    session.rollback()  # SQLite's and MariaDB's reads keep their snapshot
    session.expire_all()
    return list(
        session.scalars(select(Message).where(Message.order_number == number).order_by(Message.id))
    )


def _worker_in(db, minutes: float) -> Dispatcher:
    return Dispatcher(db, clock=Clock(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)))


def test_a_burst_of_work_orders_goes_out_as_one_text_naming_them(
    any_delivery, any_db, host, smtp_sink
):
    order = _order(host)
    _fire(host, signals.sent_to_production, order)
    for i in (1, 2, 3):
        _fire(host, signals.work_order_completed, order, work_order=_wo(i))
    first, *folded = _rows(host)
    assert first.status == Status.QUEUED
    assert first.event == "work_order_completed" and first.subject_ref == "3"
    assert first.body == (
        "Work orders PWO-1, PWO-2 and PWO-3 of your order SO-1 are complete. "
        "To opt out, call (312) 555-0199."
    )
    assert first.segments == 1
    # It waits 5 minutes after the first event, and says so.
    assert first.next_attempt_at == first.created_at + dt.timedelta(minutes=5)
    assert first.reason == (
        "waiting 5 min for more updates of order SO-1 to fold into one text (SMSDIGESTMINUTES)"
    )
    assert [(m.status, m.reason, m.merged_into) for m in folded] == [
        (Status.MERGED, f"merged into message {first.id}", first.id)
    ] * 3
    # The timeline says what each folded text would have said, and where it went.
    lines = [e.line() for e in timeline.for_order(host, "SO-1")]
    assert any(
        f"#{folded[1].id} work_order_completed → Ann" in ln
        and f"merged into message {first.id} (would have said: Work order PWO-2 for your "
        "order SO-1 is complete."
        in ln
        for ln in lines
    ), lines
    # Not before its time; then one text, with everything it carries.
    assert _worker_in(any_db, 4).run_once().counts.get("sent") is None
    assert _worker_in(any_db, 6).run_once().counts.get("sent") == 1
    ((_, _, mail),) = smtp_sink.received
    assert b"Work orders PWO-1, PWO-2 and PWO-3 of your order SO-1 are complete." in mail
    assert [m.status for m in _rows(host)] == [Status.SENT] + [Status.MERGED] * 3


def test_an_orders_eleven_events_in_minutes_are_one_delivered_text(any_delivery, any_db, host):
    """The issue's order: sent to production, 6 work orders, a split shipment (2 shipping
    events, each shipped then delivered) — 11 texts before, 1 now."""
    order = _order(host)
    _fire(host, signals.sent_to_production, order)
    for i in range(1, 7):
        _fire(host, signals.work_order_completed, order, work_order=_wo(i))
    ups, fedex = _se(1, "UPS", "1Z1", "Shipped"), _se(2, "FedEx", "7777", "Shipped")
    _fire(host, signals.shipment_shipped, order, shipping_event=ups)
    _fire(host, signals.shipment_shipped, order, shipping_event=fedex)
    _fire(host, signals.shipment_delivered, order, shipping_event={**ups, "status": "Delivered"})
    (carrier,) = [m for m in _rows(host) if m.status == Status.QUEUED]
    # One shipment delivered, the other on its way: both named, each with its stage.
    assert carrier.body.startswith(
        "Order SO-1: delivered UPS 1Z1; on its way FedEx https://www.fedex.com/fedextrack/?trknbr=7777."
    )
    _fire(host, signals.shipment_delivered, order, shipping_event={**fedex, "status": "Delivered"})
    rows = _rows(host)
    assert len(rows) == 11
    (carrier,) = [m for m in rows if m.status == Status.QUEUED]
    assert [m.status for m in rows].count(Status.MERGED) == 10
    assert carrier.event == "shipment_delivered" and carrier.template == "SMS SEDEL"
    assert carrier.body == (
        "Order SO-1 was delivered in 2 shipments (UPS 1Z1, FedEx 7777). "
        "To opt out, call (312) 555-0199."
    )
    assert _worker_in(any_db, 6).run_once().counts.get("sent") == 1


def test_shipped_then_delivered_is_one_delivered_text(any_delivery, any_db, host):
    order = _order(host)
    ship = _se(1, "UPS", "1Z999AA10123456784", "Shipped")
    _fire(host, signals.shipment_shipped, order, shipping_event=ship)
    _fire(host, signals.shipment_delivered, order, shipping_event={**ship, "status": "Delivered"})
    carrier, merged = _rows(host)
    assert (carrier.status, carrier.event) == (Status.QUEUED, "shipment_delivered")
    assert carrier.body.startswith(
        "Order SO-1 was delivered (UPS https://www.ups.com/track?tracknum=1Z999AA10123456784)."
    )
    assert (merged.status, merged.merged_into) == (Status.MERGED, carrier.id)
    # An earlier stage arriving late (out of order) is superseded: the words stay.
    _fire(host, signals.sent_to_production, order)
    assert _rows(host)[0].body == carrier.body


def test_a_text_already_claimed_or_sent_is_never_changed(any_delivery, any_db, host):
    order = _order(host)
    _fire(host, signals.sent_to_production, order)
    assert _worker_in(any_db, 6).run_once().counts.get("sent") == 1
    (sent,) = _rows(host)
    _fire(host, signals.work_order_completed, order, work_order=_wo(1))
    sent_again, second = _rows(host)
    assert (sent_again.status, sent_again.body, sent_again.event) == (
        Status.SENT,
        sent.body,
        "sent_to_production",
    )
    # A new window: the work order's text waits for what follows it.
    assert second.status == Status.QUEUED and second.merged_into is None
    assert second.next_attempt_at == second.created_at + dt.timedelta(minutes=5)
    # Claimed by a worker (sending, not yet recorded): also left alone.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
    (claimed,) = outbox.claim_due(any_db, "w1", limit=10, lease_seconds=60, now=later)
    assert claimed.id == second.id
    _fire(host, signals.work_order_completed, order, work_order=_wo(2))
    rows = _rows(host)
    assert rows[1].status == Status.SENDING and rows[1].body == second.body
    assert (rows[2].status, rows[2].merged_into) == (Status.QUEUED, None)


def test_an_event_fired_again_changes_nothing(any_delivery, any_db, host):
    order = _order(host)
    _fire(host, signals.sent_to_production, order)
    _fire(host, signals.work_order_completed, order, work_order=_wo(1))
    before = [(m.id, m.status, m.body) for m in _rows(host)]
    _fire(host, signals.work_order_completed, order, work_order=_wo(1))
    _fire(host, signals.sent_to_production, order)
    assert [(m.id, m.status, m.body) for m in _rows(host)] == before
    (carried,) = host.scalars(select(Fold.carried)).all()
    assert [i["ref"] for i in json.loads(carried)] == [
        "sent_to_production|-",
        "work_order_completed|1",
    ]


def test_a_rolled_back_host_transaction_leaves_no_fold_behind(any_delivery, any_db, host):
    order = _order(host)
    signals.sent_to_production.send(order, session=host)
    host.rollback()
    _fire(host, signals.work_order_completed, order, work_order=_wo(1))
    (only,) = _rows(host)
    assert (only.status, only.event, only.merged_into) == (
        Status.QUEUED,
        "work_order_completed",
        None,
    )
    assert only.body.startswith("Work order PWO-1 for your order SO-1 is complete.")


def test_zero_minutes_sends_each_event_as_it_fires(any_delivery, any_db, host):
    order = _order(host)
    options.set_value(host, "SMSDIGESTMINUTES", "0", by="test")
    host.commit()
    _fire(host, signals.sent_to_production, order)
    _fire(host, signals.work_order_completed, order, work_order=_wo(1))
    assert [m.status for m in _rows(host)] == [Status.QUEUED, Status.QUEUED]
    assert Dispatcher(any_db).run_once().counts.get("sent") == 2


@pytest.mark.parametrize("bad", ["-1", "abc", "121", "2.5"])
def test_a_bad_digest_gets_one_line_that_says_what_to_write(bad, session):
    with pytest.raises(InputError, match="SMSDIGESTMINUTES takes a whole number of minutes"):
        options.set_value(session, "SMSDIGESTMINUTES", bad, by="test")


def test_other_events_and_scheduled_texts_are_never_folded(any_delivery, any_db, host):
    order = _order(host)
    custom = register_event(
        "fold_test_quote_ready", "SMS FOLDTEST", default_template="Quote for {{ order.number }}."
    )
    _fire(host, signals.sent_to_production, order)
    custom.send(order, session=host)
    host.commit()
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    _fire(host, signals.work_order_completed, order, work_order=_wo(1), send_at=tomorrow)
    rows = _rows(host)
    assert [(m.event, m.status) for m in rows] == [
        ("sent_to_production", Status.QUEUED),
        ("fold_test_quote_ready", Status.QUEUED),
        ("work_order_completed", Status.QUEUED),
    ]
    assert rows[2].next_attempt_at == tomorrow


def test_the_carrier_keeps_to_the_opt_out_list(any_delivery, any_db, host):
    order = _order(host)
    _fire(host, signals.sent_to_production, order)
    _fire(host, signals.work_order_completed, order, work_order=_wo(1))
    consent.opt_out(host, number="+13125550101", source="staff", detail="asked by phone")
    host.commit()
    assert _worker_in(any_db, 6).run_once().counts.get("sent") is None
    carrier, merged = _rows(host)
    assert carrier.status in (Status.CANCELED, Status.SKIPPED) and merged.status == Status.MERGED


def test_staff_send_a_waiting_text_now_and_only_an_order_texts_wait(any_delivery, any_db, host):
    order = _order(host)
    _fire(host, signals.sent_to_production, order)
    (waiting,) = _rows(host)
    assert staff.release(host, [waiting.id], by="ann") == 1
    host.commit()
    assert Dispatcher(any_db).run_once().counts.get("sent") == 1
    (sent,) = _rows(host)
    history = [(e.kind, e.detail) for e in sent.history]
    assert ("note", "released: goes out now") in history
    custom = register_event("fold_test_later", "SMS FOLDLATER", default_template="Later.")
    custom.send(order, session=host, send_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    host.commit()
    later = _rows(host)[-1]
    with pytest.raises(InputError, match=f"#{later.id} is a queued fold_test_later text"):
        staff.release(host, [later.id], by="ann")


def test_two_host_transactions_at_once_never_both_keep_a_text(any_db, any_delivery):
    """8 host transactions fire a work order each for the same order at the same moment:
    each contact gets one text naming all 8; no transaction fails or deadlocks."""
    url = any_db.engine.url.render_as_string(hide_password=False)
    engine = make_engine(url)
    order_id = three_contact_order(engine)
    with Session(engine) as s:
        options.set_value(s, "SMSDIGESTMINUTES", "5", by="test")
        s.commit()
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def host_action(i: int) -> None:
        barrier.wait(timeout=60)
        with Session(engine) as s:
            s.add(erp.Organization(name=f"host change {i}"))  # the host's own write first
            s.flush()  # (on SQLite: a read, then a write after another commit, fails)
            order = s.get(erp.SalesOrder, order_id)
            signals.work_order_completed.send(order, session=s, work_order=_wo(i + 1))
            try:
                s.commit()
                outcomes.append("ok")
            except Exception as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=host_action, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["ok"] * n
    with Session(engine) as s:
        rows = list(s.scalars(select(Message).order_by(Message.id)))
    engine.dispose()
    assert len(rows) == 3 * n and {m.status for m in rows} == {Status.QUEUED, Status.MERGED}
    kept = [m for m in rows if m.status == Status.QUEUED]
    assert sorted(m.contact_name for m in kept) == ["C0", "C1", "C2"]
    for m in kept:
        named = {f"PWO-{i}" for i in range(1, n + 1)}
        assert all(w in m.body for w in named), m.body
        merged = [r for r in rows if r.merged_into == m.id]
        assert len(merged) == n - 1 and {r.contact_name for r in merged} == {m.contact_name}


def test_folding_costs_a_bounded_number_of_statements(any_delivery, any_db, host):
    """A window's first text costs 1 statement more than without folding (the fold row
    written and locked: an upsert with RETURNING; MariaDB, 2); a text folded in at most
    6 more (MariaDB 7), however much the order has folded before — the carrier is found
    by keys, never by reading the order's texts."""
    engine = host.get_bind()
    lock = 2 if engine.dialect.name in ("mysql", "mariadb") else 1

    def statements(fire) -> list[str]:
        seen: list[str] = []

        def listener(*args: object) -> None:
            seen.append(str(args[2]))

        event.listen(engine, "before_cursor_execute", listener)
        try:
            fire()
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return [s for s in seen if not s.startswith(("COMMIT", "BEGIN", "ROLLBACK"))]

    plain = _order(host, "SO-PLAIN")
    options.set_value(host, "SMSDIGESTMINUTES", "0", by="test")
    host.commit()
    base = statements(lambda: _fire(host, signals.work_order_completed, plain, work_order=_wo(1)))
    order = _order(host, "SO-1")  # folding on again
    first = statements(lambda: _fire(host, signals.sent_to_production, order))
    second = statements(lambda: _fire(host, signals.work_order_completed, order, work_order=_wo(1)))
    for i in range(2, 10):
        _fire(host, signals.work_order_completed, order, work_order=_wo(i))
    tenth = statements(lambda: _fire(host, signals.work_order_completed, order, work_order=_wo(10)))
    assert len(first) == len(base) + lock, first
    assert len(base) + lock < len(second) <= len(base) + lock + 5, second
    assert len(tenth) == len(second), tenth
    assert [m.status for m in _rows(host)].count(Status.QUEUED) == 1
