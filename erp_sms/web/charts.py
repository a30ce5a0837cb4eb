"""Charts for the dashboard, drawn on the server (no script, no CDN): stacked bars of
texts per day and status as SVG, and horizontal bars for shares and counts as HTML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

# One colour per status group, readable on white and for red-green colour blindness.
COLOURS = {
    "delivered": "#1b7837",
    "sent": "#5aae61",
    "queued": "#92c5de",
    "held": "#f4a582",
    "failed": "#b2182b",
    "other": "#bababa",
}


def _group(status: str) -> str:
    if status in ("delivered", "read"):
        return "delivered"
    if status in ("sent", "sending"):
        return "sent"
    if status == "queued":
        return "queued"
    if status == "held":
        return "held"
    if status in ("failed", "undelivered"):
        return "failed"
    return "other"


def stacked_days(days: Sequence[str], counts: Mapping[tuple[str, str], int]) -> str:
    """Texts per day, stacked by status group; ``counts[(day, status)]``."""
    width, height, pad, legend = 640, 200, 28, 18
    by_day: dict[str, dict[str, int]] = {d: {} for d in days}
    for (day, status), n in counts.items():
        if day in by_day:
            g = _group(status)
            by_day[day][g] = by_day[day].get(g, 0) + n
    top = max([sum(v.values()) for v in by_day.values()] + [1])
    bar = (width - pad) / max(len(days), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + legend + 18}"'
        ' role="img" aria-label="Texts per day by status" class="chart">',
        f'<text x="0" y="12" class="axis">{top}</text>',
        f'<line x1="{pad}" y1="{height}" x2="{width}" y2="{height}" stroke="#999"/>',
    ]
    for i, day in enumerate(days):
        y = float(height)
        x = pad + i * bar
        for g in COLOURS:
            n = by_day[day].get(g, 0)
            if not n:
                continue
            h = (height - 16) * n / top
            y -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{COLOURS[g]}"><title>{escape(day)}: {n} {g}</title></rect>'
            )
        if len(days) <= 14 or i % max(len(days) // 7, 1) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height + 14}" class="axis" '
                f'text-anchor="middle">{escape(day[5:])}</text>'
            )
    x = 0
    for g, colour in COLOURS.items():
        parts.append(
            f'<rect x="{x}" y="{height + 24}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{height + 33}" class="axis">{g}</text>'
        )
        x += 90
    parts.append("</svg>")
    return "".join(parts)


def bars(rows: Sequence[tuple[str, float, str]], *, unit: str = "", maximum: float = 0) -> str:
    """Horizontal bars (label, value, shown text) as a table of ``<meter>`` elements:
    labels and figures are page text, so they wrap on a phone and are never cut, and
    need no inline style (the pages' CSP allows none)."""
    top = maximum or max([v for _l, v, _t in rows] + [1])
    parts = [f'<table class="bars"><caption class="sr">{escape(unit)}</caption><tbody>']
    for label, value, shown in rows:
        parts.append(
            f'<tr><th scope="row">{escape(label)}</th>'
            f'<td class="bar"><meter min="0" max="{top:g}" value="{value:g}" '
            f'aria-label="{escape(label)}: {escape(shown)}"></meter></td>'
            f"<td>{escape(shown)}</td></tr>"
        )
    if not rows:
        parts.append('<tr><td colspan="3">nothing yet</td></tr>')
    parts.append("</tbody></table>")
    return "".join(parts)
