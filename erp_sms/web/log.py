"""The email log: filters, pages, the CSV export, and release/retry/cancel."""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from flask import (
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import (
    login_required,
)
from werkzeug.wrappers import Response as WResponse

from .. import report, staff
from ..errors import InputError
from ..events import all_events
from ..models import Status
from . import safety
from .base import PAGE_SIZE, act, blueprint, database, who

log = logging.getLogger(__name__)

# -- the email log ----------------------------------------------------------------------------


FILTERS = ("since", "until", "order", "contact", "status", "event", "channel")


def _filters() -> report.Filters:
    return report.make_filters(**{k: request.args.get(k) or None for k in FILTERS})


# A count stops here: "10,000+ texts" says enough, and counting a million rows on
# every view of the log does not stay cheap (issue 27).
COUNT_CAP = 10_000
# Texts that need someone: the log's "needs attention" view.
ATTENTION = ",".join((Status.FAILED, Status.HELD, Status.UNDELIVERED, Status.SKIPPED))
_ID_MAX = 2**63 - 1  # a typed ?before=… past every database's integer


def _position(name: str) -> int | None:
    value = request.args.get(name, type=int)
    return None if value is None else min(max(value, 0), _ID_MAX)


@blueprint.get("/log")
@login_required  # type: ignore[untyped-decorator]
def log_page() -> Any:
    before, after = _position("before"), _position("after")
    try:
        f = _filters()
        error = None
    except InputError as exc:
        f, error = report.Filters(), exc.message
    f = replace(f, nested=True)  # merged texts under the text that carries them
    with database().read_session() as s:
        total = report.count_upto(s, f, COUNT_CAP)
        rows, more = report.newest(s, f, before=before, after=after, limit=PAGE_SIZE)
        merged = report.merged_under(s, [r["message_id"] for r in rows])
        # The registry's events, not a DISTINCT over every row of the log (issue 27).
        events = sorted(e.name for e in all_events())
    args = {k: request.args.get(k, "") for k in FILTERS}
    # Newer pages exist when this one did not start at the newest; older ones when the
    # read found more past its end (or this page came from a newer one's link).
    newer = bool(rows) and (before is not None or (after is not None and more))
    older = bool(rows) and (more if after is None else True)
    return render_template(
        "erp_sms/log.html",
        rows=rows,
        merged=merged,
        total=f"{COUNT_CAP:,}+" if total > COUNT_CAP else f"{total:,}",
        newer=rows[0]["message_id"] if newer else None,
        older=rows[-1]["message_id"] if older else None,
        attention=ATTENTION,
        args=args,
        error=error,
        statuses=Status.ALL,
        events=events,
    ), 400 if error else 200


@blueprint.get("/log.csv")
@login_required  # type: ignore[untyped-decorator]
def log_csv() -> WResponse:
    """Exactly the filtered rows, as the CLI's ``report --format csv`` writes them."""
    try:
        f = _filters()
    except InputError as exc:
        abort(400, exc.message)

    def stream() -> Iterator[bytes]:
        # The CLI's streamed exporter writes to a spooled file (memory up to 1 MB, then
        # disk), sent on in chunks: a million rows never sit in memory.
        with tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b") as spool:
            text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
            with database().read_session() as s:
                report.export_csv(s, f, text)
            text.flush()
            spool.seek(0)
            while chunk := spool.read(1 << 16):
                yield chunk
            text.detach()

    return Response(
        stream_with_context(stream()),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=erp-sms-log.csv"},
    )


@blueprint.post("/log/action")
@login_required  # type: ignore[untyped-decorator]
def log_action() -> WResponse:
    action = request.form.get("action", "")
    ids = [int(i) for i in request.form.getlist("id") if i.isdigit()]
    back = safety.same_site(request.form.get("back"), url_for(".log_page"))
    if not ids:
        flash("Tick the texts first.", "error")
        return redirect(back)
    if action == "release":
        return act(lambda s: f"{staff.release(s, ids, by=who())} text(s) released", back)
    if action == "cancel":
        reason = request.form.get("reason") or None
        return act(
            lambda s: f"{staff.cancel(s, ids, by=who(), reason=reason)} text(s) canceled", back
        )
    if action == "retry":
        return act(lambda s: staff.retry(s, ids, by=who()), back)
    flash(f"unknown action {action!r}", "error")
    return redirect(back)
