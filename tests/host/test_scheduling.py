"""Issue 11: texts that wait for a time (``send_at=`` on every event), shown with their
``scheduled_for`` in the report; the worker claims only what is due (injected clock)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from erp_sms import report, signals
from erp_sms.dispatch import Dispatcher
from erp_sms.models import Status

from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import Clock, messages

CHICAGO = ZoneInfo("America/Chicago")


def _order(session, number="SO-1"):
    org = OrganizationFactory(name="Acme Fabrication")
    ann = ContactFactory(name="Ann", email2="3125550101@vtext.com", organizations=[org])
    order = SalesOrderFactory(number=number, organization=org, contact=ann)
    session.add_all([org, ann, order])
    session.flush()
    return order


def test_a_text_with_send_at_waits_for_its_time_then_goes(delivery, db, session):
    clock = Clock()
    when = clock.now + dt.timedelta(hours=20)
    signals.sent_to_production.send(
        _order(session), session=session, send_at=when.astimezone(CHICAGO)
    )
    session.commit()
    (m,) = messages(session)
    assert m.status == Status.QUEUED and m.next_attempt_at == when
    assert not Dispatcher(db, clock=clock).run_once().handled  # not due yet
    clock.advance(20 * 3600)
    assert Dispatcher(db, clock=clock).run_once().counts["sent"] == 1


def test_a_send_at_in_the_past_goes_now(delivery, db, session):
    clock = Clock()
    signals.sent_to_production.send(
        _order(session), session=session, send_at=clock.now - dt.timedelta(days=1)
    )
    session.commit()
    (m,) = messages(session)
    assert m.next_attempt_at is not None and m.next_attempt_at >= clock.now - dt.timedelta(1)
    assert Dispatcher(db).run_once().counts["sent"] == 1


def test_a_send_at_without_a_time_zone_fails_with_the_reason_never_a_guess(delivery, session):
    signals.sent_to_production.send(
        _order(session), session=session, send_at=dt.datetime(2026, 12, 1, 9, 0)
    )
    session.commit()
    (m,) = messages(session)
    assert m.status == Status.FAILED and "not a timezone-aware datetime" in m.reason


def test_the_report_shows_when_a_waiting_text_goes_out(delivery, session):
    when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
    signals.sent_to_production.send(_order(session, "SO-1"), session=session, send_at=when)
    signals.sent_to_production.send(_order(session, "SO-2"), session=session)
    session.commit()
    out = io.StringIO()
    report.export_csv(session, report.Filters(), out)
    rows = {r["order_number"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert rows["SO-1"]["scheduled_for"] == when.isoformat(timespec="seconds")
    assert rows["SO-2"]["scheduled_for"] == ""  # due now
    table = io.StringIO()
    report.write_table(report.rows(session, report.Filters(statuses=(Status.QUEUED,))), table)
    assert f"goes out {when:%Y-%m-%d %H:%M} UTC" in table.getvalue()


def test_a_host_event_takes_send_at_too(delivery, db, session):
    """CONTRACT.md: ``EventType.send(order, session=s, send_at=when)``."""
    import erp_sms

    reminder = erp_sms.register_event(
        "scheduled_reminder_test",
        template="SMS SCHEDULED TEST",
        subject="invoice",
        default_template="{{ order.organization.name }}: invoice {{ invoice.number }} is due.",
        sample_subject={"number": "INV-1"},
    )
    clock = Clock()
    when = clock.now + dt.timedelta(days=3)

    invoice = SimpleNamespace(id=7, number="INV-7")
    reminder.send(_order(session), session=session, invoice=invoice, send_at=when)
    session.commit()
    (m,) = messages(session)
    assert (m.status, m.reason, m.next_attempt_at) == (Status.QUEUED, None, when)
    assert "INV-7" in m.body
    assert not Dispatcher(db, clock=clock).run_once().handled
