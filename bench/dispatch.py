"""Dispatch throughput to the loopback SMTP sink and Twilio-compatible API (50 ms of
added latency per request), with baselines measured in the same run:

- SMTP: plain smtplib reusing one connection (the floor), and one connection per message
  (what a notifier object per message does, e.g. Apprise's email plugin);
- Twilio: the twilio client creating messages one after another (a synchronous sender,
  as in Frappe's notification save)."""

from __future__ import annotations

import smtplib
import time
from dataclasses import replace
from email.message import EmailMessage

from sqlalchemy.orm import Session

from erp_sms import erp, rule_records, signals
from erp_sms.config import DispatchSettings, Settings, set_settings
from erp_sms.db import Database
from erp_sms.dispatch import Dispatcher
from erp_sms.testing import SmtpSink, TwilioServer

from .common import fresh, sqlite_url

N_SMTP = 400
N_TWILIO = 200
LATENCY = 0.05
SID, TOKEN = "AC" + "1" * 32, "2" * 32


def _queue(url: str, n: int, gateway: bool) -> None:
    engine = fresh(url)
    with Session(engine) as s:
        for i in range(n):
            org = erp.Organization(name=f"Org {i}")
            addr = f"312{i:07d}@vtext.com" if gateway else f"+1312{i:07d}"
            c = erp.Contact(
                name=f"C{i}",
                email2=addr,
                organizations=[org],
                attributes=[erp.ContactAttribute(code=erp.SMSUPDATE)],
            )
            o = erp.SalesOrder(f"SO-{i}", org, contact=c)
            s.add(o)
        if not gateway:
            rule_records.set_fields(
                s,
                "TWILIO",
                {"SID": SID, "AuthCode": TOKEN, "PhoneNumber": "3125550100"},
                active=True,
            )
        s.flush()
        for o in s.query(erp.SalesOrder):
            signals.sent_to_production.send(o, session=s)
        s.commit()
    engine.dispose()


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def smtp_bench() -> None:
    with SmtpSink() as sink:

        def mail(i: int) -> EmailMessage:
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = "o@example.com", f"312{i:07d}@vtext.com", ""
            m.set_content("Acme: order SO-1 has gone into production. Reply STOP to opt out.")
            return m

        t0 = time.perf_counter()
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            for i in range(N_SMTP):
                smtp.send_message(mail(i))
        reuse = _rate(N_SMTP, time.perf_counter() - t0)

        t0 = time.perf_counter()
        for i in range(N_SMTP // 4):
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                smtp.send_message(mail(i))
        per_msg = _rate(N_SMTP // 4, time.perf_counter() - t0)

        url = sqlite_url()
        _queue(url, N_SMTP, gateway=True)
        settings = Settings(
            database_url=url, smtp_host=sink.host, smtp_port=sink.port, smtp_from="o@example.com"
        )
        set_settings(settings)
        db = Database(url)
        t0 = time.perf_counter()
        summary = Dispatcher(db, settings).run_once()
        ours = _rate(summary.counts["sent"], time.perf_counter() - t0)
        db.dispose()
        assert summary.counts["sent"] == N_SMTP, summary.line()
    print(f"dispatch to the SMTP sink ({N_SMTP} texts, SQLite outbox)")
    print(f"  erp-sms dispatch                   {ours:7.0f} msg/s")
    print(
        f"  smtplib, one reused connection     {reuse:7.0f} msg/s   ratio erp-sms/this {ours / reuse:5.2f}"
    )
    print(
        f"  smtplib, a connection per message  {per_msg:7.0f} msg/s   ratio erp-sms/this {ours / per_msg:5.2f}"
    )


def twilio_bench() -> None:
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    with TwilioServer(latency=LATENCY) as api:
        api.add_account(SID, TOKEN)
        client = Client(
            SID,
            TOKEN,
            http_client=TwilioHttpClient(timeout=10),
            environment={"TWILIO_REGION": "", "TWILIO_EDGE": ""},
        )
        client.api.base_url = api.url
        n_seq = 40
        t0 = time.perf_counter()
        for i in range(n_seq):
            client.messages.create(to=f"+1312{i:07d}", from_="+13125550100", body="hello")
        sequential = _rate(n_seq, time.perf_counter() - t0)
        print(
            f"dispatch to the Twilio-compatible API ({N_TWILIO} texts, {LATENCY * 1000:.0f} ms added latency)"
        )
        print(f"  twilio client, one at a time       {sequential:7.1f} msg/s")
        for concurrency in (1, 4, 8):
            url = sqlite_url()
            _queue(url, N_TWILIO, gateway=False)
            settings = Settings(
                database_url=url,
                twilio_api_url=api.url,
                dispatch=replace(DispatchSettings(), concurrency=concurrency),
            )
            set_settings(settings)
            db = Database(url)
            t0 = time.perf_counter()
            summary = Dispatcher(db, settings).run_once()
            ours = _rate(summary.counts["sent"], time.perf_counter() - t0)
            db.dispose()
            assert summary.counts["sent"] == N_TWILIO, summary.line()
            print(
                f"  erp-sms dispatch, concurrency {concurrency}    {ours:7.1f} msg/s   ratio erp-sms/sequential {ours / sequential:5.2f}"
            )


def main() -> None:
    smtp_bench()
    print()
    twilio_bench()
