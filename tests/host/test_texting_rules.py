"""Issue 13: texting rules on the real rendering path (a signal, the notifier, the rows it
writes): opt-out wording per channel, who sent the text, look-alike characters, and the
most segments a text may take."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from erp_sms import consent_trail, options, signals
from erp_sms.cli import cli
from erp_sms.models import Status, TemplateOverride

from ..factories import SalesOrderFactory, ShippingEventFactory
from ..helpers import Clock, activate_twilio, by_contact, scene

GATEWAY_LINE = "To opt out, call (312) 555-0199."  # conftest.OPT_OUT_CONTACT
TWILIO_LINE = "Reply STOP to opt out, HELP for help."


@pytest.fixture
def world(session: Session) -> dict[str, object]:
    """Ann on a Verizon gateway, Bob on a plain number (Twilio only), one order."""
    people = {"ann": ("Ann", "3125550101@vtext.com"), "bob": ("Bob", "312-555-0102")}
    return scene(session, people, org="Birch & Sons", order="SO-7")


def _override(session: Session, name: str, body: str) -> None:
    session.merge(TemplateOverride(name=name, body=body))
    session.commit()


def _fire(session: Session, order, event=signals.sent_to_production, **kw) -> None:
    event.send(order, session=session, **kw)
    session.commit()


def cli_run(*args: str, code: int = 0):
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == code, (r.stdout, r.stderr)
    return r


# -- opt-out wording per channel ------------------------------------------------------------


def test_a_gateway_text_never_says_reply_stop_but_how_else_to_opt_out(session, world):
    """Found: the default templates said "Reply STOP…" on the email-gateway route too."""
    _fire(session, world["order"])
    ann = by_contact(session)["Ann"]
    assert ann.channel == "email_gateway" and ann.status == Status.QUEUED
    assert "STOP" not in ann.body and "HELP" not in ann.body
    assert ann.body.endswith(GATEWAY_LINE)
    assert ann.segments == 1


def test_a_staff_template_saying_reply_stop_loses_that_sentence_on_gateways(session, world):
    _override(session, "SMS S2P", "Order {{ order.number }} started. Reply STOP to end. Thanks!")
    _fire(session, world["order"])
    assert by_contact(session)["Ann"].body == f"Order SO-7 started. Thanks! {GATEWAY_LINE}"


def test_a_twilio_text_gets_reply_stop_when_its_template_lacks_it(session, world):
    activate_twilio(session)
    session.commit()
    _override(session, "SMS S2P", "Order {{ order.number }} is in production.")
    _fire(session, world["order"])
    rows = by_contact(session)
    assert {m.channel for m in rows.values()} == {"twilio"}
    assert rows["Bob"].body == f"Order SO-7 is in production. {TWILIO_LINE}"
    # A template that says STOP itself is left as written.
    _override(session, "SMS PWOCOMP", "WO {{ work_order.number }} done. Text STOP to quit.")
    from ..factories import WorkOrderFactory

    wo = WorkOrderFactory(sales_order=world["order"], number="WO-1")
    session.add(wo)
    session.flush()
    _fire(session, world["order"], signals.work_order_completed, work_order=wo)
    done = [m for m in by_contact(session).values() if m.event == "work_order_completed"]
    assert {m.body for m in done} == {"WO WO-1 done. Text STOP to quit."}


def test_the_opt_out_line_counts_in_the_segments(session, world):
    activate_twilio(session)
    session.commit()
    # 140 characters: one segment alone, two with the Twilio line.
    _override(session, "SMS S2P", "x" * 140)
    _fire(session, world["order"])
    bob = by_contact(session)["Bob"]
    assert len(bob.body) == 140 + 1 + len(TWILIO_LINE) and bob.segments == 2


def test_without_smsoptoutcontact_gateway_texts_are_skipped_with_the_fix(session, world):
    options.set_value(session, "SMSOPTOUTCONTACT", "", by="test")
    session.commit()
    _fire(session, world["order"])
    ann = by_contact(session)["Ann"]
    assert ann.status == Status.SKIPPED and "SMSOPTOUTCONTACT" in ann.reason
    assert "FCC" in ann.reason
    # Staff set it, retry: the text goes out with the line.
    cli_run("options", "set", "SMSOPTOUTCONTACT", "https://birch.example/stop")
    out = cli_run("messages", "retry", str(ann.id)).stdout
    assert f"#{ann.id} queued" in out
    ann = by_contact(session)["Ann"]
    assert ann.body.endswith("To opt out: https://birch.example/stop")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SMSMAXSEGMENTS", "0", "SMSMAXSEGMENTS takes a whole number from 1 to 10, not '0'"),
        ("SMSMAXSEGMENTS", "three", "SMSMAXSEGMENTS takes a whole number from 1 to 10"),
        ("SMSTOOLONG", "split", "SMSTOOLONG takes shorten or fail, not 'split'"),
        ("SMSLOOKALIKES", "maybe", "SMSLOOKALIKES takes on or off, not 'maybe'"),
    ],
)
def test_the_texting_rule_options_refuse_bad_values_in_one_line(session, name, value, says):
    err = cli_run("options", "set", name, value, code=2).stderr
    assert err.count("\n") == 1 and says in err


def test_smsoptoutcontact_takes_a_phone_number_or_a_web_address(session):
    assert options.set_value(session, "SMSOPTOUTCONTACT", "(312) 555-0100") == "+13125550100"
    assert options.set_value(session, "SMSOPTOUTCONTACT", "https://x.example/stop").startswith(
        "https://"
    )
    err = cli_run("options", "set", "SMSOPTOUTCONTACT", "call us", code=2).stderr
    assert err.count("\n") == 1 and "a phone number (e.g. 312-555-0100) or a web address" in err


# -- who sent it -------------------------------------------------------------------------------


def test_the_default_texts_start_with_our_company_name(session, world):
    """Found: the default texts started with the customer's company name."""
    options.set_value(session, "SMSCOMPANYNAME", "Northwind Machining", by="test")
    session.commit()
    _fire(session, world["order"])
    body = by_contact(session)["Ann"].body
    assert body.startswith("Northwind Machining: your order SO-7") and "Birch" not in body


