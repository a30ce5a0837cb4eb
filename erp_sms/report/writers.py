"""The report's formats: table, CSV, JSON and a printable HTML page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from jinja2 import Environment

from .. import csvfile
from ..models import Status
from .query import COLUMNS
from .totals import Totals, public

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
