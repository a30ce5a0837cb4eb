"""The dashboard: texts by day, delivery by channel, failures, cost, held texts, replies
waiting, contacts on sunsetting gateways."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask import (
    render_template,
)
from flask_login import (
    login_required,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import health, outbox, report, staff
from ..addresses import field_name
from ..conversations.keywords import NEEDS_A_PERSON
from ..errors import InputError
from ..models import Channel, InboundMessage, Message, Status
from .base import blueprint, database

log = logging.getLogger(__name__)

# Days the delivery, failure and cost charts cover (the texts-by-day chart: 14).
WINDOW = 30

# -- dashboard --------------------------------------------------------------------------------


@blueprint.get("/")
@login_required  # type: ignore[untyped-decorator]
def dashboard() -> str:
    from . import charts

    today = dt.datetime.now(dt.UTC).date()
    days = [(today - dt.timedelta(days=i)).isoformat() for i in range(13, -1, -1)]
    since = dt.datetime.combine(today - dt.timedelta(days=13), dt.time(), dt.UTC)
    with database().read_session() as s:
        day = func.date(Message.created_at)
        per_day = {
            (str(d)[:10], st): n
            for d, st, n in s.execute(
                select(day, Message.status, func.count())
                .where(Message.created_at >= since, Message.status != Status.MERGED)
                .group_by(day, Message.status)
            )
        }
        # Every chart reads only the window it shows, through the created_at index: the
        # page costs what the last weeks' traffic costs, not all history (issue 27).
        recent = dt.datetime.combine(today - dt.timedelta(days=WINDOW - 1), dt.time(), dt.UTC)
        by_channel = list(
            s.execute(
                select(
                    Message.channel,
                    Message.status,
                    Message.price,
                    Message.price_unit,
                    func.count(),
                )
                .where(Message.created_at >= recent, Message.channel.is_not(None))
                .group_by(Message.channel, Message.status, Message.price, Message.price_unit)
            )
        )
        # One expression object in both clauses: PostgreSQL matches GROUP BY to the
        # select list by its bound parameters, and two substr() calls bind two sets.
        reason = func.substr(Message.reason, 1, 60)
        reasons = list(
            s.execute(
                select(reason, func.count())
                .where(
                    Message.created_at >= recent,
                    Message.status.in_([Status.FAILED, Status.UNDELIVERED]),
                )
                .group_by(reason)
                .order_by(func.count().desc())
                .limit(8)
            )
        )
        held = outbox.held_count(s)
        waiting = s.execute(
            select(func.count(), func.min(InboundMessage.received_at)).where(
                InboundMessage.kind.in_(sorted(NEEDS_A_PERSON)), InboundMessage.done_at.is_(None)
            )
        ).one()
        replies, oldest = int(waiting[0] or 0), waiting[1]
        pulse = health.pulse(s, dt.datetime.now(dt.UTC))
        sunset, sunset_error = _sunset_rows(s)
        linked, clicked = s.execute(
            select(func.count(Message.link_code), func.count(Message.clicked_at)).where(
                Message.created_at >= recent
            )
        ).one()
    # Texts folded into another of their order's (SMSDIGESTMINUTES): one fewer each.
    saved = sum(n for _ch, st, _price, _unit, n in by_channel if st == Status.MERGED)
    rate_rows = _delivery_rates([(ch, st, n) for ch, st, _price, _unit, n in by_channel])
    cost_rows = _costs(by_channel)
    return render_template(
        "erp_sms/dashboard.html",
        per_day=charts.stacked_days(days, per_day),
        rate=charts.bars(rate_rows, unit="delivery rate by channel", maximum=1.0),
        failures=charts.bars([(r or "(none)", n, str(n)) for r, n in reasons], unit="failures"),
        cost=charts.bars(cost_rows, unit=f"cost by channel, last {WINDOW} days"),
        window=WINDOW,
        held=held,
        saved=saved,
        clicks=(f"{100 * clicked / linked:.0f}% of {linked}" if linked else ""),
        replies=replies,
        oldest=_age(oldest),
        worker=health.ago(pulse.worker_age),
        worker_gone=(pulse.workers_alive == 0),
        due_age=health.duration(pulse.due_age) if pulse.oldest_due else "",
        sunset=sunset,
        address_field=field_name(),
        sunset_error=sunset_error,
    )


def _age(since: dt.datetime | None) -> str:
    """How long the oldest reply has waited, in words ("3 h 20 min", "2 days")."""
    if since is None:
        return ""
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    minutes = max(int((dt.datetime.now(dt.UTC) - since).total_seconds() // 60), 0)
    if minutes >= 2 * 24 * 60:
        return f"{minutes // (24 * 60)} days"
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min"


def _costs(by_channel: list[Any]) -> list[tuple[str, float, str]]:
    """(channel, cost, in words) of the texts the window holds."""
    totals: dict[str, report.Totals] = {}
    for channel, _status, price, unit, n in by_channel:
        totals.setdefault(_channel_name(channel), report.Totals()).add_cost(price, unit, n)
    return [
        (name, float(t.cost), f"{t.cost:.2f} {t.cost_unit}".strip())
        for name, t in sorted(totals.items())
    ]


def _channel_name(channel: str | None) -> str:
    if channel == Channel.EMAIL_GATEWAY:
        return "Carrier gateways"
    return "Twilio" if channel == Channel.TWILIO else channel or "none"


def _delivery_rates(by_channel: list[Any]) -> list[tuple[str, float, str]]:
    """(channel, share delivered, in words) — a gateway never reports delivery, so its
    row says how many were handed over instead of a 0 % that reads as a failure."""
    rate: dict[str, list[int]] = {}
    for channel, status, n in by_channel:
        done = rate.setdefault(channel or "none", [0, 0])
        if status in (
            Status.DELIVERED,
            Status.READ,
            Status.UNDELIVERED,
            Status.FAILED,
            Status.SENT,
        ):
            done[1] += n
            if status in (Status.DELIVERED, Status.READ):
                done[0] += n
    rows = []
    for ch, (d, t) in sorted(rate.items()):
        if ch == Channel.EMAIL_GATEWAY:
            rows.append(
                ("Carrier gateways", 0.0, f"{t} handed over; gateways never confirm delivery")
            )
        else:
            name = "Twilio" if ch == Channel.TWILIO else ch
            rows.append(
                (name, d / t if t else 0.0, f"{100 * d / t:.0f}% of {t}" if t else "none yet")
            )
    return rows


def _sunset_rows(s: Session) -> tuple[list[tuple[str, str, int]], str | None]:
    """(carrier, its state, contacts) for gateways shut down or sunsetting — the
    contacts of ``erp-sms contacts gateways`` — or why they cannot be listed."""
    try:
        found = staff.gateway_contacts(s)
    except InputError as exc:
        return [], exc.message
    counts: dict[tuple[str, str], int] = {}
    for c in found:
        said = c.carrier.describe()
        counts[(c.carrier.name, said)] = counts.get((c.carrier.name, said), 0) + 1
    return sorted((name, said, n) for (name, said), n in counts.items()), None
