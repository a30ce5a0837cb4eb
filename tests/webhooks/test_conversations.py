"""Issue 29: conversations — replies answered by staff from the number the customer wrote
to, keywords beyond STOP/HELP (STATUS, "paid", "wrong number", opt-out words in our
users' customers' languages)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from erp_sms import signals, staff, timeline
from erp_sms.cli import cli
from erp_sms.db import Database
from erp_sms.errors import InputError
from erp_sms.models import ConsentEvent, InboundMessage, Message, OptOut, Status
from erp_sms.webhooks import classify_reply, create_app

from ..conftest import with_settings
from ..helpers import (
    DUNNING,
    PUBLIC,
    Invoice,
    activate_site,
    activate_twilio,
    inbound,
    messages,
    post,
    scene,
)

SITE = "+13125550177"


@pytest.fixture
def client(settings, db: Database, session):
    activate_twilio(session)
    session.commit()
    return create_app(db=db, settings=with_settings(public_url=PUBLIC)).test_client()


@pytest.fixture
def ann(session):
    """Ann (a plain number, through Twilio) of Acme, order SO-7 sent to production."""
    activate_twilio(session)
    session.commit()
    return scene(session, {"ann": ("Ann", "+13125550101")}, order="SO-7", fire=True)


def _reply(client, body: str, n: int, *, to: str | None = None) -> str:
    params = inbound("+13125550101", body, f"SM{n:032d}")
    if to is not None:
        params["To"] = to
    r = post(client, "inbound", params)
    assert r.status_code == 200
    answer = re.search(rb"<Message>(.*)</Message>", r.data)
    return answer.group(1).decode() if answer else ""


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("STOPP", "stop"),
        ("Arrêt", "stop"),
        ("arret", "stop"),
        ("BAJA", "stop"),
        ("cancelar", "stop"),
        ("Parar.", "stop"),
        ("AYUDA", "help"),
        ("Hilfe", "help"),
        ("status", "status"),
        ("Estado?", "status"),
        ("paid", "paid"),
        ("We already paid this last week", "paid"),
        ("paid yesterday", "paid"),
        ("ya pagado", "paid"),
        ("wrong number", "wrong_number"),
        ("Sorry, wrong person", "wrong_number"),
        ("número equivocado", "wrong_number"),
        ("what is the status of my paid invoice?", "reply"),
        ("can you deliver to dock 4?", "reply"),
    ],
)
def test_keywords_in_our_users_customers_languages(body, kind):
    assert classify_reply(body) == kind


def test_a_foreign_stop_word_opts_out_and_a_wrong_number_too_with_its_own_source(
    client, session, ann
):
    _reply(client, "STOPP", 1)
    session.commit()
    assert session.get(OptOut, "+13125550101") is not None
    _reply(client, "START", 2)
    _reply(client, "Wrong number, I am not Ann", 3)
    session.commit()
    sources = session.scalars(select(ConsentEvent.source).order_by(ConsentEvent.id)).all()
    assert sources[-3:] == ["sms_reply", "sms_reply", "wrong_number"]
    assert session.get(OptOut, "+13125550101") is not None
    # It needs a person: it is in the inbox.
    assert [r.kind for r in staff.replies(session)] == ["wrong_number"]


def test_status_answers_with_the_stage_of_open_orders_and_is_rate_limited(client, session, ann):
    # SO-7 is in production (2 work orders, 1 complete); SO-8 was delivered (not open).
    from erp_sms import erp

    so7 = ann.order
    session.add_all(
        [
            erp.WorkOrder(number="WO-1", sales_order=so7, status="complete"),
            erp.WorkOrder(number="WO-2", sales_order=so7, status="open"),
        ]
    )
    so8 = erp.SalesOrder("SO-8", ann.org)
    session.add_all([so8, erp.ShippingEvent(sales_order=so8, status="Delivered")])
    session.commit()
    answer = _reply(client, "STATUS", 1)
    assert answer == "order SO-7: in production, 1 of 2 work orders complete."
    assert [_reply(client, "status", n) for n in (2, 3)] == [answer, answer]
    assert _reply(client, "Status", 4) == ""  # the fourth in an hour: no answer
    session.commit()
    asked = session.scalars(select(InboundMessage).where(InboundMessage.kind == "status"))
    assert len(asked.all()) == 4


class _NoStages:
    """A host lookup without ``open_orders``: STATUS is answered from the texts sent."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        if name == "open_orders":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_status_without_the_hosts_stages_answers_from_the_order_texts(
    client, session, ann, monkeypatch
):
    from erp_sms.conversations import inbound as module
    from erp_sms.recipients import default_lookup

    monkeypatch.setattr(module, "default_lookup", lambda: _NoStages(default_lookup()))
    signals.shipment_shipped.send(
        ann.order,
        session=session,
        shipping_event={"id": 3, "carrier": "UPS", "tracking_number": "1Z3"},
    )
    session.commit()
    assert _reply(client, "STATUS", 1) == "order SO-7: shipped."


