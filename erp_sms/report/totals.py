"""Totals of the selected rows (texts, sent, delivered, failed, segments, cost), also by
month or organization."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ..catalog import carrier_for_domain
from ..errors import InputError
from ..models import Channel, Message, Status
from .query import _SENT, COLUMNS, Filters, _where, year_month


def totals(session: Session, f: Filters) -> Totals:
    """The report's totals, counted by the database."""
    t = Totals()
    m = Message
    sent_segments = func.sum(case((m.status.in_(_SENT), func.coalesce(m.segments, 0)), else_=0))
    by_status: Any = select(m.status, m.channel, func.count(), sent_segments)
    for status, channel, n, segments in session.execute(
        _where(by_status, f).group_by(m.status, m.channel)
    ):
        t.rows += n
        t.by_status[status] += n
        t.by_channel[channel or "none"] += n
        t.segments += int(segments or 0)
    priced: Any = select(m.price, m.price_unit, func.count()).where(m.price.is_not(None))
    for price, unit, n in session.execute(_where(priced, f).group_by(m.price, m.price_unit)):
        t.add_cost(price, unit, n)
    return t


GROUPS = ("month", "organization")


def grouped(session: Session, f: Filters, by: str) -> list[tuple[str, Totals]]:
    """Totals per month (of the text's creation, UTC) or per organization, counted by
    the database: texts by status, segments sent, cost."""
    m = Message
    key: Any
    if by == "month":
        key = year_month(m.created_at)
    elif by == "organization":
        key = func.coalesce(m.organization_name, "(no organization)")
    else:
        raise InputError(f"--group-by takes {' or '.join(GROUPS)}, not {by!r}")
    out: dict[str, Totals] = {}
    sent_segments = func.sum(case((m.status.in_(_SENT), func.coalesce(m.segments, 0)), else_=0))
    # One read of the table: counts, segments and prices together (a text's price is
    # one of a few values), where two GROUP BYs read a million rows twice (issue 27).
    by_status: Any = select(
        key.label("k"), m.status, m.channel, m.price, m.price_unit, func.count(), sent_segments
    )
    for k, status, channel, price, unit, n, segments in session.execute(
        _where(by_status, f).group_by(key, m.status, m.channel, m.price, m.price_unit)
    ):
        t = out.setdefault(k, Totals())
        t.rows += n
        t.by_status[status] += n
        t.by_channel[channel or "none"] += n
        t.segments += int(segments or 0)
        t.add_cost(price, unit, n)
    return sorted(out.items())


GROUP_COLUMNS = ("group", "texts", "sent", "delivered", "failed", "segments", "cost", "unit")


def group_row(name: str, t: Totals) -> dict[str, Any]:
    """One line of a grouped report: texts, how many went out and arrived, cost."""
    went = sum(t.by_status[s] for s in _SENT)
    return {
        "group": name,
        "texts": t.rows,
        "sent": went,
        "delivered": t.by_status[Status.DELIVERED] + t.by_status[Status.READ],
        "failed": t.by_status[Status.FAILED] + t.by_status[Status.UNDELIVERED],
        "segments": t.segments,
        "cost": f"{t.cost:.4f}",
        "unit": t.cost_unit,
    }


@dataclass
class Totals:
    by_status: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    segments: int = 0
    cost: Decimal = Decimal(0)
    cost_unit: str = ""
    rows: int = 0
    # Gateway texts sent within 90 days of their carrier's sunset: by (carrier, sunset).
    near_sunset: Counter[tuple[str, dt.date]] = field(default_factory=Counter)

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        self.by_status[row["status"]] += 1
        self.by_channel[row["channel"] or "none"] += 1
        if row["status"] in _SENT:
            self.segments += row["segments"] or 0
        self.add_cost(row["_price"], row["_price_unit"])
        if row["channel"] == Channel.EMAIL_GATEWAY and row.get("address"):
            carrier = carrier_for_domain(str(row["address"]).rpartition("@")[2])
            day = dt.date.fromisoformat(str(row["created_at"])[:10])
            if carrier is not None and carrier.sunset and carrier.days_left(day) is not None:
                self.near_sunset[carrier.name, carrier.sunset] += 1

    def add_cost(self, price: str | None, unit: str | None, n: int = 1) -> None:
        if not price:
            return
        try:
            self.cost += abs(Decimal(price)) * n
            self.cost_unit = unit or self.cost_unit
        except InvalidOperation:
            pass

    def lines(self) -> list[str]:
        st = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))
        ch = ", ".join(f"{k} {v}" for k, v in sorted(self.by_channel.items()))
        cost = (
            f"{self.cost:.4f} {self.cost_unit}".strip()
            if self.cost
            else "none recorded (run `erp-sms prices` for Twilio; gateways cost nothing)"
        )
        out = [
            f"{self.rows} message(s) — by status: {st or 'none'}",
            f"by channel: {ch or 'none'}",
            f"segments sent: {self.segments}; cost: {cost}",
        ]
        for (name, sunset), n in sorted(self.near_sunset.items()):
            out.append(
                f"warning: {n} gateway text(s) to {name} within 90 days of its gateway's "
                f"shutdown on {sunset}: activate the TWILIO rule (`erp-sms contacts gateways`)"
            )
        return out


def public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in COLUMNS}
