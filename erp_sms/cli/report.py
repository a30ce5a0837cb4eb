"""``erp-sms report``: the email log (table, CSV, JSON, HTML) and totals per group."""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import click

from .. import consent_trail, csvfile, report
from ..errors import ErpSmsError, InputError
from .common import staff_session

# -- report ------------------------------------------------------------------------------------


@click.command("report")
@click.option("--since", help="From this day (YYYY-MM-DD) or time.")
@click.option("--until", help="Up to and including this day (YYYY-MM-DD) or time.")
@click.option("--order", help="Sales order number.")
@click.option("--contact", help="Contact id.")
@click.option("--status", help="Status, or several separated by commas.")
@click.option("--event", help="Event name, e.g. shipment_shipped.")
@click.option("--channel", type=click.Choice(["twilio", "email_gateway"]), help="Channel.")
@click.option(
    "--format", "fmt", type=click.Choice(report.FORMATS), default="table", show_default=True
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file.",
)
@click.option(
    "--group-by",
    "group_by",
    type=click.Choice(report.GROUPS),
    help="Totals per month or per organization (texts, sent, delivered, failed, cost).",
)
@click.option(
    "--consent",
    is_flag=True,
    help="The consent trail instead of the texts: every opt-in and opt-out with time, "
    "source, who and number (--since, --until, --contact apply).",
)
@click.option(
    "--consent-evidence",
    "evidence",
    is_flag=True,
    help="For each text that went out: the consent it was sent under (the last opt-in "
    "before it, or SMSUPDATE in the ERP) — for an auditor (--since, --until, --contact).",
)
def report_cmd(
    since: str | None,
    until: str | None,
    order: str | None,
    contact: str | None,
    status: str | None,
    event: str | None,
    channel: str | None,
    fmt: str,
    output: Path | None,
    group_by: str | None,
    consent: bool,
    evidence: bool,
) -> None:
    """The email log report: every text considered, with status and reason.

    \b
    Example:
      erp-sms report --since 2026-11-01 --status failed,held
      erp-sms report --order SO-104233 --format csv --output so-104233.csv
      erp-sms report --format html --output log.html
      erp-sms report --group-by month --since 2026-01-01
      erp-sms report --consent --format csv --output consent.csv
      erp-sms report --consent-evidence --since 2026-11-01 --format csv
    """
    filters = report.make_filters(
        since=since,
        until=until,
        order=order,
        contact=contact,
        status=status,
        event=event,
        channel=channel,
    )
    if consent or evidence:
        _write_consent(filters, fmt, output, evidence=evidence)
        return
    if group_by:
        with staff_session(readonly=True) as s:
            groups = report.grouped(s, filters, group_by)
        _write_groups(groups, fmt, group_by, output)
        return
    with staff_session(readonly=True) as s:
        write: Callable[[IO[str], Callable[[int], object] | None], report.Totals]
        if fmt == "csv":
            # The streamed exporter (a plain cursor, times and totals in SQL); its query
            # runs before the header is written.
            def write(out: IO[str], progress: Callable[[int], object] | None) -> report.Totals:
                return report.export_csv(s, filters, out, progress=progress)
        else:
            # Run the query before writing anything: a failure never leaves a header behind.
            rows = report.rows(s, filters, attention_first=fmt in ("table", "html"))
            first = next(rows, None)
            rows = itertools.chain([first] if first is not None else [], rows)

            def write(out: IO[str], progress: Callable[[int], object] | None) -> report.Totals:
                return _write(fmt, _counted(rows, progress), out)

        total = report.count(s, filters) if output and sys.stderr.isatty() else None
        totals = _write_output(output, total, write)
    if output:
        click.echo(f"{totals.rows} row(s) written to {output}", err=True)


def _write_records(
    out: IO[str], fmt: str, rows: list[dict[str, Any]], columns: Sequence[str]
) -> None:
    """Rows of plain values as CSV (a header of ``columns``) or a JSON array."""
    if fmt == "csv":
        csvfile.write_records(out, rows, columns)
    else:
        import json

        json.dump(rows, out, indent=2)
        out.write("\n")


