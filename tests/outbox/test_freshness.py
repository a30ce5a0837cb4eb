"""Issue 28: an order text that is no longer useful is not sent late (SMSSTALEHOURS)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from erp_sms import options, signals, staff
from erp_sms.dispatch import Dispatcher
from erp_sms.erp import Contact
from erp_sms.errors import InputError
from erp_sms.models import Message, MessageEvent, Status

from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import Clock, activate_twilio


def _shipped(session: Session, number: str, *, email2: str = "3125550101@vtext.com") -> Message:
    org = OrganizationFactory(name=f"Org {number}")
    ann = ContactFactory(
        name="Ann",
        email2=email2,
        organizations=[org],
    )
    order = SalesOrderFactory(number=number, organization=org, contact=ann)
    session.add_all([org, ann, order])
    session.flush()
    ship = {"id": 1, "status": "Shipped", "carrier": "UPS", "tracking_number": "1Z1"}
    signals.shipment_shipped.send(order, session=session, shipping_event=ship)
    session.commit()
    (m,) = session.scalars(select(Message).where(Message.order_number == number))
    assert m.status == Status.QUEUED
    return m


def _look_again(session: Session) -> None:
    """A new transaction (SQLite's and MariaDB's reads keep their snapshot), rows re-read."""
    session.rollback()
    session.expire_all()


def _worker_at(db, hours: float) -> Dispatcher:
    return Dispatcher(db, clock=Clock(dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)))


def test_an_order_text_past_its_freshness_is_skipped_with_the_reason(any_delivery, any_db, host):
    stale = _shipped(host, "SO-OLD")
    # A worker that was down for 7 hours: past the default 6.
    _worker_at(any_db, 7).run_once()
    _look_again(host)
    row = host.get_one(Message, stale.id)
    assert row.status == Status.SKIPPED
    assert row.reason == (
        "skipped: not sent within 6 hours of when it was due (SMSSTALEHOURS); a late order "
        "update would arrive after the fact"
    )
    history = host.scalars(select(MessageEvent).where(MessageEvent.message_id == stale.id))
    assert [e.status for e in history][-1] == Status.SKIPPED
    # Within the limit it goes out as before.
    fresh = _shipped(host, "SO-NEW")
    assert _worker_at(any_db, 5).run_once().counts.get("sent") == 1
    _look_again(host)
    assert host.get_one(Message, fresh.id).status == Status.SENT


def test_zero_hours_sends_an_order_text_however_late(any_delivery, any_db, host):
    options.set_value(host, "SMSSTALEHOURS", "0", by="test")
    late = _shipped(host, "SO-LATE")
    assert _worker_at(any_db, 30).run_once().counts.get("sent") == 1
    _look_again(host)
    assert host.get_one(Message, late.id).status == Status.SENT


@pytest.mark.parametrize("bad", ["-1", "abc", "721", "1.5"])
def test_a_bad_freshness_gets_one_line_that_says_what_to_write(bad, session):
    with pytest.raises(InputError, match="SMSSTALEHOURS takes a whole number of hours"):
        options.set_value(session, "SMSSTALEHOURS", bad, by="test")


def test_twilio_is_told_how_long_an_order_text_stays_worth_sending(
    any_delivery, any_db, host, twilio_server
):
    activate_twilio(host)
    host.commit()
    late = _shipped(host, "SO-TW")  # through Twilio now that it is active
    # Queued 2 hours ago (a worker that was down): 4 of the default 6 hours are left.
    two_hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    host.execute(
        update(Message)
        .where(Message.id == late.id)
        .values(created_at=two_hours_ago, next_attempt_at=two_hours_ago)
    )
    options.set_value(host, "SMSSTALEHOURS", "6", by="test")
    host.commit()
    assert Dispatcher(any_db).run_once().counts.get("sent") == 1
    (sent,) = twilio_server.messages
    assert sent.validity_period is not None and 4 * 3600 - 60 < sent.validity_period <= 4 * 3600
    # 24 hours: Twilio's most, 10 hours (36,000 s); 0: no limit, Twilio's own default.
    options.set_value(host, "SMSSTALEHOURS", "24", by="test")
    _shipped(host, "SO-TW2")
    options.set_value(host, "SMSSTALEHOURS", "0", by="test")
    host.commit()
    Dispatcher(any_db).run_once()
    assert [m.validity_period for m in twilio_server.messages[1:]] == [None]
    options.set_value(host, "SMSSTALEHOURS", "24", by="test")
    _shipped(host, "SO-TW3")
    Dispatcher(any_db).run_once()
    assert twilio_server.messages[-1].validity_period == 36000


def test_the_daily_cap_holds_the_rest_for_the_next_days_opening(any_delivery, any_db, host):
    options.set_value(host, "SMSMAXPERDAY", "2", by="test")
    host.commit()
    same = "3125550177@vtext.com"  # one person, a contact of three organizations
    first, second, third = (_shipped(host, f"SO-C{i}", email2=same) for i in range(3))
    assert Dispatcher(any_db).run_once().counts.get("sent") == 2
    _look_again(host)
    rows = {m.id: m for m in host.scalars(select(Message))}
    assert [rows[m.id].status for m in (first, second, third)] == [
        Status.SENT,
        Status.SENT,
        Status.QUEUED,
    ]
    held = rows[third.id]
    chicago = ZoneInfo("America/Chicago")  # 312
    tomorrow = dt.datetime.now(chicago).date() + dt.timedelta(days=1)
    opening = dt.datetime.combine(tomorrow, dt.time(8, 0), tzinfo=chicago)  # SMSSENDWINDOW
    assert held.next_attempt_at == opening
    assert held.reason == (
        "deferred: 2 texts a day to this number (SMSMAXPERDAY) reached; goes out "
        f"{tomorrow:%Y-%m-%d} 08:00 America/Chicago"
    )
    # Staff's own text is never held by it.
    contact = host.scalars(select(Contact).where(Contact.email2 == same)).first()
    assert contact is not None
    staff.text_contact(host, str(contact.id), "Your parts are ready at the dock.", by="ann")
    host.commit()
    assert Dispatcher(any_db).run_once().counts.get("sent") == 1


@pytest.mark.parametrize("bad", ["0", "-1", "101", "lots"])
def test_a_bad_daily_cap_gets_one_line_that_says_what_to_write(bad, session):
    with pytest.raises(InputError, match="SMSMAXPERDAY takes off or a whole number from 1"):
        options.set_value(session, "SMSMAXPERDAY", bad, by="test")
