"""Order events become queued, rendered texts in the host's own transaction."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

import erp_sms
from erp_sms import erp, options, signals
from erp_sms.db import Database
from erp_sms.errors import UnknownEventError
from erp_sms.models import Channel, Message, Status, TemplateOverride
from erp_sms.recipients import ContactView, OrderView

from ..factories import (
    ContactFactory,
    OrganizationFactory,
    SalesOrderFactory,
    ShippingEventFactory,
    WorkOrderFactory,
)
from ..helpers import activate_twilio, by_contact, messages, scene


@pytest.fixture
def world(session: Session) -> dict[str, object]:
    """An organization with three opted-in contacts (gateway, phone, AT&T gateway), one
    not opted in, one opted-in contact of another organization, and an order."""
    people = {
        "ann": ("Ann", "3125550101@vtext.com"),
        "bob": ("Bob", "312-555-0102"),
        "cat": ("Cat", "3125550103@txt.att.net"),
        "dan": ("Dan", "3125550104@vtext.com"),
    }
    made = scene(session, people, org="Acme Fabrication", order="SO-104233", opted_out=("dan",))
    other = scene(
        session, {"eve": ("Eve", "3125550105@vtext.com")}, org="Other Co", order="SO-OTHER"
    )
    made.contacts["eve"] = other["eve"]
    return made


def test_sent_to_production_queues_one_rendered_text_per_opted_in_contact(session, world):
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    rows = by_contact(session)
    assert set(rows) == {"Ann", "Bob", "Cat"}  # Dan not opted in, Eve another organization
    ann = rows["Ann"]
    assert ann.status == Status.QUEUED
    assert (ann.channel, ann.address) == (Channel.EMAIL_GATEWAY, "3125550101@vtext.com")
    assert ann.body.startswith("Your order SO-104233 has gone into production")
    assert (ann.encoding, ann.segments) == ("GSM-7", 1)
    assert ann.template == "SMS S2P" and ann.event == "sent_to_production"
    assert ann.history == []  # the row itself is the first timeline entry; history holds changes
    # no Twilio: the plain phone number cannot be sent, the AT&T gateway is shut down
    assert rows["Bob"].status == Status.SKIPPED and "needs Twilio" in rows["Bob"].reason
    assert rows["Cat"].status == Status.SKIPPED and "AT&T" in rows["Cat"].reason
    assert "2025-06-17" in rows["Cat"].reason


def test_with_twilio_active_every_contact_goes_to_its_e164_number(session, world):
    activate_twilio(session)
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    rows = by_contact(session)
    assert {n: (m.status, m.channel, m.address) for n, m in rows.items()} == {
        "Ann": (Status.QUEUED, Channel.TWILIO, "+13125550101"),
        "Bob": (Status.QUEUED, Channel.TWILIO, "+13125550102"),
        "Cat": (Status.QUEUED, Channel.TWILIO, "+13125550103"),
    }


def test_each_event_uses_its_template_and_subject(session, world):
    order = world["order"]
    wo = WorkOrderFactory(number="WO-58211", sales_order=order)
    se = ShippingEventFactory(
        sales_order=order, carrier="UPS", tracking_number="1Z999AA10123456784"
    )
    session.add_all([wo, se])
    session.flush()
    signals.work_order_completed.send(order, session=session, work_order=wo)
    signals.shipment_shipped.send(order, session=session, shipping_event=se)
    signals.shipment_delivered.send(order, session=session, shipping_event=se)
    session.commit()
    ann = {m.template: m for m in messages(session) if m.contact_name == "Ann"}
    assert "Work order WO-58211" in ann["SMS PWOCOMP"].body
    # Issue 30: the carrier's tracking page (rules/tracking.toml) in both texts.
    ups = "https://www.ups.com/track?tracknum=1Z999AA10123456784"
    assert f"shipped via UPS: {ups}" in ann["SMS SESHIP"].body
    assert f"was delivered (UPS {ups})" in ann["SMS SEDEL"].body
    assert all(m.segments == 1 for m in ann.values())


def test_firing_the_same_event_twice_creates_no_second_message(session, world):
    for _ in range(3):
        signals.sent_to_production.send(world["order"], session=session)
        session.commit()
    assert len(messages(session)) == 3
    # …but a second shipping event of the same order is a new message
    se1 = ShippingEventFactory(sales_order=world["order"])
    se2 = ShippingEventFactory(sales_order=world["order"])
    session.add_all([se1, se2])
    session.flush()
    for se in (se1, se2, se1):
        signals.shipment_shipped.send(world["order"], session=session, shipping_event=se)
    session.commit()
    assert len([m for m in messages(session) if m.event == "shipment_shipped"]) == 6


def test_the_idempotency_key_is_enforced_by_the_database(session, world):
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    first = messages(session)[0]
    dup = Message(
        idempotency_key=first.idempotency_key,
        event=first.event,
        template=first.template,
        order_ref=first.order_ref,
        order_number=first.order_number,
        status=Status.QUEUED,
    )
    session.add(dup)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        session.flush()
    session.rollback()


def test_host_rollback_after_firing_leaves_no_message(session, world):
    order = world["order"]
    order.sms_update = True
    signals.sent_to_production.send(order, session=session)
    session.rollback()
    assert messages(session) == []


def test_host_rollback_with_nothing_else_in_the_transaction(db: Database, world):
    # The receiver's own queries start the transaction: rollback must still undo it.
    with db.sessions() as s:
        order = s.get(erp.SalesOrder, world["order"].id)
        signals.sent_to_production.send(order, session=s)
        s.rollback()
    with db.sessions() as s:
        assert messages(s) == []


def test_rows_commit_with_the_hosts_own_change(db: Database, world):
    with db.sessions() as s:
        order = s.get(erp.SalesOrder, world["order"].id)
        s.add(
            erp.ShippingEvent(
                sales_order=order, status="Shipped", carrier="FedEx", tracking_number="7700"
            )
        )
        se = order.shipping_events[-1]
        signals.shipment_shipped.send(order, session=s, shipping_event=se)
        s.commit()
    with db.sessions() as s:
        assert s.scalar(select(erp.ShippingEvent.carrier)) == "FedEx"
        assert {m.status for m in messages(s)} == {Status.QUEUED, Status.SKIPPED}


def test_smsonlyone_texts_only_the_listed_contact(session, world):
    options.set_value(session, "SMSONLYONE", "on")
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    assert list(by_contact(session)) == ["Ann"]


def test_smsonlyone_without_a_listed_contact_is_logged_not_lost(session, world):
    options.set_value(session, "SMSONLYONE", "on")
    order = SalesOrderFactory(number="SO-9", organization=world["org"], contact=None)
    session.add(order)
    signals.sent_to_production.send(order, session=session)
    session.commit()
    (row,) = messages(session)
    assert row.status == Status.SKIPPED and row.contact_ref is None
    assert "SMSONLYONE is on but order SO-9 has no listed contact" in row.reason


def test_listed_contact_not_linked_to_the_organization_is_skipped_with_reason(session, world):
    options.set_value(session, "SMSONLYONE", "on")
    loner = ContactFactory(name="Lone", email2="3125550199@vtext.com", organizations=[])
    order = SalesOrderFactory(number="SO-10", organization=world["org"], contact=loner)
    session.add_all([loner, order])
    signals.sent_to_production.send(order, session=session)
    session.commit()
    (row,) = messages(session)
    assert row.status == Status.SKIPPED
    assert "Lone is not linked to Acme Fabrication" in row.reason


def test_contact_linked_to_no_organization_gets_nothing(session, world):
    loner = ContactFactory(name="Lone", email2="3125550199@vtext.com", organizations=[])
    session.add(loner)
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    assert "Lone" not in by_contact(session)


def test_order_without_organization_is_logged_with_what_to_do(session):
    order = SalesOrderFactory(number="SO-11", organization=None)
    session.add(order)
    signals.sent_to_production.send(order, session=session)
    session.commit()
    (row,) = messages(session)
    assert row.status == Status.SKIPPED
    assert "order SO-11 has no organization" in row.reason


def test_unchecked_sms_update_box_skips_each_contact_with_reason(session, world):
    order = SalesOrderFactory(number="SO-12", organization=world["org"], sms_update=False)
    session.add(order)
    signals.sent_to_production.send(order, session=session)
    session.commit()
    rows = messages(session)
    assert {m.status for m in rows} == {Status.SKIPPED}
    assert all("SMS Update box is not checked" in m.reason for m in rows)


def test_sms_update_box_is_checked_when_the_listed_contact_has_smsupdate(world):
    assert erp.SalesOrder("SO-1", world["org"], contact=world["ann"]).sms_update is True
    assert erp.SalesOrder("SO-2", world["org"], contact=world["dan"]).sms_update is False
    assert erp.SalesOrder("SO-3", world["org"]).sms_update is False


def test_no_opted_in_contact_leaves_an_order_level_entry(session):
    org = OrganizationFactory(name="Quiet Ltd")
    order = SalesOrderFactory(number="SO-13", organization=org)
    session.add(order)
    signals.sent_to_production.send(order, session=session)
    session.commit()
    (row,) = messages(session)
    assert row.status == Status.SKIPPED and "no contact linked to Quiet Ltd" in row.reason


@pytest.mark.parametrize(
    ("email2", "fragment"),
    [
        ("call me", "neither a phone number"),
        ("555-12", "not a complete phone number"),
        ("+13125550101@vtext.com", "10-digit phone number"),
        ("3125550101@vtext.com\r\nBcc: x@example.com", "line break"),
        ("3125550101@example.org", "not a known carrier gateway"),
        (None, "fill in Email 2"),
    ],
)
def test_bad_email2_is_skipped_with_its_reason_and_others_still_queue(
    session, world, email2, fragment
):
    world["bob"].email2 = email2
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    rows = by_contact(session)
    assert rows["Bob"].status == Status.SKIPPED and fragment in rows["Bob"].reason
    assert rows["Ann"].status == Status.QUEUED


def _override(session: Session, name: str, body: str) -> None:
    session.merge(TemplateOverride(name=name, body=body))
    session.commit()


def test_database_override_replaces_the_file_default(session, world):
    _override(
        session,
        "SMS S2P",
        "Hi {{ contact.name }}, {{ order.number }} is in production. STOP to opt out.",
    )
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    assert by_contact(session)["Ann"].body == (
        "Hi Ann, SO-104233 is in production. To opt out, call (312) 555-0199."
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("Order {{ order.number ", "syntax error on line 1"),
        ("Line one\nOrder {% if %}", "syntax error on line 2"),
        ("Order {{ order.secret_price }}", "unknown variable"),
        ("Hi {{ customer_name }}", "unknown variable customer_name"),
        ("{{ ''.__class__.__mro__ }}", "refused by the sandbox"),
        ("{{ order.number.__class__.__base__.__subclasses__() }}", "refused by the sandbox"),
        ("{{ cycler.__init__.__globals__ }}", "refused by the sandbox"),
    ],
)
def test_bad_template_fails_each_message_with_reason_and_never_reaches_the_host(
    session, world, body, fragment
):
    _override(session, "SMS S2P", body)
    signals.sent_to_production.send(world["order"], session=session)  # does not raise
    session.commit()
    ann = by_contact(session)["Ann"]
    assert ann.status == Status.FAILED
    assert fragment in ann.reason
    assert ann.body == ""


def test_unknown_event_name_is_a_clear_error_and_writes_nothing(session, world):
    expected = r"unknown event 'sent_to_prod'.*sent_to_production"
    with pytest.raises(UnknownEventError, match=expected):
        erp_sms.fire("sent_to_prod", world["order"], session=session)
    session.commit()
    assert messages(session) == []


def test_fire_by_name_is_the_same_as_the_signal(session, world):
    erp_sms.fire("sent_to_production", world["order"], session=session)
    session.commit()
    assert len(messages(session)) == 3


def test_firing_without_session_uses_the_orders_session_and_warns(session, world, caplog):
    with caplog.at_level(logging.WARNING, logger="erp_sms"):
        signals.sent_to_production.send(world["order"])
    session.commit()
    assert len(messages(session)) == 3
    assert "fired without session=" in caplog.text


def test_firing_without_any_session_logs_a_clear_error_and_does_not_raise(caplog):
    order = erp.SalesOrder("SO-77", erp.Organization(name="Detached"))
    with caplog.at_level(logging.ERROR, logger="erp_sms"):
        signals.sent_to_production.send(order)
    assert "fired without session=" in caplog.text and "pass session=" in caplog.text


def test_work_order_event_without_work_order_is_recorded_as_failed(session, world):
    signals.work_order_completed.send(world["order"], session=session)
    session.commit()
    (row,) = messages(session)
    assert row.status == Status.FAILED and "without work_order=" in row.reason


def test_a_database_error_in_our_tables_never_breaks_the_hosts_transaction(session, world, caplog):
    session.execute(text("DROP TABLE sms_message_event"))
    session.execute(text("DROP TABLE sms_message"))
    session.commit()
    order = world["order"]
    order.sms_update = True
    session.add(erp.WorkOrder(number="WO-1", sales_order=order, status="complete"))
    with caplog.at_level(logging.ERROR, logger="erp_sms"):
        signals.sent_to_production.send(order, session=session)  # does not raise
    session.commit()  # the host's own change still commits
    assert session.scalar(select(erp.WorkOrder.number)) == "WO-1"
    assert "could not queue sent_to_production texts" in caplog.text


def test_host_registered_event_with_its_own_template_and_lookup(session, world):
    class InvoiceLookup:
        """A host whose documents are invoices (dicts here), reusing the ERP contacts."""

        def order(self, session, invoice):
            return OrderView(
                key=f"inv-{invoice['id']}",
                number=invoice["number"],
                organization_key="1",
                organization_name="Acme Fabrication",
                sms_update=True,
                listed_contact_key=None,
                context={"number": invoice["number"], "organization": {"name": "Acme Fabrication"}},
            )

        def contacts(self, session, invoice, *, listed_only):
            return [
                ContactView(
                    key="c9",
                    name="Payer",
                    address="3125550190@vtext.com",
                    has_smsupdate=True,
                    organization_keys=frozenset({"1"}),
                    context={"name": "Payer"},
                )
            ]

        def subject(self, name, obj):
            return str(obj["step"]), obj

    reminder = erp_sms.register_event(
        "payment_reminder_test",
        "SMS DUNNING TEST",
        subject="reminder",
        default_template="{{ order.organization.name }}: invoice {{ order.number }} is "
        "{{ reminder.days }} days overdue. Reply STOP to opt out, HELP for help.",
        lookup=InvoiceLookup(),
    )
    invoice = {"id": 7, "number": "INV-2041"}
    reminder.send(invoice, session=session, reminder={"step": 1, "days": 7})
    reminder.send(invoice, session=session, reminder={"step": 1, "days": 7})  # idempotent
    reminder.send(invoice, session=session, reminder={"step": 2, "days": 14})
    session.commit()
    rows = [m for m in messages(session) if m.event == "payment_reminder_test"]
    assert [m.body.split(" is ")[1][:16] for m in rows] == ["7 days overdue. ", "14 days overdue."]
    assert all(m.status == Status.QUEUED for m in rows)
    assert erp_sms.get_event("payment_reminder_test") is reminder


def test_registering_an_event_twice_with_another_template_is_refused():
    with pytest.raises(erp_sms.ErpSmsError, match="already registered"):
        erp_sms.register_event("sent_to_production", "SMS OTHER")


def test_host_rollback_with_a_plain_sqlite_engine(settings, world):
    """A host that made its engine with plain create_engine() (pysqlite's own transaction
    handling): the host's rollback still takes our rows with it."""
    from sqlalchemy import create_engine

    engine = create_engine(settings.database_url)
    try:
        with Session(engine) as s:
            order = s.get(erp.SalesOrder, world["order"].id)
            signals.sent_to_production.send(order, session=s)
            s.rollback()
        with Session(engine) as s:
            assert messages(s) == []
            order = s.get(erp.SalesOrder, world["order"].id)
            signals.sent_to_production.send(order, session=s)
            s.commit()
        with Session(engine) as s:
            assert len(messages(s)) == 3
    finally:
        engine.dispose()


