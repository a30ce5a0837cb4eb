"""Consent (CONTRACT.md "Consent"): an opt-out takes effect at once — texts already
queued or held are canceled, a text claimed later is canceled at the claim, and a STOP
matches a number however it was typed. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import erp_sms
from erp_sms import signals
from erp_sms.dispatch import Dispatcher
from erp_sms.errors import InputError
from erp_sms.models import ConsentEvent, OptOut, Status
from erp_sms.webhooks import handle_inbound

from ..conftest import with_settings
from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import messages, scene


@pytest.fixture
def twins(host: Session):
    """Ann and her shop's second login, both with the number 312-555-0101 (typed two
    ways), and an order for their organization."""
    people = {
        "ann": ("Ann", "3125550101@vtext.com"),
        "ann2": ("Ann (shop)", "+1 (312) 555-0101"),
        "bob": ("Bob", "3125550102@vtext.com"),
    }
    return scene(host, people, order="SO-31")


def test_an_opt_out_cancels_queued_and_held_texts_of_the_contact_and_number(
    any_db, host, twins, smtp_sink
):
    with_settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)
    from ..helpers import activate_twilio

    activate_twilio(host, active=False)
    signals.sent_to_production.send(twins["order"], session=host)
    host.commit()
    rows = {m.contact_name: m for m in messages(host)}
    assert rows["Ann (shop)"].status == Status.SKIPPED  # a plain number needs TWILIO
    rows["Ann (shop)"].status = Status.HELD  # e.g. waiting for TWILIO to be active again
    host.commit()
    # the host opts Ann out, in its own transaction
    done = erp_sms.opt_out(host, contact_key=str(twins["ann"].id), source="host")
    host.commit()
    assert done.number == "+13125550101" and done.changed
    assert sorted(done.canceled) == sorted([rows["Ann"].id, rows["Ann (shop)"].id])
    after = {m.contact_name: m for m in messages(host)}
    assert after["Ann"].status == after["Ann (shop)"].status == Status.CANCELED
    assert "+13125550101 opted out (host)" in (after["Ann"].reason or "")
    assert after["Bob"].status == Status.QUEUED
    Dispatcher(any_db).run_once()
    assert [rcpt for _f, rcpts, _d in smtp_sink.received for rcpt in rcpts] == [
        "3125550102@vtext.com"
    ]
    assert not twins["ann2"].has_attribute("SMSUPDATE")  # a STOP matches every contact
    # A contact added later with that number and SMSUPDATE: skipped, with the reason.
    host.commit()
    ann3 = ContactFactory(
        name="Ann (new)", email2="3125550101@vtext.com", organizations=[twins["order"].organization]
    )
    host.add(ann3)
    signals.shipment_delivered.send(
        twins["order"],
        session=host,
        shipping_event={"id": 5, "carrier": "UPS", "tracking_number": "1Z"},
    )
    host.commit()
    later = [m for m in messages(host) if m.event == "shipment_delivered"]
    by = {m.contact_name: m for m in later}
    assert "Ann" not in by and "Ann (shop)" not in by  # no longer have SMSUPDATE
    assert by["Ann (new)"].status == Status.SKIPPED
    assert "+13125550101 opted out on" in (by["Ann (new)"].reason or "")


def test_opting_out_twice_records_one_consent_event(any_db, host, twins):
    key = str(twins["bob"].id)
    assert erp_sms.opt_out(host, contact_key=key, source="cli", actor="pat").changed
    assert not erp_sms.opt_out(host, contact_key=key, source="cli", actor="pat").changed
    host.commit()
    events = list(host.scalars(select(ConsentEvent)))
    assert [(e.action, e.source, e.actor, e.number) for e in events] == [
        ("opt_out", "cli", "pat", "+13125550102")
    ]
    assert erp_sms.opt_in(host, contact_key=key, source="cli").changed
    host.commit()
    assert host.get(OptOut, "+13125550102") is None


def test_an_opt_out_that_raced_the_queueing_is_caught_when_the_text_is_claimed(
    any_db, host, twins, smtp_sink
):
    with_settings(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port)
    signals.sent_to_production.send(twins["order"], session=host)
    host.commit()
    # A STOP committed by another process while the host's transaction was still open:
    # its cancel could not see the uncommitted text, and the planning did not see the
    # STOP. What is left is this: an opt-out, and a queued text to the number.
    with any_db.session() as other:
        other.add(OptOut(number="+13125550102", source="sms_reply"))
    bob = next(m for m in messages(host) if m.contact_name == "Bob")
    assert bob.status == Status.QUEUED
    Dispatcher(any_db).run_once()
    bob = next(m for m in messages(host) if m.id == bob.id)
    assert bob.status == Status.CANCELED
    assert "+13125550102 opted out before it was sent" in (bob.reason or "")
    assert "3125550102@vtext.com" not in [
        rcpt for _f, rcpts, _d in smtp_sink.received for rcpt in rcpts
    ]


@pytest.mark.parametrize(
    ("typed", "region", "sender"),
    [
        ("+1 212 555 01 23", "US", "+12125550123"),
        ("+33 6 12 34 56 78", "US", "+33612345678"),
        ("07911 123456", "GB", "+447911123456"),
        ("(212) 555-0123", "US", "+12125550123"),
        ("2125550123@vtext.com", "US", "+12125550123"),
    ],
)
def test_stop_matches_a_number_however_it_was_typed(any_db, host, typed, region, sender):
    from ..helpers import activate_twilio

    with_settings(default_region=region)
    activate_twilio(host)  # plain numbers are texted through Twilio
    org = OrganizationFactory(name="Acme")
    c = ContactFactory(name="Kim", email2=typed, organizations=[org])
    host.add_all([org, c])
    host.commit()
    handle_inbound(host, {"MessageSid": "SM" + "4" * 32, "From": sender, "Body": "Stop"})
    host.commit()
    host.expire_all()
    assert not c.has_attribute("SMSUPDATE")
    assert host.get(OptOut, sender) is not None
    event = host.scalar(select(ConsentEvent))
    assert (event.contact_ref, event.source) == (str(c.id), "sms_reply")


@pytest.mark.parametrize(
    ("typed", "region", "stored"),
    [("0044 7911 123458", "GB", "+447911123458"), ("(312) 555-0102", "US", "+13125550102")],
)
def test_a_number_given_to_opt_out_is_read_like_a_contact_s(any_db, host, typed, region, stored):
    """The host's erp_sms.opt_out(number=…) stored the raw string: it matched nobody and
    canceled nothing."""
    from ..helpers import activate_twilio

    with_settings(default_region=region)
    activate_twilio(host)  # plain numbers are texted through Twilio
    org = OrganizationFactory(name="Acme")
    c = ContactFactory(name="Cy", email2=stored, organizations=[org])
    order = SalesOrderFactory(number="SO-44", organization=org, contact=c)
    host.add_all([org, c, order])
    host.commit()
    signals.sent_to_production.send(order, session=host)
    host.commit()
    done = erp_sms.opt_out(host, number=typed, source="host")
    host.commit()
    assert done.number == stored and len(done.canceled) == 1
    assert host.get(OptOut, stored) is not None
    assert host.scalar(select(OptOut.number).where(OptOut.number == typed)) is None
    assert erp_sms.opt_in(host, number=typed, source="host").changed


@pytest.mark.parametrize("typed", ["not a number", "0044 7911 123458"])  # the second: region US
def test_a_number_that_is_not_one_is_refused_with_one_line(any_db, host, typed):
    with pytest.raises(InputError) as raised:
        erp_sms.opt_out(host, number=typed, source="host")
    assert "\n" not in raised.value.message and raised.value.message
    host.rollback()
    assert host.scalar(select(OptOut.number)) is None


def test_a_canceled_text_s_timeline_says_canceled_once(any_db, host, twins):
    from erp_sms.timeline import for_order

    signals.sent_to_production.send(twins["order"], session=host)
    host.commit()
    erp_sms.opt_out(host, contact_key=str(twins["bob"].id), source="host")
    host.commit()
    lines = [e.text for e in for_order(host, "SO-31")]
    canceled = [t for t in lines if t.startswith("canceled")]
    assert canceled and all("canceled: canceled" not in t for t in lines), lines
    assert canceled[0].startswith("canceled: +13125550102 opted out (host)")
