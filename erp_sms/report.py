"""The email log report: every message considered, with its status and reason.

Rows stream from the database (``yield_per``) into table, CSV, JSON or HTML writers, so a
log of a million rows exports with flat memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from jinja2 import Environment
from sqlalchemy import Select, String, and_, case, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from . import csvfile
from .catalog import carrier_for_domain
from .db import utcnow
from .errors import InputError
from .models import Channel, Message, Status

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
    if f.event:
        q = q.where(Message.event == f.event)
    if f.channel:
        q = q.where(Message.channel == f.channel)
    return q


def count(session: Session, f: Filters) -> int:
    return int(session.scalar(_where(select(func.count(Message.id)), f)) or 0)


def _query(f: Filters, attention_first: bool) -> Select[Any]:
    cols = [_column(c) for c in COLUMNS]
    cols += [Message.price.label("_price"), Message.price_unit.label("_price_unit")]
    q = _where(select(*cols), f)
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


def page(session: Session, f: Filters, *, offset: int, limit: int) -> list[dict[str, Any]]:
    """One page of the report for the email log page: failures and held texts first,
    as in the CLI's table."""
    out = []
    for r in session.execute(_query(f, True).offset(offset).limit(limit)):
        row = r._asdict()
        for c in _TIMES:
            row[c] = _iso(row[c])
        out.append(row)
    return out


_TIMES = ("created_at", "sent_at", "scheduled_for")
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


def export_csv(
    session: Session,
    f: Filters,
    out: IO[str],
    *,
    chunk: int = 10_000,
    progress: Callable[[int], object] | None = None,
) -> Totals:
    """The CSV export, fast: a plain streamed cursor (server-side on PostgreSQL and
    MariaDB), rows written as the database gives them, times formatted in SQL and the
    totals counted by the database — no per-row Python beyond the csv module. The
    same columns and values as ``write_csv(rows(...))``."""
    cols = [
        iso_seconds(_column(c).element).label(c)
        if c in _TIMES
        else csvfile.safe_column(_column(c).element).label(c)
        if c in _TEXTS
        else _column(c)
        for c in COLUMNS
    ]
    q = _where(select(*cols), f).order_by(Message.id)
    conn = session.connection()
    cursor = _raw_cursor(conn, q)
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        # Cells are made safe in SQL (csvfile.safe_column): the rows go out as fetched.
        w = csv.writer(out, lineterminator="\n")
        w.writerow(COLUMNS)
        while part := cursor.fetchmany(chunk):
            w.writerows(part)
            if progress is not None:
                progress(len(part))
    except dbapi_error as exc:  # the connection lost mid-export, say
        raise DBAPIError.instance("fetch", None, exc, dbapi_error) from None
    finally:
        cursor.close()
    return totals(session, f)


def _raw_cursor(conn: Any, q: Select[Any]) -> Any:
    """``q`` executed on a plain DBAPI cursor of ``conn`` (server-side on PostgreSQL and
    MariaDB, so rows stream): SQLAlchemy compiles the statement and converts the bound
    values (aware datetimes to the stored UTC); rows come back as the driver makes them,
    without SQLAlchemy's per-row processing (a third of an export on SQLite)."""
    dialect = conn.dialect
    compiled = q.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.construct_params()
    processors = getattr(compiled, "_bind_processors", {})
    values = {k: processors[k](v) if k in processors else v for k, v in values.items()}
    params: Any = (
        tuple(values[k] for k in compiled.positiontup or ()) if compiled.positional else values
    )
    raw = conn.connection.dbapi_connection
    if dialect.name == "postgresql":
        cursor = raw.cursor(name="erp_sms_export")  # psycopg: a server-side cursor
    elif dialect.name in ("mysql", "mariadb"):
        import pymysql.cursors  # type: ignore[import-untyped]

        cursor = raw.cursor(pymysql.cursors.SSCursor)
    else:
        cursor = raw.cursor()
    try:
        cursor.execute(str(compiled), params)
    except dialect.loaded_dbapi.Error as exc:
        cursor.close()
        # As SQLAlchemy would raise it: the commands' one-line messages apply.
        raise DBAPIError.instance(str(compiled), params, exc, dialect.loaded_dbapi.Error) from None
    return cursor


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
        key = func.substr(iso_seconds(m.created_at), 1, 7)
    elif by == "organization":
        key = func.coalesce(m.organization_name, "(no organization)")
    else:
        raise InputError(f"--group-by takes {' or '.join(GROUPS)}, not {by!r}")
    out: dict[str, Totals] = {}
    sent_segments = func.sum(case((m.status.in_(_SENT), func.coalesce(m.segments, 0)), else_=0))
    by_status: Any = select(key.label("k"), m.status, m.channel, func.count(), sent_segments)
    for k, status, channel, n, segments in session.execute(
        _where(by_status, f).group_by(key, m.status, m.channel)
    ):
        t = out.setdefault(k, Totals())
        t.rows += n
        t.by_status[status] += n
        t.by_channel[channel or "none"] += n
        t.segments += int(segments or 0)
    priced: Any = select(key.label("k"), m.price, m.price_unit, func.count())
    priced = priced.where(m.price.is_not(None))
    for k, price, unit, n in session.execute(
        _where(priced, f).group_by(key, m.price, m.price_unit)
    ):
        out.setdefault(k, Totals()).add_cost(price, unit, n)
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


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


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