def test_the_template_check_warns_when_no_company_name_is_set(session):
    out = cli_run("templates", "list").stdout
    assert "SMSCOMPANYNAME is not set" in out
    cli_run("options", "set", "SMSCOMPANYNAME", "Northwind Machining")
    assert "SMSCOMPANYNAME is not set" not in cli_run("templates", "list").stdout


# -- look-alike characters ----------------------------------------------------------------------


def test_look_alikes_become_gsm7_unless_staff_turn_it_off(session, world):
    _override(
        session,
        "SMS S2P",
        "Order {{ order.number }} \u2014 it\u2019s \u201cin\u201d\u00a0production\u2026",
    )
    _fire(session, world["order"])
    ann = by_contact(session)["Ann"]
    assert ann.body.startswith('Order SO-7 - it\'s "in" production...')
    assert ann.encoding == "GSM-7"
    options.set_value(session, "SMSLOOKALIKES", "off", by="test")
    session.commit()
    order2 = SalesOrderFactory(number="SO-8", organization=world["order"].organization)
    session.add(order2)
    session.commit()
    _fire(session, order2)
    ann2 = [m for m in by_contact(session).values() if m.order_number == "SO-8"]
    assert ann2 and ann2[0].encoding == "UCS-2" and "\u2014" in ann2[0].body


# -- most segments per text -----------------------------------------------------------------------


