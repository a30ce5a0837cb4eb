"""``erp-sms demo`` / ``make demo``: the whole flow on loopback, with nothing to set up.

Starts an SMTP sink and a Twilio-compatible API on 127.0.0.1, builds sample
organizations, contacts and orders in a SQLite file, fires the four order events (an
order's burst of events folded into one text per contact, SMSDIGESTMINUTES), delivers (first over the carrier gateways, then through Twilio once the TWILIO record is
active), lets the Twilio-compatible server post signed delivery reports and a customer's
STOP reply to erp-sms's own webhooks, runs an SMS dunning schedule (a step before the due
date, on it and after it; one deferred by the send window, one invoice paid), and prints
the email log report.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from . import demo_data, erp, migrate, options, report, rule_records, signals, staff, users
from .channels.twilio import prices
from .config import Settings, get_settings, set_settings
from .db import Database
from .dispatch import Dispatcher
from .models import Message
from .testing import HostReceiver, SmtpSink, TwilioServer, new_secret, post_signed

PEOPLE = [
    # name, email2, opted in
    ("Jordan Smith", "3125550101@vtext.com", True),  # Verizon gateway: works until 2027-03-31
    ("Riley Chen", "312-555-0102", True),  # plain number: needs Twilio
    ("Sam Ortiz", "3125550103@txt.att.net", True),  # AT&T gateway: shut down 2025-06-17
    ("Alex Kim", "3125550104@vtext.com", False),  # no SMSUPDATE: not texted
]


def run_demo(
    database: str | None = None,
    *,
    echo: Callable[[str], None] = print,
    serve_until: threading.Event | None = None,
) -> str:
    """Run the demo; returns the report text it printed. It ends with the staff pages'
    URL and a sign-in; with ``serve_until``, the pages stay up until that event is set
    (``erp-sms demo`` on a terminal: until Ctrl-C)."""
    workdir = tempfile.mkdtemp(prefix="erp-sms-demo-")
    path = database or os.path.join(workdir, "erp_sms_demo.db")
    url = f"sqlite:///{path}"
    previous = get_settings()
    host_secret = new_secret()
    with (
        TwilioServer() as twilio,
        SmtpSink() as sink,
        _webhook_server() as (hook_url, bind),
        HostReceiver(host_secret) as erp_hook,
    ):
        sid = "AC" + secrets.token_hex(16)
        token = secrets.token_hex(16)  # a throwaway secret for the local API only
        twilio.add_account(sid, token)
        settings = replace(
            previous,
            database_url=url,
            smtp_host=sink.host,
            smtp_port=sink.port,
            smtp_security="none",
            smtp_user=None,
            smtp_password=None,
            smtp_from="orders@northwind-machining.example",
            twilio_api_url=twilio.url,
            public_url=hook_url,
            # Signs the texts' short links (and encrypts the AuthCode): a throwaway key.
            secret_key=secrets.token_hex(32),
            inline_dispatch=False,
            # The ERP's own endpoint: it hears each status, reply and opt-out.
            host_webhook_url=erp_hook.url,
            host_webhook_secret=host_secret,
        )
        set_settings(settings)
        db = Database(url)
        bind(db, settings)
        try:
            migrate.upgrade(db.engine)
            echo(f"demo database: {path}")
            echo(f"SMTP sink on {sink.host}:{sink.port}; Twilio-compatible API on {twilio.url}")
            orders = _sample_data(db)
            with db.session() as s:
                # Who we are, and how gateway customers (whose replies nobody reads) opt out.
                options.set_value(s, "SMSCOMPANYNAME", "Northwind Machining", by="demo")
                options.set_value(s, "SMSOPTOUTCONTACT", "312-555-0100", by="demo")
            echo('options: SMSCOMPANYNAME "Northwind Machining", SMSOPTOUTCONTACT 312-555-0100')

            echo("\n1) TWILIO inactive: order events go to carrier gateways by email")
            with db.session() as s:
                for number in orders:
                    o = s.get(erp.SalesOrder, orders[number])
                    signals.sent_to_production.send(o, session=s)
                    for i in (1, 2, 3):  # the shop floor finishes three work orders
                        wo = erp.WorkOrder(
                            number=f"WO-{number[3:]}-{i}", sales_order=o, status="complete"
                        )
                        s.add(wo)
                        s.flush()
                        signals.work_order_completed.send(o, session=s, work_order=wo)
            echo(
                "   4 events per order within a minute fold into one text per contact "
                f"(SMSDIGESTMINUTES {options_default('SMSDIGESTMINUTES')}): it waits for "
                "the order's later events"
            )
            _send_now(db, echo)
            echo("   " + Dispatcher(db, settings).run_once().line())
            echo(f"   SMTP sink received {len(sink.received)} mail(s), e.g.:")
            with db.read_session() as s:
                sample = s.scalars(
                    select(Message).where(Message.channel == "email_gateway").limit(1)
                ).first()
            if sample is not None:
                echo(f"   to {sample.address}: {sample.body}")

            echo("\n2) TWILIO rule set up and active: shipping events go through Twilio")
            with db.session() as s:
                rule_records.set_fields(
                    s,
                    "TWILIO",
                    {
                        "SID": sid,
                        "AuthCode": token,
                        "PhoneNumber": "3125550100",
                        "UseCode": "SMSUPDATE",
                    },
                    active=True,
                    by="demo",
                )
                for number in orders:
                    o = s.get(erp.SalesOrder, orders[number])
                    se = erp.ShippingEvent(
                        sales_order=o,
                        status="Shipped",
                        carrier="UPS",
                        tracking_number=f"1Z999AA1{orders[number]:010d}",
                    )
                    s.add(se)
                    s.flush()
                    signals.shipment_shipped.send(o, session=s, shipping_event=se)
                    se.status = "Delivered"
                    signals.shipment_delivered.send(o, session=s, shipping_event=se)
                # firing again changes nothing: one text per contact and event
                o = s.get(erp.SalesOrder, orders["SO-104233"])
                signals.sent_to_production.send(o, session=s)
            echo("   shipped, then delivered minutes later: one delivered text per contact")
            _send_now(db, echo)
            echo("   " + Dispatcher(db, settings).run_once().line())
            echo(f"   Twilio-compatible API accepted {len(twilio.messages)} message(s)")

            echo(f"\n3) Twilio calls back (signed) to the webhooks at {hook_url}/twilio/…")
            for m in twilio.messages:
                if m.to == "+13125550103":  # Sam's handset is off
                    twilio.deliver(m.sid, "undelivered", error_code=30003)
                else:
                    twilio.deliver(m.sid, "delivered")
            code = post_signed(
                f"{hook_url}/twilio/inbound",
                {
                    "MessageSid": "SM" + secrets.token_hex(16),
                    "AccountSid": sid,
                    "From": "+13125550102",
                    "To": "+13125550100",
                    "Body": "please stop texting me",
                },
                token,
            )
            echo(
                f"   {len(twilio.messages)} delivery reports; Riley replied 'please stop texting me' ({code})"
            )
            echo("   " + prices.reconcile(db, settings).line())
            _answer_a_reply(db, settings, hook_url, sid, token, echo)
            _tap_a_link(db, echo)
            kinds: dict[str, int] = {}
            for e in erp_hook.accepted:
                kinds[e["type"]] = kinds.get(e["type"], 0) + 1
            said = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
            echo(
                f"   the ERP's webhook ({erp_hook.url}) got {len(erp_hook.accepted)} event(s), "
                f"each signature checked with standardwebhooks: {said}"
            )

            from . import timeline

            with db.session() as s:
                riley = s.scalars(select(erp.Contact).where(erp.Contact.name == "Riley Chen")).one()
                echo(f"\nTimeline of contact {riley.id} (erp-sms timeline --contact {riley.id})")
                for entry in timeline.for_contact(s, str(riley.id)):
                    echo("   " + entry.line())

            _dunning_demo(db, orders, echo)

            echo("\nEmail log report\n")
            out = io.StringIO()
            with db.session() as s:
                report.write_table(report.rows(s, report.Filters(), attention_first=True), out)
            echo(out.getvalue())
            password = secrets.token_urlsafe(12)  # this demo database's only sign-in
            with db.session() as s:
                users.add(s, "demo", password, by="demo")
            _doctor(settings, echo)
            env = _env_file(workdir if database is None else os.path.dirname(path), settings)
            if serve_until is not None:
                echo(f"Staff pages: {hook_url}/  — sign in as demo / {password}")
                echo("   serving the pages on the demo data; Ctrl-C to stop")
                serve_until.wait()
            else:
                _tour(env, password, echo)
            return out.getvalue()
        finally:
            db.dispose()
            set_settings(previous)


def _doctor(settings: Settings, echo: Callable[[str], None]) -> None:
    """``erp-sms doctor`` on the demo's setup, while its servers still answer."""
    from .staff import doctor

    echo("\nerp-sms doctor")
    found = doctor.examine(settings)
    for finding in found.findings:
        echo(f"   problem: {finding}")
    if not found.findings:
        echo(f"   no problems found: {'; '.join(found.healthy)}")


