"""``erp-sms users``: staff sign-ins for the web pages."""

from __future__ import annotations

import sys

import click

from .. import users
from ..errors import InputError
from .common import _user, staff_session


@click.group("users")
def group() -> None:
    """Staff sign-ins for the web pages (`erp-sms serve`).

    \b
    Roles: viewer reads every page; operator also releases, retries and cancels
    texts, texts contacts and answers replies; admin also changes the TWILIO records,
    options, templates and reminders.

    \b
    Example:
      erp-sms users add maria --role admin
      erp-sms users role tom viewer
      erp-sms users zone maria America/Denver
      erp-sms users list
    """


@group.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(users.ROLES),
    default=None,
    help="viewer, operator or admin (new users: operator; left out: unchanged).",
)
def users_add(name: str, role: str | None) -> None:
    """Add a staff user (or set a new password). The password is prompted for, or read
    from standard input when it is not a terminal; it is stored only as a hash.

    \b
    Example:
      erp-sms users add maria --role admin
      printf '%s\\n' "$PASSWORD" | erp-sms users add maria
    """
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InputError("no password on standard input: nothing was changed")
    with staff_session() as s:
        user = users.add(s, name, password, by=_user(), role=role)
        now = user.role
    click.echo(f"{name.strip()} can sign in to the staff pages as {now}")


@group.command("role")
@click.argument("name")
@click.argument("role")
def users_role(name: str, role: str) -> None:
    """Give a staff user a role: viewer, operator or admin (from their next page).

    \b
    Example:
      erp-sms users role tom viewer
    """
    with staff_session() as s:
        now = users.set_role(s, name, role)
    click.echo(f"{name.strip()} is {now}")


@group.command("remove")
@click.argument("name")
def users_remove(name: str) -> None:
    """Remove a staff user; their open sessions end.

    \b
    Example:
      erp-sms users remove maria
    """
    with staff_session() as s:
        users.remove(s, name)
    click.echo(f"{name.strip()} removed")


@group.command("list")
def users_list() -> None:
    """Staff users, when each last signed in, and whether one is locked.

    \b
    Example:
      erp-sms users list
    """
    with staff_session(readonly=True) as s:
        rows = users.all_users(s)
        for u in rows:
            last = f"{u.last_sign_in_at:%Y-%m-%d %H:%M} UTC" if u.last_sign_in_at else "never"
            locked = f"  locked until {u.locked_until:%H:%M} UTC" if u.locked_until else ""
            zone = u.time_zone or "(default zone)"
            click.echo(f"{u.name:<20} {u.role:<9} last sign-in {last}  {zone}{locked}")
        if not rows:
            click.echo("no staff users yet: `erp-sms users add NAME`")


@group.command("zone")
@click.argument("name")
@click.argument("zone", required=False, default="")
def users_zone(name: str, zone: str) -> None:
    """Show the pages to a staff user in their own time zone (an IANA name; left out:
    back to ERP_SMS_DEFAULT_TIMEZONE). Staff can also set it on the pages.

    \b
    Example:
      erp-sms users zone maria America/Denver
    """
    with staff_session() as s:
        now = users.set_time_zone(s, name, zone)
    click.echo(f"{name.strip()} sees times in {now}")