def test_the_reference_schema_takes_the_contracts_positional_arguments(session):
    org = erp.Organization("Positional Inc")
    c = erp.Contact("Pat", "3125550150@vtext.com", [org], [erp.ContactAttribute("SMSUPDATE")])
    order = erp.SalesOrder("SO-P1", org, c)
    wo = erp.WorkOrder("WO-P1", order, "complete")
    se = erp.ShippingEvent(order, "Shipped", "UPS", "1ZP")
    session.add_all([order, wo, se])
    session.commit()
    assert order.sms_update and wo.sales_order is order and se.tracking_number == "1ZP"
    signals.work_order_completed.send(order, session=session, work_order=wo)
    signals.shipment_shipped.send(order, session=session, shipping_event=se)
    session.commit()
    bodies = [m.body for m in messages(session)]
    assert any("Work order WO-P1" in b for b in bodies) and any(
        "via UPS: https://www.ups.com/track?tracknum=1ZP" in b for b in bodies
    )


@pytest.mark.parametrize(
    ("email2", "fragment"),
    [
        (
            "123-456-7890",
            "'123-456-7890' is not a real phone number (area codes never start with 1",
        ),
        ("1628959257", "'1628959257' is not a real phone number"),
        ("1234567890@vtext.com", "1234567890 is not a real phone number"),
        ("212-155-0123", "exchange after the area code never starts with 1"),
    ],
)
def test_impossible_numbers_are_skipped_naming_the_number_and_why(session, email2, fragment):
    from ..helpers import activate_twilio

    activate_twilio(session)
    org = OrganizationFactory(name="Acme")
    c = ContactFactory(name="Zed", email2=email2, organizations=[org])
    order = SalesOrderFactory(organization=org, contact=c)
    session.add_all([org, c, order])
    signals.sent_to_production.send(order, session=session)
    session.commit()
    (m,) = messages(session)
    assert m.status == Status.SKIPPED and fragment in (m.reason or "")


