"""A host with its own tables (examples/shopfloor) through every entry point: the CLI,
the dispatcher and `erp-sms serve` all import ERP_SMS_HOST_MODULE and use the host's
tables — never the reference ones."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

import erp_sms
from erp_sms import host
from erp_sms.cli import cli
from erp_sms.db import make_engine
from erp_sms.models import ConsentEvent, InboundMessage, Message, OptOut, Status
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..helpers import AUTH, PUBLIC, activate_twilio, inbound, post

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def shop(settings, tmp_path, monkeypatch):
    """A fresh database holding only Shopfloor's tables, then `erp-sms db upgrade`."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    s = with_settings(database_url=url, host_module="shopfloor.sms", public_url=PUBLIC)
    from shopfloor.models import Customer, Invoice, Order, Person, ShopBase

    engine = make_engine(url)
    ShopBase.metadata.create_all(engine)
    result = CliRunner().invoke(cli, ["db", "upgrade"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "plugin tables only" in result.stdout
    staff_setup = ["options", "set", "SMSOPTOUTCONTACT", "312-555-0199"]
    assert CliRunner().invoke(cli, staff_setup, catch_exceptions=False).exit_code == 0
    with Session(engine, expire_on_commit=False) as session:
        birch = Customer(name="Birch Cabinets")
        dana = Person(
            customer=birch,
            first_name="Dana",
            last_name="Birch",
            mobile="+1 212 555 01 23",
            wants_texts=True,
        )
        eli = Person(
            customer=birch,
            first_name="Eli",
            last_name="Oak",
            mobile="3125550142@vtext.com",
            wants_texts=True,
        )
        fay = Person(
            customer=birch,
            first_name="Fay",
            last_name="Ash",
            mobile="123-456-7890",
            wants_texts=True,
        )
        order = Order(order_no="SO-2001", customer=birch, contact_person=dana)
        invoice = Invoice(
            order=order,
            invoice_no="INV-9001",
            due_date=dt.date(2026, 12, 1),
            amount=Decimal("1250.00"),
        )
        session.add_all([birch, dana, eli, fay, order, invoice])
        session.commit()
        ids = {"dana": str(dana.id), "eli": str(eli.id), "fay": str(fay.id)}
    yield {"settings": s, "engine": engine, "url": url, **ids}
    engine.dispose()
    host.unload_host_module()


def run(*args: str, code: int = 0, input: str | None = None):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def fire(shop, *, reminder: bool = True) -> None:
    """The host fires its events in its own transaction."""
    from shopfloor.models import Order

    host.load_host_module()
    with Session(shop["engine"]) as session:
        order = session.scalar(select(Order).where(Order.order_no == "SO-2001"))
        erp_sms.signals.sent_to_production.send(order, session=session)
        if reminder:
            erp_sms.fire("payment_reminder", order, session=session, invoice=order.invoices[0])
        session.commit()


def rows(shop) -> list[Message]:
    with Session(shop["engine"]) as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


def person(shop, key: str):
    from shopfloor.models import Person

    with Session(shop["engine"]) as session:
        return session.get(Person, int(key))


def test_db_upgrade_with_a_host_module_creates_only_the_plugin_tables(shop):
    tables = set(inspect(shop["engine"]).get_table_names())
    assert not [t for t in tables if t.startswith("erp_") and t != "erp_sms_alembic_version"]
    assert {"sms_message", "sms_opt_out", "shop_person"} <= tables


def test_the_host_path_plans_through_the_hosts_lookup(shop):
    fire(shop)
    by = {(m.event, m.contact_name): m for m in rows(shop)}
    dana = by[("payment_reminder", "Dana Birch")]
    assert dana.status == Status.SKIPPED  # TWILIO is off: a plain number needs it
    eli = by[("payment_reminder", "Eli Oak")]
    assert eli.status == Status.QUEUED and eli.recipient == "+13125550142"
    assert eli.body.startswith("Hi Eli, invoice INV-9001 ($1,250.00)")
    fay = by[("payment_reminder", "Fay Ash")]
    assert fay.status == Status.SKIPPED
    assert "'123-456-7890' is not a real phone number" in (fay.reason or "")


def test_templates_know_the_hosts_events_and_variables(shop, tmp_path):
    shown = run("templates", "show", "SMS DUNNING").stdout
    assert "Hi Dana, invoice INV-9001" in shown
    good = tmp_path / "dunning.txt"
    good.write_text(
        "{{ contact.first_name }} {{ contact.last_name }}: invoice {{ invoice.number }} is due. "
        "Reply STOP to opt out, HELP for help."
    )
    assert "SMS DUNNING saved" in run("templates", "set", "SMS DUNNING", "--file", str(good)).stdout
    assert "SMS DUNNING" in run("templates", "list").stdout
    preview = run("templates", "preview", "SMS DUNNING", "--order", "SO-2001").stdout
    assert "Eli Oak" in preview and "Eli Oak: invoice INV-9001 is due" in preview
    assert "invoice from the order's latest record" in preview


def test_contact_commands_use_the_hosts_tables(shop):
    fire(shop)
    out = run("contacts", "opt-out", shop["eli"], "--note", "asked by phone").stdout
    assert "opted out" in out and "2 queued or held text(s) canceled" in out
    assert person(shop, shop["eli"]).wants_texts is False
    assert (
        "was already opted out; nothing changed" in run("contacts", "opt-out", shop["eli"]).stdout
    )
    assert "opted in" in run("contacts", "opt-in", shop["eli"]).stdout
    assert person(shop, shop["eli"]).wants_texts is True
    timeline = run("timeline", "--contact", shop["eli"]).stdout
    assert "opt_out (cli)" in timeline and "opt_in (cli)" in timeline
    gateways = run("contacts", "gateways").stdout
    assert "Eli Oak" in gateways and "3125550142@vtext.com" in gateways
    tables = set(inspect(shop["engine"]).get_table_names())
    assert "erp_contact" not in tables  # nothing fell back to the reference tables


def test_dispatch_records_a_21610_opt_out_in_the_hosts_tables(shop, twilio_server):
    with_settings(twilio_api_url=twilio_server.url)
    with Session(shop["engine"]) as session:
        activate_twilio(session)
        session.commit()
    fire(shop)
    twilio_server.unsubscribe("+12125550123")  # Dana replied STOP at Twilio itself
    result = run("dispatch")
    assert "Traceback" not in result.output
    assert person(shop, shop["dana"]).wants_texts is False
    with Session(shop["engine"]) as session:
        assert session.get(OptOut, "+12125550123").source == "twilio_21610"
        dana = [m for m in session.scalars(select(Message)) if m.contact_name == "Dana Birch"]
    # refused by Twilio (21610), or canceled once the opt-out was known: never sent
    assert len(dana) == 2 and {m.status for m in dana} <= {Status.CANCELED, Status.FAILED}
    assert [m.to for m in twilio_server.messages].count("+12125550123") == 0


def test_serve_applies_a_signed_stop_to_the_hosts_contact(shop):
    with Session(shop["engine"]) as session:
        activate_twilio(session)
        session.commit()
    fire(shop)
    client = create_app().test_client()
    # Twilio sends E.164; Dana's mobile was typed "+1 212 555 01 23"
    r = post(client, "inbound", inbound("+12125550123", "STOP", "SM" + "1" * 32))
    assert r.status_code == 200
    assert person(shop, shop["dana"]).wants_texts is False
    with Session(shop["engine"]) as session:
        reply = session.scalar(select(InboundMessage))
        assert reply.contact_refs == shop["dana"] and reply.kind == "stop"
        events = list(session.scalars(select(ConsentEvent)))
        assert [(e.contact_ref, e.action, e.source) for e in events] == [
            (shop["dana"], "opt_out", "sms_reply")
        ]
        dana = [m for m in session.scalars(select(Message)) if m.contact_name == "Dana Birch"]
        assert {m.status for m in dana} == {Status.CANCELED}
    # the same STOP again (another MessageSid): nothing more to record
    assert (
        post(client, "inbound", inbound("+12125550123", "stop", "SM" + "2" * 32)).status_code == 200
    )
    with Session(shop["engine"]) as session:
        assert len(list(session.scalars(select(ConsentEvent)))) == 1


def test_status_is_answered_from_the_hosts_own_orders_and_an_answer_goes_out(shop):
    """Issue 29 with a host's own tables: STATUS through the host's `open_orders()`, and
    staff's answer to a question planned through the host's lookup."""
    import re

    from erp_sms import staff

    with Session(shop["engine"]) as session:
        activate_twilio(session)
        session.commit()
    client = create_app().test_client()
    r = post(client, "inbound", inbound("+12125550123", "Status?", "SM" + "5" * 32))
    said = re.search(rb"<Message>(.*)</Message>", r.data)
    assert said is not None
    assert said.group(1) == b"order SO-2001: invoice INV-9001 due 2026-12-01."
    post(client, "inbound", inbound("+12125550123", "Is it ready?", "SM" + "6" * 32))
    from erp_sms.db import Database

    with Database(shop["url"]).session() as session:
        (reply,) = staff.replies(session)
        out = staff.answer_reply(session, reply.id, "Friday, {{ contact.first_name }}.", by="kim")
    assert "queued for Dana Birch (twilio +12125550123)" in out
    answer = rows(shop)[-1]
    assert (answer.event, answer.body) == (
        "staff_reply",
        "Friday, Dana. Reply STOP to opt out, HELP for help.",
    )


def test_a_paid_reply_waits_for_staff_and_the_host_module_hears_it(shop, caplog):
    """Issue 29 with a host's own tables: "paid" to Shopfloor's payment reminder (an
    event, not a sequence: no step to hold) is kept for a person and told to the host."""
    import logging

    from erp_sms import staff
    from erp_sms.db import Database

    with Session(shop["engine"]) as session:
        activate_twilio(session)
        session.commit()
    fire(shop)
    client = create_app().test_client()
    with caplog.at_level(logging.INFO, logger="shopfloor"):
        post(client, "inbound", inbound("+13125550142", "Paid it yesterday", "SM" + "7" * 32))
    assert "shopfloor: reply #1 (paid) about order SO-2001" in caplog.text
    with Database(shop["url"]).session() as session:
        assert [(r.kind, r.body) for r in staff.replies(session)] == [("paid", "Paid it yesterday")]


def test_retry_plans_a_skipped_text_again_after_staff_fix_the_cause(shop):
    fire(shop, reminder=False)
    dana = next(m for m in rows(shop) if m.contact_name == "Dana Birch")
    assert dana.status == Status.SKIPPED and "needs Twilio" in (dana.reason or "")
    with Session(shop["engine"]) as session:
        activate_twilio(session)
        session.commit()
    out = run("messages", "retry", str(dana.id)).stdout
    assert f"#{dana.id} queued (twilio +12125550123)" in out
    fay = next(m for m in rows(shop) if m.contact_name == "Fay Ash")
    assert f"#{fay.id} still skipped" in run("messages", "retry", str(fay.id)).stdout
    from shopfloor.models import Person

    with Session(shop["engine"]) as session:
        session.get(Person, int(shop["fay"])).mobile = "312-555-0177"
        session.commit()
    assert f"#{fay.id} queued (twilio +13125550177)" in run("messages", "retry", str(fay.id)).stdout
    again = {m.id: m for m in rows(shop)}
    assert again[dana.id].status == again[fay.id].status == Status.QUEUED
    assert again[fay.id].body.startswith("Your order SO-2001")
    err = run("messages", "retry", str(dana.id), "99999", code=2).stderr
    assert "unknown message id(s) 99999: nothing was changed" in err


def test_a_host_module_that_installs_no_lookup_is_a_clear_error(settings, tmp_path, monkeypatch):
    pkg = tmp_path / "lazyhost.py"
    pkg.write_text("import erp_sms\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with_settings(host_module="lazyhost")
    try:
        err = run("options", "show", code=1).stderr
        assert "ERP_SMS_HOST_MODULE=lazyhost installs no recipient lookup" in err
        with_settings(host_module="no_such_host.sms")
        err = run("options", "show", code=1).stderr
        assert "ERP_SMS_HOST_MODULE=no_such_host.sms: no such module" in err
    finally:
        host.unload_host_module()


def test_host_failure_rows_name_each_order(shop, monkeypatch):
    from shopfloor.models import Customer, Order
    from shopfloor.sms import ShopLookup

    with Session(shop["engine"]) as session:
        session.add(Order(order_no="SO-2002", customer=session.get(Customer, 1)))
        session.commit()

    def broken(self, session, order, *, listed_only):
        raise RuntimeError("the host's contacts query failed")

    monkeypatch.setattr(ShopLookup, "contacts", broken)
    host.load_host_module()
    with Session(shop["engine"]) as session:
        for order in session.scalars(select(Order)):
            erp_sms.signals.sent_to_production.send(order, session=session)
        session.commit()
    failed = [m for m in rows(shop) if m.status == Status.FAILED]
    assert sorted(m.order_number for m in failed) == ["SO-2001", "SO-2002"]
    assert all("the host's contacts query failed" in (m.reason or "") for m in failed)


@pytest.mark.slow
def test_erp_sms_serve_as_a_process_uses_the_host_module(shop):
    import os

    from erp_sms.testing import post_signed

    from ..helpers import start_serve

    with Session(shop["engine"]) as session:
        activate_twilio(session)
        session.commit()
    env = {
        **os.environ,
        "ERP_SMS_DATABASE_URL": shop["url"],
        "ERP_SMS_HOST_MODULE": "shopfloor.sms",
        "PYTHONPATH": str(EXAMPLES),
    }
    proc, public = start_serve(env)
    try:
        status = post_signed(
            f"{public}/twilio/inbound", inbound("+12125550123", "STOP", "SM" + "3" * 32), AUTH
        )
        assert status == 200
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert person(shop, shop["dana"]).wants_texts is False, err
    # Issue 29: the host module's receivers heard it, in the serve process (after commit).
    assert "shopfloor: reply #1 (stop) about order None" in err, err
    assert "shopfloor: ***0123 opt_out (sms_reply)" in err, err  # numbers masked in logs


@pytest.mark.slow
def test_the_worker_process_tells_the_host_module_each_status(shop, tmp_path, smtp_sink):
    import subprocess

    from ..helpers import erp_sms_command, worker_env

    fire(shop)
    eli = next(
        m for m in rows(shop) if m.contact_name == "Eli Oak" and m.event == "payment_reminder"
    )
    env = worker_env(tmp_path, shop["url"], "http://127.0.0.1:9", smtp_sink.port, {})
    env.update(ERP_SMS_HOST_MODULE="shopfloor.sms", PYTHONPATH=str(EXAMPLES))
    done = subprocess.run(
        erp_sms_command("-v", "dispatch"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"shopfloor: order SO-2001 text #{eli.id} queued -> sending" in done.stderr
    assert f"shopfloor: order SO-2001 text #{eli.id} sending -> sent" in done.stderr


def test_a_lookup_without_an_optional_method_is_told_which_to_add():
    """Issue 26: the lookup's optional methods are typed Protocols; a lookup without one
    gets a sentence naming the method and what it is for."""
    from erp_sms.errors import ConfigurationError
    from erp_sms.recipients import ErpLookup, FindsOrders, ListsSubjects, optional

    class Minimal:  # the six methods every lookup has, and no optional one
        pass

    with pytest.raises(ConfigurationError) as refused:
        optional(Minimal(), FindsOrders, "preview templates against real orders")
    assert refused.value.message == (
        "the recipient lookup Minimal has no find_order() method: add it to preview "
        "templates against real orders (docs/host-integration.md, 'A host with its own tables')"
    )
    reference = ErpLookup()
    assert optional(reference, ListsSubjects, "retry texts") is reference