def test_a_template_over_smsmaxsegments_is_refused_at_save(session, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Order {{ order.number }}: " + "all good here. " * 40)
    err = cli_run("templates", "set", "SMS S2P", "--file", str(f), code=2).stderr
    assert "SMSMAXSEGMENTS allows 3" in err and err.count("\n") == 1
    assert session.get(TemplateOverride, "SMS S2P") is None
    cli_run("options", "set", "SMSMAXSEGMENTS", "5")
    assert "SMS S2P" in cli_run("templates", "set", "SMS S2P", "--file", str(f)).stdout


def _long_shipping(session, world):
    """A shipment whose carrier name (the host's data) is absurdly long."""
    se = ShippingEventFactory(
        sales_order=world["order"], carrier="Freight " * 80, tracking_number="1Z999AA10123456784"
    )
    session.add(se)
    session.flush()
    _fire(session, world["order"], signals.shipment_shipped, shipping_event=se)
    return by_contact(session)["Ann"]


def test_data_that_makes_a_text_too_long_is_shortened_keeping_the_tracking_number(session, world):
    ann = _long_shipping(session, world)
    assert ann.status == Status.QUEUED and ann.segments <= 3
    assert "..." in ann.body and "1Z999AA10123456784" in ann.body
    assert ann.body.endswith(GATEWAY_LINE)


def test_or_failed_with_the_reason_when_staff_choose_so(session, world):
    options.set_value(session, "SMSTOOLONG", "fail", by="test")
    session.commit()
    ann = _long_shipping(session, world)
    assert ann.status == Status.FAILED
    assert "SMSMAXSEGMENTS allows 3" in ann.reason and "SMSTOOLONG is fail" in ann.reason


# -- the consent trail --------------------------------------------------------------------------


def test_every_opt_in_and_opt_out_is_in_the_trail_staff_export(settings, db, session, world):
    """STOP and START replies, staff on the CLI and the pages, the host, an import: each
    an event with time, source, who and number; `contacts consent` shows one contact's,
    `report --consent` exports everyone's as CSV or JSON."""
    import csv
    import io
    import json

    from erp_sms import consent, staff
    from erp_sms.webhooks import create_app

    from ..conftest import with_settings
    from ..helpers import PUBLIC, inbound, post

    activate_twilio(session)
    session.commit()
    ann, bob = str(world["ann"].id), str(world["bob"].id)
    # A consent Bob gave on paper in October, imported (he is opted in already: recorded).
    f = io.StringIO("contact,date,source,note\n" + f"{bob},2026-10-03,paper form,signed\n")
    assert consent_trail.import_opt_ins(session, csv.DictReader(f), by="tests").recorded == 1
    session.commit()
    client = create_app(db=db, settings=with_settings(public_url=PUBLIC)).test_client()
    assert (
        post(client, "inbound", inbound("+13125550102", "STOP", "SM" + "1" * 32)).status_code == 200
    )
    assert (
        post(client, "inbound", inbound("+13125550102", "START", "SM" + "2" * 32)).status_code
        == 200
    )
    cli_run("contacts", "opt-out", ann, "--note", "asked by phone")
    staff.change_consent(session, ann, True, by="maria", source="pages", note="at the counter")
    consent.opt_out(session, contact_key=bob, source="host", detail="ERP form")
    session.commit()

    shown = cli_run("contacts", "consent", bob).stdout
    assert shown.splitlines()[0].startswith("consent trail of Bob")
    lines = [ln.split()[1:3] for ln in shown.splitlines()[1:]]
    assert lines == [
        ["opt_in", "import"],  # given on 2026-10-03, in the trail at that date
        ["opt_out", "sms_reply"],
        ["opt_in", "sms_reply"],
        ["opt_out", "host"],
    ]
    rows = list(
        csv.DictReader(io.StringIO(cli_run("report", "--consent", "--format", "csv").stdout))
    )
    assert tuple(rows[0]) == consent_trail.TRAIL_COLUMNS
    assert {(r["contact_name"], r["action"], r["source"]) for r in rows} >= {
        ("Ann", "opt_out", "cli"),
        ("Ann", "opt_in", "pages"),
        ("Bob", "opt_out", "host"),
        ("Bob", "opt_in", "import"),
    }
    pages = next(r for r in rows if r["source"] == "pages")
    # A cell never starts with + (a spreadsheet formula): the number as text.
    assert pages["actor"] == "maria" and pages["number"] == "'+13125550101"
    assert pages["detail"] == "at the counter" and pages["at"].endswith("+00:00")
    imported = next(r for r in rows if r["source"] == "import")
    assert imported["at"].startswith("2026-10-03") and "paper form" in imported["detail"]
    only_ann = json.loads(
        cli_run("report", "--consent", "--contact", ann, "--format", "json").stdout
    )
    assert [(r["action"], r["source"]) for r in only_ann] == [
        ("opt_out", "cli"),
        ("opt_in", "pages"),
    ]
    err = cli_run("report", "--consent", "--status", "sent", code=2).stderr
    assert "--consent takes --since, --until and --contact only" in err


def test_an_import_checks_every_row_first_and_never_overrides_a_later_opt_out(
    session, world, tmp_path
):
    ann = str(world["ann"].id)
    f = tmp_path / "in.csv"
    f.write_text(f"contact,date,source\n{ann},2026-10-03,web form\n999,2026-10-04,web form\n")
    err = cli_run("contacts", "import", str(f), code=2).stderr
    assert "line 3: no contact '999'; nothing was imported" in err
    f.write_text(f"contact,date,source\n{ann},03/10/2026,web form\n")
    assert "is not a date: use YYYY-MM-DD" in cli_run("contacts", "import", str(f), code=2).stderr
    f.write_text("who,date\n1,2026-10-03\n")
    assert "no contact column" in cli_run("contacts", "import", str(f), code=2).stderr
    from erp_sms.models import ConsentEvent

    assert session.query(ConsentEvent).count() == 0
    # Ann opted out today; a paper form from October does not opt her back in.
    cli_run("contacts", "opt-out", ann)
    f.write_text(f"contact,date,source\n{ann},2026-10-03,paper form\n")
    out = cli_run("contacts", "import", str(f)).stdout
    assert "not applied — they opted out on" in out and "0 consent(s) recorded" in out
    session.commit()  # end the read snapshot: the CLI wrote since
    session.expire_all()
    assert not world["ann"].has_attribute("SMSUPDATE")


# -- carrier gateway health ---------------------------------------------------------------------


@pytest.fixture
def clock():
    from erp_sms.sendwindow import set_clock

    c = Clock("2027-02-15T15:00:00")  # 44 days before Verizon's 2027-03-31
    set_clock(c)
    yield c
    set_clock(None)


def test_every_dated_carrier_names_its_source():
    from erp_sms.catalog import carriers

    for c in carriers():
        assert c.source, c.name
        if c.sunset is not None:
            assert "http" in c.source or "DESIGN.md" in c.source, c.name


def test_within_90_days_of_a_sunset_texts_go_out_flagged(delivery, db, session, world, clock):
    from erp_sms.dispatch import Dispatcher

    _fire(session, world["order"])
    assert Dispatcher(db).run_once().counts["sent"] == 1
    ann = by_contact(session)["Ann"]
    assert ann.status == Status.SENT
    ann.created_at = clock.now  # logged on the clock's day (the log stamps real time)
    session.commit()
    out = cli_run("report").stdout
    assert (
        "warning: 1 gateway text(s) to Verizon within 90 days of its gateway's shutdown on "
        "2027-03-31" in out
    )
    shown = cli_run("contacts", "gateways").stdout
    assert "44 day(s) left, texts to it are flagged" in shown


def test_on_and_after_the_sunset_nothing_is_mailed_there(
    delivery, db, session, world, clock, smtp_sink
):
    import datetime as dt

    from erp_sms.dispatch import Dispatcher

    # Queued the day before the sunset, claimed the day after: never mailed (the dispatcher
    # routes it again when it claims it), skipped with the carrier and the date.
    clock.now = dt.datetime(2027, 3, 30, 15, tzinfo=dt.UTC)
    _fire(session, world["order"])
    assert by_contact(session)["Ann"].status == Status.QUEUED, by_contact(session)["Ann"].reason
    clock.now = dt.datetime(2027, 4, 1, 15, tzinfo=dt.UTC)
    Dispatcher(db).run_once()
    ann = by_contact(session)["Ann"]
    assert ann.status == Status.SKIPPED and "Verizon shut down" in ann.reason, ann.reason
    assert "2027-03-31" in ann.reason and smtp_sink.received == []
    # Planned after the sunset: skipped with the carrier and the date.
    order2 = SalesOrderFactory(number="SO-9", organization=world["order"].organization)
    session.add(order2)
    session.commit()
    _fire(session, order2)
    late = [m for m in by_contact(session).values() if m.order_number == "SO-9"]
    assert late[0].status == Status.SKIPPED
    assert "Verizon shut down its email-to-SMS gateway on 2027-03-31" in late[0].reason