def test_data_that_makes_a_text_too_long_fails_that_text_with_the_reason(session, world):
    session.add(TemplateOverride(name="SMS S2P", body="{{ contact.name * 9 }} STOP HELP"))
    long_name = ContactFactory(
        name="N" * 200, email2="3125550177@vtext.com", organizations=[world["order"].organization]
    )
    session.add(long_name)
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    by = {m.contact_name: m for m in messages(session)}
    assert by["N" * 200].status == Status.FAILED
    assert "renders to 1,810 characters; Twilio's maximum is 1,600" in by["N" * 200].reason
    assert by["Ann"].status == Status.QUEUED


def test_smsonlyone_flipped_by_staff_is_honoured_at_the_next_event_both_ways(session, world):
    """The host path reads SMSONLYONE with the opt-outs, after the contacts: a flip since
    this process last read it asks the contacts again, in both directions."""
    org = world["org"]
    orders = [
        SalesOrderFactory(number=f"SO-F{i}", organization=org, contact=world["order"].contact)
        for i in range(3)
    ]
    session.add_all(orders)
    for order, value in zip(orders, ("off", "on", "off"), strict=True):
        options.set_value(session, "SMSONLYONE", value)
        signals.sent_to_production.send(order, session=session)
        session.commit()
    rows = messages(session)
    per_order = {
        o.number: sorted(m.contact_name for m in rows if m.order_number == o.number) for o in orders
    }
    assert per_order["SO-F1"] == ["Ann"]
    assert per_order["SO-F0"] == per_order["SO-F2"] == ["Ann", "Bob", "Cat"]


