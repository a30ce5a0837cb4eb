"""``erp-sms``: the staff and operator command line (CONTRACT.md "Staff CLI").

Bad input exits non-zero with one clear line on stderr. The AuthCode is never printed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from . import options as options_mod
from . import outbox, report, rule_records
from .cli_common import _safe_url, _user, database, staff_session
from .cli_contacts import group as contacts_group
from .cli_sequences import group as sequences_group
from .cli_templates import group as templates_group
from .config import get_settings
from .errors import ErpSmsError, InputError

F = TypeVar("F", bound=Callable[..., Any])


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The twilio client logs every request's headers at INFO; werkzeug every request.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)


class ErpSmsGroup(click.Group):
    """A click group whose errors are one line on stderr (usage errors exit 2, input
    errors 2, other failures 1)."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(
                args, prog_name or "erp-sms", complete_var, standalone_mode=False, **extra
            )
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            _fail(f"{exc.format_message()}{hint}", 2)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except InputError as exc:
            _fail(exc.message, 2)
        except ErpSmsError as exc:
            _fail(exc.message, 1)
        except SQLAlchemyError as exc:
            from .db import describe_error

            _fail(describe_error(exc, get_settings().database_url), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            # Never a traceback for staff: one line, the details in the log with -v.
            logging.getLogger("erp_sms.cli").debug("unexpected error", exc_info=True)
            _fail(
                f"unexpected error: {type(exc).__name__}: {exc} (run again with -v to log "
                "the details, and report it)",
                1,
            )
        sys.exit(rv if isinstance(rv, int) else 0)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _fail(message: str, code: int) -> None:
    click.echo(f"erp-sms: {message}", err=True)
    sys.exit(code)


@click.group(
    cls=ErpSmsGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (INFO).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """erp-sms: text customers as their sales orders move.

    \b
    Example:
      erp-sms db upgrade
      erp-sms rules set TWILIO --sid AC… --auth-code … --phone-number 3125550100 --active
      erp-sms worker
    """
    _setup_logging(verbose)
    if ctx.invoked_subcommand != "demo" and not ctx.resilient_parsing:
        # The host's integration module first, for every command (CONTRACT.md "Host
        # integration"): its lookup, events and templates. The demo uses its own data.
        from .host import load_host_module

        load_host_module()


# -- db --------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Create or migrate the tables.

    \b
    Example:
      ERP_SMS_DATABASE_URL=postgresql+psycopg://erp@localhost/erp erp-sms db upgrade
    """


@db.command("upgrade")
@click.option(
    "--plugin-only", is_flag=True, help="Only the plugin's tables (a host with its own ERP tables)."
)
@click.option(
    "--with-reference",
    is_flag=True,
    help="Also the reference ERP tables when ERP_SMS_HOST_MODULE is set (normally not).",
)
def db_upgrade(plugin_only: bool, with_reference: bool) -> None:
    """Create or migrate all tables (ERP reference + plugin); safe to run again. With
    ERP_SMS_HOST_MODULE set (a host with its own tables), only the plugin's tables.

    \b
    Example:
      erp-sms db upgrade
      erp-sms db upgrade --plugin-only
    """
    from . import migrate
    from .host import host_configured

    if plugin_only and with_reference:
        raise InputError("--plugin-only and --with-reference contradict each other: pick one")
    plugin_only = plugin_only or (host_configured() and not with_reference)
    with database() as db_:
        migrate.upgrade(db_.engine, plugin_only=plugin_only)
        heads = ", ".join(sorted(migrate.current(db_.engine)))
    only = "; plugin tables only (the host has its own)" if plugin_only else ""
    click.echo(f"database {_safe_url()} is up to date ({heads}){only}")


# -- rules -------------------------------------------------------------------------------------


@cli.group()
def rules() -> None:
    """Rule-maintenance records (TWILIO).

    \b
    Example:
      erp-sms rules show TWILIO
    """


def _rule_name(name: str) -> str:
    return rule_records.record(name)[1]


@rules.command("show")
@click.argument("name")
def rules_show(name: str) -> None:
    """Show a rule record; the AuthCode only as set / not set.

    \b
    Example:
      erp-sms rules show TWILIO
    """
    rtype, full = rule_records.record(name)
    with staff_session(readonly=True) as s:
        rule = rule_records.get_rule(s, full)
        click.echo(f"{full} — {rtype.description}")
        if rule is None:
            click.echo(
                "  not set up: use `erp-sms rules set TWILIO --sid … --auth-code … --phone-number …`"
            )
            return
        for f in rtype.fields:
            if f.kind == "logic":
                continue
            value = rule.get(f.name)
            changed = rule.changed_at(f.name)
            when = f" (changed {changed:%Y-%m-%d %H:%M} UTC)" if changed else ""
            shown = rule_records.mask_secret(value) if f.secret else (value or "(not set)")
            click.echo(f"  {f.name:<19} {shown}{when}")
        click.echo(f"  {'Active':<19} {'on' if rule.active else 'off'}")
        if rule.rejected_at:
            click.echo(
                f"  {'REJECTED':<19} {rule.rejected_at:%Y-%m-%d %H:%M} UTC: {rule.rejected_reason}"
            )
        held = len([m for m in outbox.find(s, "held") if m.channel == "twilio"])
        if held:
            click.echo(f"  {held} text(s) held for this record: `erp-sms report --status held`")


@rules.command("set")
@click.argument("name")
@click.option("--sid", help="Twilio Account SID (AC + 32 hex).")
@click.option("--auth-code", help="Twilio Auth Token (32 hex). Use - to read it from stdin.")
@click.option("--phone-number", help="The Twilio number texts come from (10 digits or E.164).")
@click.option(
    "--messaging-service-sid",
    help="Send through a Twilio Messaging Service (MG + 32 hex) instead of PhoneNumber; "
    "'' to stop.",
)
@click.option("--use-code", help="Must be SMSUPDATE.")
@click.option("--active/--inactive", default=None, help="Switch the integration on or off.")
@click.option(
    "--by", default=None, help="Who makes the change (for the audit; default: login name)."
)
def rules_set(
    name: str,
    sid: str | None,
    auth_code: str | None,
    phone_number: str | None,
    messaging_service_sid: str | None,
    use_code: str | None,
    active: bool | None,
    by: str | None,
) -> None:
    """Set fields of a rule record; every change is audited (never the secret's value).

    \b
    Example:
      erp-sms rules set TWILIO --sid AC0123… --auth-code - --phone-number 3125550100 \\
          --use-code SMSUPDATE --active
    """
    if auth_code == "-":
        if _stdin_is_terminal():
            auth_code = click.prompt("AuthCode", hide_input=True, err=True).strip()
        else:
            auth_code = sys.stdin.readline().strip()
        if not auth_code:
            raise InputError("no AuthCode given on standard input: nothing was changed")
    values = {
        k: v
        for k, v in (
            ("SID", sid),
            ("AuthCode", auth_code),
            ("PhoneNumber", phone_number),
            ("MessagingServiceSid", messaging_service_sid),
            ("UseCode", use_code),
        )
        if v is not None
    }
    if not values and active is None:
        raise InputError(
            "nothing to set: give --sid, --auth-code, --phone-number, --use-code or --active/--inactive"
        )
    rtype, _full = rule_records.record(name)
    for field_name, value in values.items():  # bad input is reported before the database is touched
        rule_records.validate_field(rtype, field_name, value)
    with staff_session() as s:
        held_before = {m.id for m in outbox.find(s, "held")}
        rule = rule_records.set_fields(s, _rule_name(name), values, active=active, by=by or _user())
        released = held_before - {m.id for m in outbox.find(s, "held")}
        state = "active" if rule.active else "inactive"
    changed = ", ".join(sorted(values)) + (", Active" if active is not None else "")
    click.echo(f"{name.upper()} saved ({changed.strip(', ')}); the record is {state}")
    if auth_code is not None and not get_settings().secret_key:
        click.echo(
            "warning: ERP_SMS_SECRET_KEY is not set, so the AuthCode is stored unencrypted; "
            "set it and run this command again to encrypt it",
            err=True,
        )
    if released:
        click.echo(f"{len(released)} held text(s) released to the queue")


@rules.command("sender")
@click.argument("organization")
@click.argument("name")
def rules_sender(organization: str, name: str) -> None:
    """Text an organization from a site's own number (its TWILIO:SITE record).

    \b
    Example:
      erp-sms rules sender "Acme West" TWILIO:WEST
      erp-sms rules sender "Acme West" TWILIO      (back to the main number)
    """
    from .sequences import find_organization

    with staff_session() as s:
        key, org_name = find_organization(s, organization)
        full = rule_records.map_sender(s, key, org_name, name, by=_user())
    click.echo(f"{org_name or key}: texts go out from {full} from now on")


@rules.command("senders")
def rules_senders() -> None:
    """The TWILIO records and which organizations send from a site's record.

    \b
    Example:
      erp-sms rules senders
    """
    with staff_session(readonly=True) as s:
        for full in rule_records.senders(s) or ["(no TWILIO record yet)"]:
            rule = rule_records.get_rule(s, full) if full.startswith("TWILIO") else None
            state = ("active" if rule.active else "inactive") if rule else ""
            phone = (rule.get("PhoneNumber") or "") if rule else ""
            click.echo(f"{full:<16} {phone:<14} {state}")
        for key, org_name, full in rule_records.sender_map(s):
            click.echo(f"  {org_name or key} -> {full}")


@rules.command("audit")
@click.argument("name")
@click.option("--limit", default=50, show_default=True, help="How many changes, newest first.")
def rules_audit(name: str, limit: int) -> None:
    """Who changed which field of a rule record, and when (never a secret's value).

    \b
    Example:
      erp-sms rules audit TWILIO
    """
    from sqlalchemy import select

    from .models import RuleAudit

    _rtype, full = rule_records.record(name)
    with staff_session(readonly=True) as s:
        q = (
            select(RuleAudit)
            .where(RuleAudit.rule_type == full)
            .order_by(RuleAudit.id.desc())
            .limit(limit)
        )
        rows = list(s.scalars(q))
        for a in rows:
            detail = f" ({a.detail})" if a.detail else ""
            click.echo(
                f"{a.changed_at:%Y-%m-%d %H:%M:%S} UTC  {a.changed_by:<12} {a.action:<8} {a.field}{detail}"
            )
        if not rows:
            click.echo(f"no changes recorded for {full}")


@rules.command("test")
@click.argument("name")
def rules_test(name: str) -> None:
    """Check the stored credentials against the Twilio API and say whether they work.

    \b
    Example:
      erp-sms rules test TWILIO
    """
    from .twilio_check import OK, REJECTED, check_credentials

    full = _rule_name(name)
    with staff_session() as s:
        rule = rule_records.twilio_rule(s, full)
        if rule is None or not rule.sid or not rule.auth_code:
            raise InputError(
                "TWILIO is not set up: use `erp-sms rules set TWILIO --sid … --auth-code …`"
            )
        verdict, sentence = check_credentials(rule, get_settings())
        if verdict == OK:
            rule_records.clear_rejected(s, full, by=_user())
        elif verdict == REJECTED:
            rule_records.flag_rejected(s, full, sentence, by=_user())
    if verdict != OK:
        raise ErpSmsError(sentence)
    click.echo(sentence)


# -- options --------------------------------------------------------------------------------


@cli.group()
def options() -> None:
    """Setup options (SMSONLYONE, …).

    \b
    Example:
      erp-sms options set SMSONLYONE on
    """


@options.command("show")
def options_show() -> None:
    """Show every option, its value and what it does.

    \b
    Example:
      erp-sms options show
    """
    from .catalog import option_defs

    defs = option_defs()
    with staff_session(readonly=True) as s:
        for name, (value, is_default) in options_mod.all_values(s).items():
            note = " (default)" if is_default else ""
            click.echo(f"{name:<12} {value}{note}\n             {defs[name].help}")


@options.command("set")
@click.argument("name")
@click.argument("value")
def options_set(name: str, value: str) -> None:
    """Set an option (on/off for switches).

    \b
    Example:
      erp-sms options set SMSONLYONE on
    """
    with staff_session() as s:
        stored = options_mod.set_value(s, name, value, by=_user())
    click.echo(f"{name.upper()} = {stored}")


# -- templates ------------------------------------------------------------------------------


# -- dispatch / worker ----------------------------------------------------------------------


@cli.command()
def dispatch() -> None:
    """Deliver every text that is due, then exit with a one-line summary.

    \b
    Example:
      erp-sms dispatch        # e.g. from cron every minute
    """
    from .dispatch import Dispatcher

    with database() as db_:
        summary = Dispatcher(db_).run_once()
    click.echo(summary.line())


@cli.command()
@click.option("--worker-id", default=None, help="Name of this worker in claims (default host:pid).")
def worker(worker_id: str | None) -> None:
    """Keep delivering until SIGTERM or SIGINT; the text in hand is finished first.

    \b
    Example:
      erp-sms worker
    """
    import threading

    from .dispatch import Dispatcher

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        click.echo(f"worker: {signal.Signals(signum).name}, finishing the text in hand", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with database() as db_:
        d = Dispatcher(db_, worker_id=worker_id, stop=stop)
        click.echo(f"worker {d.worker_id}: delivering (SIGTERM to stop)", err=True)
        d.run_forever(on_batch=lambda s: click.echo(s.line(), err=True))
    click.echo("worker: stopped", err=True)


@cli.command()
@click.option("--days", default=7, show_default=True, help="Look back this many days.")
@click.option("--limit", default=500, show_default=True, help="At most this many messages per run.")
def prices(days: int, limit: int) -> None:
    """Fetch Twilio's price for recent texts that have none yet (Twilio prices a message
    after it is sent; the report totals the cost).

    \b
    Example:
      erp-sms prices            # e.g. hourly from cron
    """
    from .prices import reconcile

    with database() as db_:
        run = reconcile(db_, get_settings(), days=days, limit=limit)
    click.echo(run.line())


# -- messages -----------------------------------------------------------------------------------


@cli.group()
def messages() -> None:
    """Release, cancel or retry texts.

    \b
    Example:
      erp-sms messages release --all
    """


@messages.command("release")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Release every held text.")
def messages_release(ids: tuple[int, ...], all_: bool) -> None:
    """Put held texts back in the queue.

    \b
    Example:
      erp-sms messages release 41 42
      erp-sms messages release --all
    """
    if not ids and not all_:
        raise InputError("name the message ids to release, or use --all")
    if ids and all_:
        raise InputError("give message ids or --all, not both")
    with staff_session() as s:
        done = outbox.release(s, None if all_ else list(ids), by=_user())
    click.echo(f"{len(done)} text(s) released")


@messages.command("cancel")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--reason", default=None, help="Why (shown in the email log).")
def messages_cancel(ids: tuple[int, ...], reason: str | None) -> None:
    """Cancel queued or held texts (sent ones are past canceling).

    \b
    Example:
      erp-sms messages cancel 41 --reason "customer called"
    """
    with staff_session() as s:
        done = outbox.cancel(s, list(ids), by=_user(), reason=reason)
    click.echo(f"{len(done)} text(s) canceled")


@messages.command("retry")
@click.argument("ids", nargs=-1, type=int, required=True)
def messages_retry(ids: tuple[int, ...]) -> None:
    """Plan skipped or failed texts again with today's data and rules (after fixing
    the cause: TWILIO activated, Email 2 corrected, the contact opted in…).

    \b
    Example:
      erp-sms messages retry 41 42
    """
    from .notifier import retry

    with staff_session() as s:
        done = retry(s, list(ids), by=_user())
        lines = [line for _m, line in done]
    for line in lines:
        click.echo(line)


# -- report ------------------------------------------------------------------------------------


@cli.command("report")
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
) -> None:
    """The email log report: every text considered, with status and reason.

    \b
    Example:
      erp-sms report --since 2026-11-01 --status failed,held
      erp-sms report --order SO-104233 --format csv --output so-104233.csv
      erp-sms report --format html --output log.html
      erp-sms report --group-by month --since 2026-01-01
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


def _write_groups(
    groups: list[tuple[str, report.Totals]], fmt: str, by: str, output: Path | None
) -> None:
    """A grouped report as a table, CSV or JSON."""
    rows = [report.group_row(name, t) for name, t in groups]

    def write(out: IO[str], _progress: Callable[[int], object] | None) -> report.Totals:
        if fmt == "csv":
            import csv

            w = csv.DictWriter(out, fieldnames=report.GROUP_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        elif fmt == "json":
            import json

            json.dump(rows, out, indent=2)
            out.write("\n")
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


# -- timeline / serve ----------------------------------------------------------------------------


@cli.command()
@click.option("--order", "number", default=None, help="Sales order number.")
@click.option("--contact", default=None, help="Contact id.")
@click.option("--subject", default=None, metavar="KIND:ID", help="A subject, e.g. invoice:5001.")
def timeline(number: str | None, contact: str | None, subject: str | None) -> None:
    """Every text of an order, a contact or a subject (an invoice's reminder steps) with
    its status history, replies and consent changes, in time order.

    \b
    Example:
      erp-sms timeline --order SO-104233
      erp-sms timeline --contact 42
      erp-sms timeline --subject invoice:5001
    """
    from . import timeline as tl

    if sum(bool(x) for x in (number, contact, subject)) != 1:
        raise InputError("give one of --order N, --contact ID or --subject KIND:ID")
    with staff_session(readonly=True) as s:
        if subject:
            kind, _, ref = subject.partition(":")
            if not ref:
                raise InputError(f"--subject {subject!r}: write KIND:ID, e.g. invoice:5001")
            entries = tl.for_subject(s, kind.strip(), ref.strip())
        else:
            entries = tl.for_order(s, number) if number else tl.for_contact(s, str(contact))
        for e in entries:
            click.echo(e.line())


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Serve the Twilio webhooks (/twilio/status, /twilio/inbound) and the staff pages.
    Point Twilio at ERP_SMS_PUBLIC_URL; behind a proxy that is the URL Twilio signs.

    \b
    Example:
      ERP_SMS_PUBLIC_URL=https://erp.example.com/sms erp-sms serve --port 8080
    """
    from .webhooks import serve as run

    if not get_settings().public_url:
        click.echo(
            "warning: ERP_SMS_PUBLIC_URL is not set; signatures are checked against "
            "the URL each request shows (wrong behind a proxy)",
            err=True,
        )
    click.echo(f"erp-sms: serving on http://{host}:{port}", err=True)
    run(host, port)


# -- demo --------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--database", default=None, help="SQLite file for the demo (default: a temporary one)."
)
def demo(database: str | None) -> None:
    """Build sample data, fire all four events, deliver through a local SMTP sink and a
    local Twilio-compatible API, and print the email log report.

    \b
    Example:
      erp-sms demo
    """
    from .demo import run_demo

    run_demo(database, echo=click.echo)


cli.add_command(templates_group)
cli.add_command(contacts_group)
cli.add_command(sequences_group)


# -- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="erp-sms")


if __name__ == "__main__":
    main()
