"""Dispatch throughput against peers measured in the same run (medians of ``RUNS``).

- SMTP: 5,000 gateway texts to the loopback sink; peers: Apprise's e-mail plugin (one
  notification per text, its throttle off) and smtplib on one reused connection (the
  limit of the sink and the client).
- Twilio: 2,000 texts to the loopback Twilio-compatible API with 50 ms added latency;
  peers: Apprise's Twilio plugin (its throttle off), the twilio client sequentially and
  in as many threads as erp-sms has texts in flight (alternated with erp-sms).
- Twilio against an account that allows 4 requests in flight, erp-sms at 8: 429s,
  texts failed, and the rate against the rate at the server's limit (4 / 50 ms)."""

from __future__ import annotations

import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from email.message import EmailMessage
from typing import Any

from sqlalchemy.orm import Session

from erp_sms import rule_records
from erp_sms.config import DispatchSettings, Settings, set_settings
from erp_sms.db import Database
from erp_sms.dispatch import Dispatcher

from .common import (
    SID,
    TOKEN,
    databases,
    fresh,
    median,
    new_url,
    queue_texts,
    smtp_sink,
    twilio_api,
    twilio_client,
)

RUNS = 3
N_SMTP, N_SMTP_PEER = 5000, 300
N_TWILIO, N_TWILIO_PEER = 2000, 150
N_LIMITED = 1000
LATENCY = 0.05
BODY = (
    "Acme Fabrication: your order SO-100001 has shipped via UPS, tracking "
    "1Z999AA10123456784. Reply STOP to opt out."
)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def _ours(url: str, settings: Settings, n: int, gateway: bool) -> tuple[float, dict[str, int]]:
    engine = fresh(url)
    queue_texts(engine, n, gateway=gateway)
    if not gateway:
        with Session(engine) as s:
            rule_records.set_fields(
                s,
                "TWILIO",
                {"SID": SID, "AuthCode": TOKEN, "PhoneNumber": "3125550100"},
                active=True,
            )
            s.commit()
    engine.dispose()
    settings = replace(settings, database_url=url)
    set_settings(settings)
    db = Database(url)
    t0 = time.perf_counter()
    summary = Dispatcher(db, settings).run_once()
    rate = _rate(summary.counts["sent"], time.perf_counter() - t0)
    db.dispose()
    return rate, dict(summary.counts)


def _apprise_classes() -> tuple[Any, Any]:
    import apprise  # the bench environment only (make bench installs it)
    from apprise.plugins.email import NotifyEmail
    from apprise.plugins.twilio import NotifyTwilio

    # Apprise throttles each plugin by default (0.2 s a request); off, to measure its
    # sending, not its politeness.
    NotifyEmail.request_rate_per_sec = 0
    NotifyTwilio.request_rate_per_sec = 0
    return apprise, NotifyTwilio


def smtp() -> list[dict[str, Any]]:
    apprise, _ = _apprise_classes()
    out: list[dict[str, Any]] = []
    with smtp_sink() as sink:

        def mail(i: int) -> EmailMessage:
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = "o@example.com", f"312555{i:04d}@vtext.com", ""
            m.set_content(BODY)
            return m

        def limit() -> float:
            t0 = time.perf_counter()
            with smtplib.SMTP(sink.host, sink.port) as conn:
                for i in range(N_SMTP):
                    conn.send_message(mail(i))
            return _rate(N_SMTP, time.perf_counter() - t0)

        def peer() -> float:
            a = apprise.Apprise()
            a.add(
                f"mailto://{sink.host}:{sink.port}?from=o@example.com&smtp={sink.host}"
                "&mode=insecure&to=3125550001@vtext.com"
            )
            t0 = time.perf_counter()
            for _ in range(N_SMTP_PEER):
                a.notify(body=BODY)
            return _rate(N_SMTP_PEER, time.perf_counter() - t0)

        smtplib_rate = median([limit() for _ in range(RUNS)])
        apprise_rate = median([peer() for _ in range(RUNS)])
        settings = Settings(smtp_host=sink.host, smtp_port=sink.port, smtp_from="o@example.com")
        for db_name in databases():
            rates = []
            for _ in range(RUNS):
                rate, counts = _ours(new_url(db_name), settings, N_SMTP, gateway=True)
                assert counts.get("sent") == N_SMTP, counts
                rates.append(rate)
            ours = median(rates)
            out.append(
                {
                    "work": f"SMTP dispatch, {N_SMTP:,} gateway texts, {db_name}",
                    "peers": f"Apprise {apprise_rate:.1f} msg/s; smtplib one connection "
                    f"{smtplib_rate:.0f} msg/s (the limit)",
                    "ours": f"{ours:.0f} msg/s: {ours / apprise_rate:.1f}x Apprise, "
                    f"{ours / smtplib_rate:.2f}x the limit",
                    "target": ">= 15x Apprise and >= 0.8x the limit",
                    "met": ours >= 15 * apprise_rate and ours >= 0.8 * smtplib_rate,
                }
            )
    return out


