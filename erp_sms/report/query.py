"""The report's filters and the rows they select, failures and held texts first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, String, and_, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from ..db import utcnow
from ..errors import InputError
from ..models import Channel, Message, Status

COLUMNS = (
    "message_id",
    "created_at",
    "sent_at",
    "order_number",
    "event",
    "template",
    "contact_name",
    "channel",
    "address",
    "status",
    "reason",
    "provider_id",
    "segments",
    "body",
    "scheduled_for",
    "clicked_at",
)
FORMATS = ("table", "csv", "json", "html")
# Statuses whose segments left us (and may be billed).
_SENT = (Status.SENT, Status.DELIVERED, Status.READ, Status.UNDELIVERED)
# Failures and held messages first in the terminal table and the HTML page.
_ATTENTION = (Status.FAILED, Status.HELD, Status.UNDELIVERED, Status.SKIPPED)


@dataclass(frozen=True)
class Filters:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    order: str | None = None
    contact: str | None = None
    statuses: tuple[str, ...] = ()
    event: str | None = None
    channel: str | None = None
    # The staff log's view: merged texts shown under the text that carries them
    # (``merged_under``), not as rows of their own — unless asked for by status.
    nested: bool = False


def parse_when(text: str | None, *, end: bool = False) -> dt.datetime | None:
    """YYYY-MM-DD (a whole day; ``end``: up to its end) or an ISO date-time (UTC if no zone)."""
    if not text:
        return None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            when = dt.datetime.combine(day, dt.time(), dt.UTC)
            return when + dt.timedelta(days=1) if end else when
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def make_filters(
    *,
    since: str | None = None,
    until: str | None = None,
    order: str | None = None,
    contact: str | None = None,
    status: str | None = None,
    event: str | None = None,
    channel: str | None = None,
) -> Filters:
    statuses = tuple(s.strip().lower() for s in status.split(",") if s.strip()) if status else ()
    bad = [s for s in statuses if s not in Status.ALL]
    if bad:
        raise InputError(f"unknown status {bad[0]!r}; use one of {', '.join(Status.ALL)}")
    if channel and channel not in Channel.ALL:
        raise InputError(f"unknown channel {channel!r}; use {' or '.join(Channel.ALL)}")
    f = Filters(
        parse_when(since), parse_when(until, end=True), order, contact, statuses, event, channel
    )
    if f.since and f.until and f.since >= f.until:
        raise InputError("--since must be before --until")
    return f


def _where(q: Select[Any], f: Filters) -> Select[Any]:
    if f.since:
        q = q.where(Message.created_at >= f.since)
    if f.until:
        q = q.where(Message.created_at < f.until)
    if f.order:
        q = q.where(Message.order_number == f.order)
    if f.contact:
        q = q.where(Message.contact_ref == f.contact)
    if f.statuses:
        q = q.where(Message.status.in_(f.statuses))
    elif f.nested:
        q = q.where(Message.status != Status.MERGED)
    if f.event:
        q = q.where(Message.event == f.event)
    if f.channel:
        q = q.where(Message.channel == f.channel)
    return q


def count(session: Session, f: Filters) -> int:
    return int(session.scalar(_where(select(func.count(Message.id)), f)) or 0)


def _columns() -> list[Any]:
    cols = [_column(c) for c in COLUMNS]
    return [*cols, Message.price.label("_price"), Message.price_unit.label("_price_unit")]


def _query(f: Filters, attention_first: bool) -> Select[Any]:
    q = _where(select(*_columns()), f)
    if attention_first:
        rank = case(
            {s: i for i, s in enumerate(_ATTENTION)}, value=Message.status, else_=len(_ATTENTION)
        )
        return q.order_by(rank, Message.id)
    return q.order_by(Message.id)


def rows(
    session: Session, f: Filters, *, attention_first: bool = False, chunk: int = 2000
) -> Iterator[dict[str, Any]]:
    """The report rows (COLUMNS, plus ``_price``/``_price_unit`` for the totals), streamed."""
    q = _query(f, attention_first)
    for r in session.execute(q.execution_options(yield_per=chunk)):
        row = r._asdict()
        for c in _TIMES:
            row[c] = _iso(row[c])
        yield row


def newest(
    session: Session, f: Filters, *, before: int | None, after: int | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the email log, newest first, read by id from where the page before
    ended (``before``: older than that id; ``after``: newer), and whether there is more
    that way. Keyset paging: the millionth page costs what the first does, where an
    OFFSET reads every row it skips."""
    q = _where(select(*_columns()), f)
    if after is not None:
        q = q.where(Message.id > after).order_by(Message.id)
    else:
        if before is not None:
            q = q.where(Message.id < before)
        q = q.order_by(Message.id.desc())
    out = []
    for r in session.execute(q.limit(limit + 1)):
        row = r._asdict()
        for c in _TIMES:
            row[c] = _iso(row[c])
        out.append(row)
    more = len(out) > limit
    out = out[:limit]
    return (out[::-1] if after is not None else out), more