def test_a_template_naming_the_contact_reads_differently_per_contact(session, world):
    """The packaged templates read the same for everyone and are rendered once per
    channel; one that names ``contact`` is rendered for each contact."""
    activate_twilio(session)
    ann = world["ann"]
    ann.email2 = "312-555-0101"
    session.add(TemplateOverride(name="SMS S2P", body="Hi {{ contact.name }}: {{ order.number }}"))
    session.commit()
    signals.sent_to_production.send(world["order"], session=session)
    session.commit()
    rows = by_contact(session)
    assert rows["Ann"].body.startswith("Hi Ann: SO-104233")
    assert rows["Bob"].body.startswith("Hi Bob: SO-104233")
    assert rows["Ann"].channel == rows["Bob"].channel == Channel.TWILIO
    assert rows["Cat"].body.startswith("Hi Cat: SO-104233")  # AT&T's gateway: by Twilio
    session.delete(session.get(TemplateOverride, "SMS S2P"))
    session.commit()
    signals.work_order_completed.send(
        world["order"], session=session, work_order=WorkOrderFactory(number="WO-7")
    )
    session.commit()
    done = [m for m in messages(session) if m.event == "work_order_completed"]
    bodies = {m.contact_name: m.body for m in done if m.status == Status.QUEUED}
    assert set(bodies) == {"Ann", "Bob", "Cat"} and len(set(bodies.values())) == 1
    assert "WO-7" in bodies["Ann"] and "Reply STOP" in bodies["Ann"]