def _write_consent(
    filters: report.Filters, fmt: str, output: Path | None, *, evidence: bool = False
) -> None:
    """``--consent``: the consent trail as CSV, JSON or a table; ``--consent-evidence``:
    each text sent with the consent it was sent under."""
    flag = "--consent-evidence" if evidence else "--consent"
    if fmt == "html":
        raise InputError(f"{flag} is written as csv, json or table, not html")
    if filters.order or filters.statuses or filters.event or filters.channel:
        raise InputError(f"{flag} takes --since, --until and --contact only")
    read = consent_trail.evidence if evidence else consent_trail.trail
    with staff_session(readonly=True) as s:
        rows = read(s, contact_key=filters.contact, since=filters.since, until=filters.until)
    columns = consent_trail.EVIDENCE_COLUMNS if evidence else consent_trail.TRAIL_COLUMNS

    def write(out: IO[str], _progress: Callable[[int], object] | None) -> report.Totals:
        if fmt in ("csv", "json"):
            _write_records(out, fmt, rows, columns)
        elif evidence:
            for r in rows:
                when = f" {r['consent_at']} ({r['consent_source']})" if r["consent_at"] else ""
                out.write(
                    f"#{r['message_id']:<6} {r['sent_at']}  {r['contact_name']} {r['number']}  "
                    f"{r['consent']}{when}\n"
                )
            out.write(f"{len(rows)} text(s)\n")
        else:
            for r in rows:
                who = f" by {r['actor']}" if r["actor"] else ""
                out.write(
                    f"{r['at']}  {r['action']:<7} {r['source']:<12} {r['contact_id']:>6} "
                    f"{r['contact_name']}  {r['number']}{who}  {r['detail']}\n"
                )
            out.write(f"{len(rows)} consent event(s)\n")
        return report.Totals(rows=len(rows))

    _write_output(output, None, write)
    if output:
        click.echo(f"{len(rows)} row(s) written to {output}", err=True)


def _write_groups(
    groups: list[tuple[str, report.Totals]], fmt: str, by: str, output: Path | None
) -> None:
    """A grouped report as a table, CSV or JSON."""
    rows = [report.group_row(name, t) for name, t in groups]

    def write(out: IO[str], _progress: Callable[[int], object] | None) -> report.Totals:
        if fmt in ("csv", "json"):
            _write_records(out, fmt, rows, report.GROUP_COLUMNS)
        elif fmt == "table":
            out.write(
                f"{by:<28} {'texts':>6} {'sent':>6} {'delivered':>9} {'failed':>6} "
                f"{'segments':>8} {'cost':>10}\n"
            )
            for r in rows:
                out.write(
                    f"{r['group'][:28]:<28} {r['texts']:>6} {r['sent']:>6} {r['delivered']:>9} "
                    f"{r['failed']:>6} {r['segments']:>8} {r['cost']:>10} {r['unit']}\n"
                )
            if not rows:
                out.write("no texts match\n")
        else:
            raise InputError("--group-by writes table, csv or json")
        totals = report.Totals()
        totals.rows = len(rows)
        return totals

    _write_output(output, None, write)


def _counted(rows: Iterator[Any], progress: Callable[[int], object] | None) -> Iterator[Any]:
    for row in rows:
        if progress is not None:
            progress(1)
        yield row


def _write_output(
    output: Path | None,
    total: int | None,
    write: Callable[[IO[str], Callable[[int], object] | None], report.Totals],
) -> report.Totals:
    """``write`` to ``--output`` (with a progress bar on a terminal when ``total`` is
    known) or standard output; a file that cannot be written is one line, never a
    traceback."""
    try:
        out_file = output.open("w", encoding="utf-8", newline="") if output else None
    except OSError as exc:
        raise InputError(
            f"cannot write --output {output}: {exc.strerror or exc}; choose a file in a "
            "folder that exists and you may write to"
        ) from None
    try:
        out = out_file or sys.stdout
        if out_file is not None and total is not None:
            with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
                totals = write(out, bar.update)
        else:
            totals = write(out, None)
        if out_file:
            out_file.close()
    except BrokenPipeError:
        raise  # the reader went away (`| head`): click ends quietly, status 1
    except OSError as exc:
        if out_file:
            with contextlib.suppress(OSError):
                out_file.close()
        target = f"--output {output}" if output else "standard output"
        raise ErpSmsError(
            f"cannot write {target}: {exc.strerror or exc}; free some space or choose another file"
        ) from None
    return totals


def _write(fmt: str, rows: Any, out: Any) -> report.Totals:
    if fmt == "html":
        return report.write_html(iter(rows), out, subtitle="erp-sms")
    writer: Any = report.WRITERS[fmt]
    return writer(iter(rows), out)  # type: ignore[no-any-return]
