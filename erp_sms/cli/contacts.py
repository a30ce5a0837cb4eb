"""``erp-sms contacts …``: opt-in, opt-out (with a consent trail), a one-off text, and the
contacts whose gateway address is at a carrier that shut down or is shutting down its
gateway."""

from __future__ import annotations

import datetime as dt
import sys

import click

from .. import staff
from .common import _user, staff_session


@click.group("contacts")
def group() -> None:
    """Consent and carrier-gateway housekeeping for contacts.

    \b
    Example:
      erp-sms contacts opt-out 42 --note "asked by phone"
      erp-sms contacts text 42 --message "Your order is ready for pickup at door 3."
      erp-sms contacts gateways
    """


def _change(contact: str, opted_in: bool, note: str | None) -> None:
    with staff_session() as s:
        lines = staff.change_consent(s, contact, opted_in, by=_user(), source="cli", note=note)
    for line in lines:
        click.echo(line)


@group.command("opt-in")
@click.argument("contact")
@click.option("--note", default=None, help="How the consent was given (kept in the consent trail).")
def opt_in(contact: str, note: str | None) -> None:
    """Add SMSUPDATE to a contact and record the consent (source cli, time, who).

    \b
    Example:
      erp-sms contacts opt-in 42 --note "signed form at pickup"
    """
    _change(contact, True, note)


@group.command("opt-out")
@click.argument("contact")
@click.option("--note", default=None, help="How the request came in (kept in the consent trail).")
def opt_out(contact: str, note: str | None) -> None:
    """Remove SMSUPDATE from a contact and record the opt-out (source cli, time, who).

    \b
    Example:
      erp-sms contacts opt-out 42 --note "asked by phone"
    """
    _change(contact, False, note)


@group.command("gateways")
def gateways() -> None:
    """Contacts whose Email 2 is a carrier gateway that is shut down or shutting down,
    with the date and what to do.

    \b
    Example:
      erp-sms contacts gateways
    """
    today = dt.date.today()
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