def test_a_paid_reply_pauses_that_invoices_reminders_until_staff_release_them(client, session, ann):
    due = dt.date.today() + dt.timedelta(days=10)
    DUNNING.start(ann.order, session=session, anchor=due, invoice=Invoice(77, "INV-77", due))
    DUNNING.start(ann.order, session=session, anchor=due, invoice=Invoice(78, "INV-78", due))
    session.commit()
    steps = [m for m in messages(session) if m.step is not None]
    assert {m.status for m in steps} == {Status.QUEUED}
    # The latest reminder was INV-78's (the one the customer answers).
    _reply(client, "already paid", 1)
    session.commit()
    rows = {(m.subject_ref, m.step): m for m in messages(session) if m.step is not None}
    paused = [m for (ref, _), m in rows.items() if ref == "78"]
    assert {m.status for m in paused} == {Status.HELD}
    assert all(m.reason.startswith("paused: the customer replied 'already paid'") for m in paused)
    assert {m.status for (ref, _), m in rows.items() if ref == "77"} == {Status.QUEUED}
    # The worker's own release of held Twilio texts leaves them alone; staff resume them,
    # each on its own day.
    from erp_sms import outbox

    assert outbox.release_ready(session) == []
    days = {m.id: m.next_attempt_at for m in paused}
    assert staff.release(session, [m.id for m in paused], by="maria") == len(paused)
    session.commit()
    again = [session.get(Message, i) for i in days]
    assert {m.status for m in again} == {Status.QUEUED}
    assert all(
        m.next_attempt_at == days[m.id] for m in again if days[m.id] > dt.datetime.now(dt.UTC)
    )
    assert [r.kind for r in staff.replies(session)] == ["paid"]


def test_an_answer_goes_from_the_number_the_customer_wrote_to_and_lands_on_the_timeline(
    client, session, ann
):
    activate_site(session, SITE)
    session.commit()
    _reply(client, "can you deliver to dock 4?", 1, to=SITE)
    session.commit()
    (reply,) = staff.replies(session)
    said = staff.answer_reply(session, reply.id, "Yes, {{ contact.name }}: dock 4.", by="maria")
    session.commit()
    answer = messages(session)[-1]
    assert said == (
        f"#{answer.id} queued for Ann (twilio +13125550101), 1 segment(s); reply #{reply.id} done"
    )
    assert (answer.event, answer.sender, answer.status) == (
        "staff_reply",
        "TWILIO:WEST",
        Status.QUEUED,
    )
    assert answer.body == "Yes, Ann: dock 4. Reply STOP to opt out, HELP for help."
    assert staff.replies(session) == []  # done
    lines = [e.line() for e in timeline.for_contact(session, str(ann["ann"].id))]
    assert any("can you deliver to dock 4?" in ln for ln in lines)
    assert any(f"#{answer.id} staff_reply → Ann" in ln for ln in lines)
    history = [(e.kind, e.detail) for e in answer.history]
    assert ("note", f"answer to reply #{reply.id}, written by maria") in history
    # The conversation: the order's text, the reply, the answer — newest last.
    turns = staff.conversation(session, "+13125550101")
    assert [(t.ours, t.status) for t in turns][-2:] == [(False, "reply"), (True, "queued")]


