"""Issue 30: consent per program — a customer keeps order updates and drops payment
reminders (or the other way round); a STOP still stops everything. Planned, claimed and
handed over by the same rule, on every database."""

from __future__ import annotations

import datetime as dt

from click.testing import CliRunner
from sqlalchemy import select

from erp_sms import consent, consent_trail, signals
from erp_sms.cli import cli
from erp_sms.dispatch import Dispatcher
from erp_sms.models import ConsentEvent, Message, OptOut, ProgramOptOut, Status

from ..helpers import DUNNING, Invoice, scene

ANN = "+13125550101"


def _look_again(session) -> None:
    session.rollback()
    session.expire_all()


def _rows(session) -> list[Message]:
    _look_again(session)
    return list(session.scalars(select(Message).order_by(Message.id)))


def _due() -> dt.date:
    return dt.date.today() + dt.timedelta(days=10)


def test_out_of_reminders_keeps_order_updates(any_delivery, any_db, host):
    made = scene(host, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-P1")
    ann = str(made["ann"].id)
    consent.opt_out(host, contact_key=ann, source="staff", program="reminders")
    host.commit()
    signals.sent_to_production.send(made.order, session=host)
    DUNNING.start(made.order, session=host, anchor=_due(), invoice=Invoice(1, "INV-1", _due()))
    host.commit()
    rows = _rows(host)
    order_text = next(m for m in rows if m.event == "sent_to_production")
    steps = [m for m in rows if m.step is not None]
    assert (order_text.status, order_text.program) == (Status.QUEUED, "orders")
    assert {m.status for m in steps} == {Status.SKIPPED} and {m.program for m in steps} == {
        "reminders"
    }
    assert steps[0].reason.startswith(f"{ANN} opted out of payment reminders on ")
    # SMSUPDATE and the list of all programs are left alone.
    assert host.get(OptOut, ANN) is None
    (trail,) = host.scalars(select(ConsentEvent)).all()
    assert (trail.action, trail.program) == ("opt_out", "reminders")
    assert consent_trail.trail(host)[0]["program"] == "reminders"


def test_an_opt_out_of_one_program_cancels_its_waiting_texts_only(any_delivery, any_db, host):
    made = scene(host, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-P2")
    signals.sent_to_production.send(made.order, session=host)
    DUNNING.start(made.order, session=host, anchor=_due(), invoice=Invoice(2, "INV-2", _due()))
    host.commit()
    done = consent.opt_out(host, number=ANN, source="staff", program="orders")
    host.commit()
    rows = _rows(host)
    order_text = next(m for m in rows if m.event == "sent_to_production")
    assert done.canceled == [order_text.id] and order_text.status == Status.CANCELED
    assert "opted out of order updates" in order_text.reason
    assert {m.status for m in rows if m.step is not None} == {Status.QUEUED}


def test_the_worker_checks_the_program_when_it_claims(any_delivery, any_db, host):
    """Opted out of orders after the text was queued but before the worker took it, by
    a path that cancels nothing (a row written straight to the list): the claim still
    keeps it from going out."""
    made = scene(host, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-P3")
    signals.sent_to_production.send(made.order, session=host)
    host.commit()
    host.add(ProgramOptOut(number=ANN, program="orders", source="test"))
    host.commit()
    assert Dispatcher(any_db).run_once().counts.get("sent") is None
    (text,) = _rows(host)
    assert text.status == Status.CANCELED
    host.delete(host.get(ProgramOptOut, (ANN, "orders")))
    host.add(ProgramOptOut(number=ANN, program="reminders", source="test"))
    host.commit()
    signals.sent_to_production.send(
        scene(host, {"bo": ("Bo", "3125550101@vtext.com")}, org="B", order="SO-P4").order,
        session=host,
    )
    host.commit()
    assert Dispatcher(any_db).run_once().counts.get("sent") == 1  # another program's


def test_stop_stops_all_and_an_opt_in_to_one_program_keeps_the_others_out(
    any_delivery, any_db, host
):
    made = scene(host, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-P5")
    ann = str(made["ann"].id)
    consent.opt_out(host, number=ANN, source="sms_reply")  # a STOP: everything
    host.commit()
    consent.opt_in(host, contact_key=ann, source="staff", program="orders")
    host.commit()
    _look_again(host)
    assert host.get(OptOut, ANN) is None
    assert sorted(p.program for p in host.scalars(select(ProgramOptOut))) == [
        "reminders",
        "staff",
    ]
    signals.sent_to_production.send(made.order, session=host)
    DUNNING.start(made.order, session=host, anchor=_due(), invoice=Invoice(5, "INV-5", _due()))
    host.commit()
    rows = _rows(host)
    assert next(m for m in rows if m.event == "sent_to_production").status == Status.QUEUED
    assert {m.status for m in rows if m.step is not None} == {Status.SKIPPED}


def test_the_cli_opts_out_of_one_program_and_says_so(session):
    made = scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-P6")
    ann = str(made["ann"].id)
    run = CliRunner()
    out = run.invoke(cli, ["contacts", "opt-out", ann, "--program", "reminders"])
    assert out.exit_code == 0, out.output
    assert "opted out of payment reminders (other texts still come)" in out.stdout
    again = run.invoke(cli, ["contacts", "opt-out", ann, "--program", "reminders"]).stdout
    assert "was already opted out of payment reminders; nothing changed" in again
    bad = run.invoke(cli, ["contacts", "opt-out", ann, "--program", "promos"])
    assert bad.exit_code == 2 and "'promos' is not one of 'orders', 'reminders', 'staff'" in (
        bad.output
    )
    back = run.invoke(cli, ["contacts", "opt-in", ann, "--program", "reminders"]).stdout
    assert "opted in to payment reminders" in back


def test_the_consent_import_takes_an_optional_program_column(session):
    import csv
    import io

    import pytest

    from erp_sms.errors import InputError

    made = scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-P7")
    ann = str(made["ann"].id)
    consent.opt_out(session, number=ANN, source="sms_reply")  # a STOP in October
    for event in session.scalars(select(ConsentEvent)):
        event.at = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    session.commit()
    rows = io.StringIO(f"contact,date,source,program\n{ann},{dt.date.today()},web form,orders\n")
    done = consent_trail.import_opt_ins(session, csv.DictReader(rows), by="tests")
    session.commit()
    assert done.recorded == 1
    assert sorted(p.program for p in session.scalars(select(ProgramOptOut))) == [
        "reminders",
        "staff",
    ]
    assert consent_trail.trail(session)[-1]["program"] == "orders"
    bad = io.StringIO(f"contact,date,source,program\n{ann},2026-10-03,form,promos\n")
    with pytest.raises(InputError, match="line 2: program 'promos': use orders, reminders, staff"):
        consent_trail.import_opt_ins(session, csv.DictReader(bad), by="tests")


def test_each_text_sent_says_what_consent_it_was_sent_under(any_delivery, any_db, host):
    """Issue 30: an auditor asks "why were we allowed to send this one?" — the last
    opt-in before it was sent, or the contact's SMSUPDATE when erp-sms recorded none."""
    first = scene(host, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-E1")
    second = scene(host, {"bo": ("Bo", "3125550102@vtext.com")}, org="B", order="SO-E2")
    bo = str(second["bo"].id)
    consent.opt_out(host, contact_key=bo, source="staff")
    consent.opt_in(host, contact_key=bo, source="import", detail="signed form")
    host.commit()
    for made in (first, second):
        signals.sent_to_production.send(made.order, session=host)
    host.commit()
    assert Dispatcher(any_db).run_once().counts.get("sent") == 2
    _look_again(host)
    rows = {r["contact_name"]: r for r in consent_trail.evidence(host)}
    assert rows["Ann"]["consent"] == "SMSUPDATE on the contact in the ERP"
    assert (rows["Bo"]["consent"], rows["Bo"]["consent_source"]) == ("opt-in recorded", "import")
    assert rows["Bo"]["consent_event_id"] and rows["Bo"]["program"] == "orders"
    assert tuple(rows["Ann"]) == consent_trail.EVIDENCE_COLUMNS


def test_the_cli_exports_the_consent_evidence(session):
    out = CliRunner().invoke(cli, ["report", "--consent-evidence", "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0] == ",".join(consent_trail.EVIDENCE_COLUMNS)
    bad = CliRunner().invoke(cli, ["report", "--consent-evidence", "--order", "SO-1"])
    assert bad.exit_code == 2 and "--consent-evidence takes --since, --until and --contact" in (
        bad.output
    )
