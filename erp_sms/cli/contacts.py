"""``erp-sms contacts …``: opt-in, opt-out (with a consent trail), a one-off text, and the
contacts whose gateway address is at a carrier that shut down or is shutting down its
gateway."""

from __future__ import annotations

import csv
import sys
from typing import IO

import click

from .. import consent_trail as trail_module
from .. import staff
from ..codes import Program
from ..errors import InputError
from ..recipients import default_lookup
from .common import _user, staff_session
from .progress import progress_bar


@click.group("contacts")
def group() -> None:
    """Consent and carrier-gateway housekeeping for contacts.

    \b
    Example:
      erp-sms contacts opt-out 42 --note "asked by phone"
      erp-sms contacts text 42 --message "Your order is ready for pickup at door 3."
      erp-sms contacts consent 42
      erp-sms contacts import opt-ins.csv
      erp-sms contacts gateways
    """


def _change(contact: str, opted_in: bool, note: str | None, program: str | None = None) -> None:
    with staff_session() as s:
        lines = staff.change_consent(
            s, contact, opted_in, by=_user(), source="cli", note=note, program=program
        )
    for line in lines:
        click.echo(line)


_PROGRAM = click.option(
    "--program",
    type=click.Choice(Program.ALL),
    default=None,
    help="Only this program: orders (order updates), reminders (payment reminders) or staff "
    "(staff's texts); without it, all.",
)


@group.command("opt-in")
@click.argument("contact")
@click.option("--note", default=None, help="How the consent was given (kept in the consent trail).")
@_PROGRAM
def opt_in(contact: str, note: str | None, program: str | None) -> None:
    """Add SMSUPDATE to a contact and record the consent (source cli, time, who).

    \b
    Example:
      erp-sms contacts opt-in 42 --note "signed form at pickup"
      erp-sms contacts opt-in 42 --program orders
    """
    _change(contact, True, note, program)


@group.command("opt-out")
@click.argument("contact")
@click.option("--note", default=None, help="How the request came in (kept in the consent trail).")
@_PROGRAM
def opt_out(contact: str, note: str | None, program: str | None) -> None:
    """Remove SMSUPDATE from a contact and record the opt-out (source cli, time, who).

    \b
    Example:
      erp-sms contacts opt-out 42 --note "asked by phone"
      erp-sms contacts opt-out 42 --program reminders --note "pays by direct debit"
    """
    _change(contact, False, note, program)


@group.command("gateways")
def gateways() -> None:
    """Contacts whose Email 2 is a carrier gateway that is shut down or shutting down,
    with the date and what to do.

    \b
    Example:
      erp-sms contacts gateways
    """
    from ..sendwindow import now

    today = now().date()
    with staff_session(readonly=True) as s:
        rows = staff.gateway_contacts(s, today)
    for c in rows:
        opted = "" if c.opted_in else " (not opted in)"
        click.echo(
            f"{c.key:>6}  {c.name}{opted}  {c.gateway}\n        "
            f"{c.carrier.describe(today)} — {c.todo}"
        )
    click.echo(f"{len(rows)} contact(s) on shut-down or sunsetting gateways")


@group.command("text")
@click.argument("contact")
@click.option(
    "--message",
    "message",
    default=None,
    help="The text (a template: {{ contact.name }} works); read from standard input if left out.",
)
def text(contact: str, message: str | None) -> None:
    """Send a one-off text to a contact: the same rules as every text (SMSUPDATE, the
    opt-out list, the route, the length checks, the organization's number), queued for
    the worker and logged in the email log.

    \b
    Example:
      erp-sms contacts text 42 --message "Hi {{ contact.name }}, your order is ready."
      echo "Your order is ready." | erp-sms contacts text 42
    """
    if message is None:
        message = sys.stdin.read()
    with staff_session() as s:
        lines = staff.text_contact(s, contact, message, by=_user())
    for line in lines:
        click.echo(line)


@group.command("consent")
@click.argument("contact")
def consent_trail(contact: str) -> None:
    """A contact's consent trail: every opt-in and opt-out with its time (UTC), source,
    who and the number.

    \b
    Example:
      erp-sms contacts consent 42
      erp-sms report --consent --format csv --output consent.csv   # everyone, for an auditor
    """
    with staff_session(readonly=True) as s:
        view = default_lookup().contact(s, contact)
        if view is None:
            raise InputError(f"no contact {contact!r}: give the contact's id")
        rows = trail_module.trail(s, contact_key=contact)
    click.echo(f"consent trail of {view.name} (contact {view.key}), times in UTC")
    for r in rows:
        who = f" by {r['actor']}" if r["actor"] else ""
        number = f" {r['number']}" if r["number"] else ""
        detail = f" — {r['detail']}" if r["detail"] else ""
        click.echo(f"  {r['at']}  {r['action']:<7} {r['source']}{who}{number}{detail}")
    if not rows:
        click.echo("  no opt-in or opt-out recorded")


@group.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
def import_consents(file: IO[str]) -> None:
    """Record opt-ins collected elsewhere (a signed form, a web form): a CSV with the
    columns contact (id), date (YYYY-MM-DD), source and optionally note. Every row is
    checked first; a consent older than the contact's last opt-out is not applied.

    \b
    Example:
      erp-sms contacts import opt-ins.csv
      # opt-ins.csv:
      #   contact,date,source,note
      #   42,2026-10-03,paper form at pickup,signed by Ann Lee
    """
    reader = csv.DictReader(file)
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in trail_module.IMPORT_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"{file.name}: no {missing[0]} column: the header must be contact,date,source[,note]"
        )
    rows = [{k.strip().lower(): v or "" for k, v in row.items() if k} for row in reader]
    # Each row is checked, then applied: two steps a row.
    with staff_session() as s, progress_bar(2 * len(rows), "importing") as advance:
        done = trail_module.import_opt_ins(s, rows, by=_user(), progress=advance)
    for line in done.lines:
        click.echo(line)
    click.echo(f"{done.recorded} consent(s) recorded")


@group.command("erase")
@click.argument("contact")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase(contact: str, yes: bool) -> None:
    """Erase a contact's personal data from erp-sms's tables at their request: the words,
    number, address and name of their texts, their replies, consent records and
    customer-search entry. Counts and costs in reports stay; an opt-out is kept as the
    number's keyed hash, so the number still gets nothing. The ERP's own contact is the
    ERP's to remove.

    \b
    Example:
      erp-sms contacts erase 42 --yes
    """
    if not yes and not click.confirm(
        f"Erase contact {contact}'s data from erp-sms (this cannot be undone)?", default=False
    ):
        raise click.Abort()
    with staff_session() as s:
        line = staff.erase_contact(s, contact, by=f"cli:{_user()}", confirmed=True)
    click.echo(line)