def merged_under(session: Session, carriers: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The merged texts each of ``carriers`` (message ids) carries, oldest first."""
    if not carriers:
        return {}
    q = (
        select(*_columns(), Message.merged_into.label("_carrier"))
        .where(Message.merged_into.in_(carriers))
        .order_by(Message.id)
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for r in session.execute(q):
        row = r._asdict()
        for c in _TIMES:
            row[c] = _iso(row[c])
        out.setdefault(row["_carrier"], []).append(row)
    return out


def count_upto(session: Session, f: Filters, cap: int) -> int:
    """How many rows the filters select, counting no further than ``cap + 1``: a page
    says "10,000+" rather than count a million rows on every view."""
    found = _where(select(Message.id), f).limit(cap + 1).subquery()
    return int(session.scalar(select(func.count()).select_from(found)) or 0)


_TIMES = ("created_at", "sent_at", "scheduled_for", "clicked_at")
# Columns of text anyone can write (names, replies, reasons): made safe for spreadsheets.
_TEXTS = tuple(c for c in COLUMNS if c not in (*_TIMES, "message_id", "segments"))


def _column(name: str) -> Any:
    """The report column ``name`` as a SQL expression. ``scheduled_for`` (CONTRACT.md):
    when a queued text will go out, empty for one due now."""
    if name == "message_id":
        return Message.id.label(name)
    if name == "scheduled_for":
        waiting = and_(Message.status == Status.QUEUED, Message.next_attempt_at > utcnow())
        return case((waiting, Message.next_attempt_at)).label(name)
    return getattr(Message, name).label(name)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


class iso_seconds(FunctionElement[str]):
    """A stored UTC time as the report writes it (``2026-11-21T09:30:00+00:00``),
    formatted by the database: parsing a million datetimes in Python only to print them
    again was a third of an export."""

    type = String()
    inherit_cache = True


@compiles(iso_seconds)
def _iso_default(element: iso_seconds, compiler: Any, **kw: Any) -> str:
    return "strftime('%%Y-%%m-%%dT%%H:%%M:%%S+00:00', %s)" % compiler.process(  # noqa: UP031
        element.clauses, **kw
    )


@compiles(iso_seconds, "postgresql")
def _iso_pg(element: iso_seconds, compiler: Any, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"""to_char({arg}, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')"""


@compiles(iso_seconds, "mysql")
@compiles(iso_seconds, "mariadb")
def _iso_mysql(element: iso_seconds, compiler: Any, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"DATE_FORMAT({arg}, '%%Y-%%m-%%dT%%H:%%i:%%s+00:00')"


class year_month(FunctionElement[str]):
    """A stored UTC time's month, ``2026-11``, formatted by the database in one call (the
    whole ISO time cut to seven characters formatted every column first)."""

    type = String()
    inherit_cache = True


@compiles(year_month)
def _month_default(element: year_month, compiler: Any, **kw: Any) -> str:
    return "strftime('%%Y-%%m', %s)" % compiler.process(element.clauses, **kw)  # noqa: UP031


@compiles(year_month, "postgresql")
def _month_pg(element: year_month, compiler: Any, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)}, 'YYYY-MM')"


@compiles(year_month, "mysql")
@compiles(year_month, "mariadb")
def _month_mysql(element: year_month, compiler: Any, **kw: Any) -> str:
    return f"DATE_FORMAT({compiler.process(element.clauses, **kw)}, '%%Y-%%m')"