def test_an_answer_keeps_to_the_opt_out_list_and_a_number_no_contact_has_is_refused(
    client, session, ann
):
    _reply(client, "hello?", 1)
    post(client, "inbound", inbound("+13125550199", "who is this", "SM" + "9" * 32))
    session.commit()
    stranger, mine = staff.replies(session)
    with pytest.raises(InputError, match="which is no contact's number"):
        staff.answer_reply(session, stranger.id, "Hi", by="maria")
    _reply(client, "STOP", 2)
    session.commit()
    said = staff.answer_reply(session, mine.id, "Sorry to bother you", by="maria")
    assert "skipped" in said and "opted out" in said


def test_replies_cli_lists_answers_and_marks_done(client, session, ann):
    _reply(client, "can you deliver to dock 4?", 1)
    _reply(client, "and call first", 2)
    session.commit()
    first, second = sorted(staff.replies(session), key=lambda r: r.id)
    runner = CliRunner()
    listed = runner.invoke(cli, ["replies", "list"]).stdout
    assert f"#{second.id}" in listed and "Ann  SO-7  reply: and call first" in listed
    out = runner.invoke(cli, ["replies", "answer", str(first.id), "-m", "Will do."])
    assert out.exit_code == 0 and f"reply #{first.id} done" in out.stdout
    assert runner.invoke(cli, ["replies", "done", str(second.id)]).exit_code == 0
    assert runner.invoke(cli, ["replies", "list"]).stdout.strip() == "no replies to answer"
    assert "[done by" in runner.invoke(cli, ["replies", "list", "--all"]).stdout
    bad = runner.invoke(cli, ["replies", "answer", "999999", "-m", "x"])
    assert bad.exit_code == 2 and "no reply #999999" in bad.output and "Traceback" not in bad.output


def _alerts(sink) -> list:
    return [m for m in sink.received if any("office@" in r.lower() for r in m[1])]


def test_replies_that_need_a_person_are_mailed_to_the_alert_address_once(
    client, session, ann, delivery, db, smtp_sink
):
    from erp_sms import options
    from erp_sms.dispatch import Dispatcher

    options.set_value(session, "SMSREPLYALERT", "Office@Example.com", by="test")
    session.commit()
    _reply(client, "can you deliver to dock 4?", 1)
    _reply(client, "HELP", 2)  # answered by erp-sms itself: no mail
    _reply(client, "we already paid this", 3)
    Dispatcher(db).run_once()
    ((_, to, content),) = _alerts(smtp_sink)
    assert to == ["Office@example.com"]
    mail = email.message_from_bytes(content, policy=email.policy.default)
    assert mail["Subject"] == "SMS: 2 customer replies to answer"
    text = mail.get_content()
    assert "can you deliver to dock 4?" in text and "we already paid this" in text
    assert "(paid)" in text and "HELP" not in text
    assert "erp-sms replies answer" in text
    Dispatcher(db).run_once()  # mailed once
    assert len(_alerts(smtp_sink)) == 1


def test_a_relay_that_refuses_the_alert_leaves_it_for_the_next_run(
    client, session, ann, delivery, db, smtp_sink
):
    from erp_sms import options
    from erp_sms.dispatch import Dispatcher
    from erp_sms.dispatch.alerts import RETAKE, mail_replies

    options.set_value(session, "SMSREPLYALERT", "office@example.com", by="test")
    session.commit()
    _reply(client, "call me", 1)
    down = with_settings(smtp_port=1)  # nothing listens there
    assert mail_replies(db, down) == 0
    # Taken by that run: another run leaves it until RETAKE has passed, then mails it.
    later = dt.datetime.now(dt.UTC) + RETAKE + dt.timedelta(seconds=1)
    from erp_sms.config import get_settings

    with_settings(smtp_port=smtp_sink.port)
    assert mail_replies(db, get_settings()) == 0
    assert mail_replies(db, get_settings(), now=later) == 1
    assert any(b"call me" in m[2] for m in smtp_sink.received)
    Dispatcher(db).run_once()
    assert sum(b"call me" in m[2] for m in smtp_sink.received) == 1


@pytest.mark.parametrize("bad", ["not an address", "a@", "@b.com"])
def test_a_bad_alert_address_gets_one_line(bad, session):
    from erp_sms import options

    with pytest.raises(InputError, match="SMSREPLYALERT takes an email address or off"):
        options.set_value(session, "SMSREPLYALERT", bad, by="test")