def _env_file(folder: str, settings: Settings) -> str:
    """The settings later commands need to read the demo's data, in a file only its owner
    reads (it holds the throwaway key the demo's AuthCode is encrypted with)."""
    path = os.path.join(folder, "demo.env")
    lines = [
        f"ERP_SMS_DATABASE_URL={settings.database_url}",
        "ERP_SMS_HOST_MODULE=erp_sms.demo_host",  # the demo ERP's reminder sequence
        f"ERP_SMS_SECRET_KEY={settings.secret_key}",
        f"ERP_SMS_SMTP_FROM={settings.smtp_from}",
        "ERP_SMS_PUBLIC_URL=http://127.0.0.1:8080",  # where the tour's `serve` listens
    ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _tour(env: str, password: str, echo: Callable[[str], None]) -> None:
    """What to try next on the demo's data (its servers are gone when the demo ends)."""
    echo("\nLook around (the demo's database stays; its settings are in a file):")
    echo(f"   set -a; . {env}; set +a")
    echo("   erp-sms report --status failed,skipped")
    echo("   erp-sms timeline --order SO-104233")
    echo("   erp-sms sequences show dunning")
    echo(
        f"   erp-sms serve --port 8080   # then http://127.0.0.1:8080/, sign in as demo / {password}"
    )


def _answer_a_reply(
    db: Database,
    settings: Settings,
    hook_url: str,
    sid: str,
    token: str,
    echo: Callable[[str], None],
) -> None:
    """Jordan asks a question by text; the office answers it (``erp-sms replies
    answer``) and the answer goes out from the number Jordan wrote to."""
    post_signed(
        f"{hook_url}/twilio/inbound",
        {
            "MessageSid": "SM" + secrets.token_hex(16),
            "AccountSid": sid,
            "From": "+13125550101",
            "To": "+13125550100",
            "Body": "Can you deliver to dock 4?",
        },
        token,
    )
    with db.session() as s:
        (reply,) = staff.replies(s)
        said = staff.answer_reply(s, reply.id, "Yes, dock 4 it is. See you Tuesday.", by="office")
    echo(f"   Jordan asked 'Can you deliver to dock 4?' (reply #{reply.id}); the office answered:")
    echo(f'   erp-sms replies answer {reply.id} --message "Yes, dock 4 it is. See you Tuesday."')
    echo(f"   {said}")
    echo("   " + Dispatcher(db, settings).run_once().line())


def _tap_a_link(db: Database, echo: Callable[[str], None]) -> None:
    """Jordan's delivered text carries the tracking page as a short link: a link preview
    fetches it first (not counted), then Jordan taps it (counted)."""
    import urllib.request

    with db.read_session() as s:
        text = s.scalars(
            select(Message)
            .where(Message.contact_name == "Jordan Smith", Message.link_code.is_not(None))
            .order_by(Message.id)
        ).first()
    if text is None:
        return
    link = next(w for w in text.body.split() if "/l/" in w).rstrip(").,")
    echo(f"   #{text.id} to Jordan: {text.body}")

    class _Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:  # see the 302, do not follow it
            return None

    opener = urllib.request.build_opener(_Stay)
    for agent in ("facebookexternalhit/1.1", "Mozilla/5.0 (iPhone) Mobile/15E148"):
        # The demo's own loopback short link (http, from the text just sent).
        request = urllib.request.Request(link, headers={"User-Agent": agent})  # noqa: S310
        try:
            opener.open(request, timeout=5)
        except urllib.error.HTTPError as exc:  # the 302, not followed
            echo(f"   {agent.split('/')[0]} opened {link}: {exc.code} to {exc.headers['Location']}")
    with db.read_session() as s:
        clicked = s.get(Message, text.id)
        when = clicked.clicked_at if clicked is not None else None
    echo(
        f"   a link preview is not a click; Jordan's tap is: clicked_at {when:%H:%M:%S}"
        if when
        else "   no click recorded"
    )


def options_default(name: str) -> str:
    return options.value_from(name, None)


def _send_now(db: Database, echo: Callable[[str], None]) -> None:
    """The texts that carry others and what they say; then, rather than wait the minutes
    out, staff send them now (``erp-sms messages release ID``)."""
    with db.session() as s:
        carriers = s.scalars(
            select(Message).where(Message.status == "queued").order_by(Message.id)
        ).all()
        for c in carriers:
            merged = s.scalars(select(Message.id).where(Message.merged_into == c.id)).all()
            carries = f"carries #{', #'.join(map(str, merged))}" if merged else "carries none"
            echo(f"   #{c.id} to {c.contact_name} ({carries}): {c.body}")
        ids = [c.id for c in carriers]
        staff.release(s, ids, by="demo")
    echo(f"   (not waiting the minutes out: erp-sms messages release {' '.join(map(str, ids))})")


@contextmanager
def _webhook_server() -> Iterator[tuple[str, Callable[[Database, Settings], None]]]:
    """erp-sms's webhook app on a loopback port, bound to the demo database once known."""
    from flask import Flask
    from waitress import create_server

    from .webhooks import create_app, stop_server

    holder: dict[str, Flask] = {}

    def app(environ: Any, start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    def bind(db: Database, settings: Settings) -> None:
        holder["app"] = create_app(db=db, settings=settings)

    srv = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.effective_port}", bind
    finally:
        stop_server(srv)
        thread.join(timeout=10)


def _dunning_demo(db: Database, ids: dict[str, int], echo: Callable[[str], None]) -> None:
    """Three invoices of Birch & Sons (Casey, a Chicago number) on a dunning schedule,
    started by the office at 21:30 Chicago time — after the send window closed."""
    from .sendwindow import set_clock

    dunning = demo_data.register()
    chicago = ZoneInfo("America/Chicago")
    now = dt.datetime.now(chicago)
    evening = dt.datetime.combine(now.date(), dt.time(21, 30), tzinfo=chicago)
    if evening > now:  # the rows are dated when they were made: never in the future
        evening -= dt.timedelta(days=1)
    today = evening.date()
    echo(
        "\n4) SMS dunning: steps 3 days before, on and 7 days after the due date, started "
        f"{evening:%Y-%m-%d %H:%M} Chicago time (send window 08:00-20:00)"
    )
    soon = demo_data.Invoice(5001, "INV-5001", today + dt.timedelta(days=3), "$1,250.00")
    late = demo_data.Invoice(5002, "INV-5002", today - dt.timedelta(days=5), "$310.00")
    paid = demo_data.Invoice(5003, "INV-5003", today + dt.timedelta(days=10), "$89.50")
    set_clock(lambda: evening)
    try:
        with db.session() as s:
            order = s.get(erp.SalesOrder, ids["SO-104234"])
            for inv in (soon, late, paid):
                dunning.start(order, session=s, anchor=inv.due_date, invoice=inv)
        with db.session() as s:
            order = s.get(erp.SalesOrder, ids["SO-104234"])
            dunning.stop(order, session=s, reason=f"{paid.number} paid", invoice=paid)
    finally:
        set_clock(None)
    with db.session() as s:
        rows = s.scalars(
            select(Message)
            .where(Message.event == "dunning")
            .order_by(Message.subject_ref, Message.step)
        )
        for m in rows:
            when = (
                f"goes {m.next_attempt_at.astimezone(chicago):%Y-%m-%d %H:%M} CT"
                if m.status == "queued" and m.next_attempt_at
                else m.status
            )
            why = f" — {m.reason}" if m.reason else ""
            echo(f"   INV-{m.subject_ref} step {m.step} #{m.id}: {when}{why}")
    echo("   (`erp-sms sequences show dunning` lists what goes out next)")


def _sample_data(db: Database) -> dict[str, int]:
    with db.session() as s:
        acme = erp.Organization(name="Acme Fabrication")
        birch = erp.Organization(name="Birch & Sons")
        people = []
        for name, email2, opted_in in PEOPLE:
            attrs = [erp.ContactAttribute(code=erp.SMSUPDATE)] if opted_in else []
            people.append(
                erp.Contact(name=name, email2=email2, organizations=[acme], attributes=attrs)
            )
        casey = erp.Contact(
            name="Casey Birch",
            email2="+13125550105",
            organizations=[birch],
            attributes=[erp.ContactAttribute(code=erp.SMSUPDATE)],
        )
        o1 = erp.SalesOrder("SO-104233", acme, contact=people[0])
        o2 = erp.SalesOrder("SO-104234", birch, contact=casey)
        s.add_all([o1, o2, *people, casey])
        s.flush()
        return {o1.number: o1.id, o2.number: o2.id}