def twilio() -> list[dict[str, Any]]:

    apprise, notify_twilio = _apprise_classes()
    out: list[dict[str, Any]] = []
    with twilio_api(LATENCY) as api:
        notify_twilio.notify_sms_url = api.url + "/2010-04-01/Accounts/{sid}/Messages.json"

        def sequential() -> float:
            client = twilio_client(api.url)
            t0 = time.perf_counter()
            for i in range(N_TWILIO_PEER):
                client.messages.create(to=f"+1312555{i:04d}", from_="+13125550100", body=BODY)
            return _rate(N_TWILIO_PEER, time.perf_counter() - t0)

        def peer() -> float:
            a = apprise.Apprise()
            a.add(f"twilio://{SID}:{TOKEN}@13125550100/13125550001")
            t0 = time.perf_counter()
            for _ in range(N_TWILIO_PEER):
                a.notify(body=BODY)
            return _rate(N_TWILIO_PEER, time.perf_counter() - t0)

        default = DispatchSettings().concurrency

        def threaded() -> float:
            """The twilio client at erp-sms's concurrency: a client per thread (the
            fair peer — the sequential one waits out every 50 ms alone)."""
            clients = [twilio_client(api.url) for _ in range(default)]

            def send(k: int) -> None:
                for i in range(k, N_TWILIO, default):
                    clients[k].messages.create(
                        to=f"+1312555{i % 10000:04d}", from_="+13125550100", body=BODY
                    )

            t0 = time.perf_counter()
            with ThreadPoolExecutor(default) as pool:
                list(pool.map(send, range(default)))
            return _rate(N_TWILIO, time.perf_counter() - t0)

        seq = median([sequential() for _ in range(RUNS)])
        apprise_rate = median([peer() for _ in range(RUNS)])
        settings = Settings(twilio_api_url=api.url)
        for name in databases():
            rates, theirs = [], []
            for _ in range(RUNS):  # alternated with the peer at the same concurrency
                theirs.append(threaded())
                rate, counts = _ours(new_url(name), settings, N_TWILIO, gateway=False)
                assert counts.get("sent") == N_TWILIO, counts
                rates.append(rate)
            ours, same = median(rates), median(theirs)
            out.append(
                {
                    "work": f"Twilio dispatch, {N_TWILIO:,} texts, 50 ms latency, default "
                    f"settings (concurrency {default}), {name}",
                    "peers": f"Apprise {apprise_rate:.1f} msg/s; twilio client sequentially "
                    f"{seq:.1f} msg/s; twilio client in {default} threads, alternated "
                    f"{same:.0f} msg/s",
                    "ours": f"{ours:.0f} msg/s: {ours / apprise_rate:.1f}x Apprise, "
                    f"{ours / same:.2f}x the client at the same concurrency",
                    "target": ">= 10x Apprise with default settings; >= 0.8x the client "
                    "at the same concurrency",
                    "met": ours >= 10 * apprise_rate and ours >= 0.8 * same,
                }
            )
    return out


def twilio_limited() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    limit = 4
    with twilio_api(LATENCY, concurrency_limit=limit) as api:
        settings = Settings(
            twilio_api_url=api.url, dispatch=replace(DispatchSettings(), concurrency=8)
        )
        rate, counts = _ours(new_url("SQLite"), settings, N_LIMITED, gateway=False)
    at_limit = limit / LATENCY
    failed = counts.get("failed", 0)
    over_limit = api.counts["over_limit"]
    lists = api.counts["requests"] - api.counts["creates"] - over_limit
    out.append(
        {
            "work": f"Twilio, account allows {limit} in flight, erp-sms at 8, "
            f"{N_LIMITED:,} texts, 50 ms",
            "peers": f"the server's limit: {at_limit:.0f} msg/s",
            "ours": f"{rate:.1f} msg/s ({rate / at_limit:.2f}x the limit); "
            f"{over_limit} HTTP 429s ({over_limit / N_LIMITED:.2f} a text); "
            f"{failed} failed; {lists} look-ups",
            "target": "0 failed by 429s; no look-up after a 429; within 20 % of the limit",
            "met": failed == 0 and lists == 0 and rate >= 0.8 * at_limit,
        }
    )
    return out


def main() -> list[dict[str, Any]]:
    rows = smtp() + twilio() + twilio_limited()
    for r in rows:
        print(f"{r['work']}\n  peers: {r['peers']}\n  erp-sms: {r['ours']}  [{r['target']}]")
    return rows