# -- writers -------------------------------------------------------------------------------


def write_csv(it: Iterator[dict[str, Any]], out: IO[str]) -> Totals:
    totals = Totals()
    w = csvfile.Writer(out)
    w.writerow(COLUMNS)
    for row in it:
        totals.add(row)
        w.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return totals


def write_json(it: Iterator[dict[str, Any]], out: IO[str]) -> Totals:
    totals = Totals()
    out.write("[")
    first = True
    for row in it:
        totals.add(row)
        out.write("\n  " if first else ",\n  ")
        out.write(json.dumps(public(row), ensure_ascii=False))
        first = False
    out.write("\n]\n" if not first else "]\n")
    return totals


_TABLE_COLS = (
    ("message_id", "id", 6),
    ("created_at", "created", 16),
    ("order_number", "order", 10),
    ("event", "event", 20),
    ("contact_name", "contact", 14),
    ("channel", "channel", 13),
    ("status", "status", 11),
    ("reason", "reason / address", 60),
)


def write_table(it: Iterator[dict[str, Any]], out: IO[str]) -> Totals:
    totals = Totals()
    header = "  ".join(title.ljust(width) for _, title, width in _TABLE_COLS)
    out.write(header.rstrip() + "\n" + "-" * len(header.rstrip()) + "\n")
    for row in it:
        totals.add(row)
        cells = []
        for key, _, width in _TABLE_COLS:
            value = row[key]
            if key == "reason":
                value = row["reason"] or row["address"] or ""
                if row["status"] == Status.QUEUED and row["scheduled_for"]:
                    due = row["scheduled_for"][:16].replace("T", " ")
                    value = f"goes out {due} UTC" + (f"; {value}" if value else "")
            if key == "created_at" and value:
                value = value[:16].replace("T", " ")
            text = "" if value is None else str(value)
            cells.append(
                text
                if key == "reason"
                else (text[: width - 1] + "…" if len(text) > width else text).ljust(width)
            )
        out.write("  ".join(cells).rstrip() + "\n")
    out.write("\n" + "\n".join(totals.lines()) + "\n")
    return totals


_HTML = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Email log report</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:2em}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee} tr.failed td,tr.undelivered td{background:#fde8e8} tr.held td{background:#fff4d6}
tr.skipped td{color:#555} .body{max-width:28em}
@media print{body{margin:0} th{background:#ddd !important}}
</style></head><body>
<h1>Email log report</h1>
<p>{{ subtitle }}</p>
<table id="report"><thead><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for row in rows %}<tr class="{{ row.status }}">{% for c in columns %}<td{% if c == 'body' %} class="body"{% endif %}>{{ row[c] if row[c] is not none else '' }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
<h2>Summary</h2><ul id="summary">{% for line in totals.lines() %}<li>{{ line }}</li>{% endfor %}</ul>
</body></html>
""")


def write_html(it: Iterator[dict[str, Any]], out: IO[str], subtitle: str = "") -> Totals:
    totals = Totals()

    def counted() -> Iterator[dict[str, Any]]:
        for row in it:
            totals.add(row)
            yield row

    for chunk in _HTML.generate(columns=COLUMNS, rows=counted(), totals=totals, subtitle=subtitle):
        out.write(chunk)
    return totals


WRITERS = {"table": write_table, "csv": write_csv, "json": write_json, "html": write_html}