@pytest.mark.parametrize(
    ("carrier", "number", "url"),
    [
        ("UPS", "1Z999AA10123456784", "https://www.ups.com/track?tracknum=1Z999AA10123456784"),
        ("FedEx Ground", "771234567890", "https://www.fedex.com/fedextrack/?trknbr=771234567890"),
        (
            "U.S. Postal Service",
            "9400 1000 0000 0000 0000 00",
            "https://tools.usps.com/go/TrackConfirmAction?tLabels=9400%201000%200000%200000%200000%2000",
        ),
        (
            "dhl express",
            "1234567890",
            "https://www.dhl.com/us-en/home/tracking/tracking-express.html?submit=1&tracking-id=1234567890",
        ),
        ("OnTrac", "C10000000000", "https://www.ontrac.com/tracking/?number=C10000000000"),
        (
            "Canada Post",
            "1234567890123456",
            "https://www.canadapost-postescanada.ca/track-reperage/en#/search?searchFor=1234567890123456",
        ),
        (
            "Purolator",
            "320000000000",
            "https://www.purolator.com/en/shipping/tracker?pin=320000000000",
        ),
        ("Acme Freight", "X1", None),
        ("UPS", "", None),
    ],
)
def test_each_carrier_in_the_table_has_its_tracking_page(carrier, number, url):
    """Issue 30: rules/tracking.toml, names matched without regard to case or dots."""
    from erp_sms.catalog import tracking_url

    assert tracking_url(carrier, number) == url


def test_the_hosts_own_tracking_url_wins_and_an_unknown_carrier_gets_the_number(session):
    people = {"ann": ("Ann", "3125550101@vtext.com")}
    made = scene(session, people, order="SO-T1")
    own = {
        "id": 1,
        "carrier": "UPS",
        "tracking_number": "1Z1",
        "tracking_url": "https://erp.example.com/t/1Z1",
    }
    signals.shipment_shipped.send(made.order, session=session, shipping_event=own)
    other = scene(session, {"bo": ("Bo", "3125550102@vtext.com")}, org="B", order="SO-T2")
    local = {"id": 2, "carrier": "Acme Freight", "tracking_number": "AF-9"}
    signals.shipment_shipped.send(other.order, session=session, shipping_event=local)
    session.commit()
    first, second = messages(session)
    assert "shipped via UPS: https://erp.example.com/t/1Z1" in first.body
    assert "shipped via Acme Freight, tracking AF-9." in second.body
