"""``erp-sms options``: show and set the setup options."""

from __future__ import annotations

import click

from .. import staff
from .common import _user, staff_session

# -- options --------------------------------------------------------------------------------


@click.group()
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
    with staff_session(readonly=True) as s:
        for row in staff.option_rows(s):
            note = " (default)" if row.is_default else ""
            click.echo(f"{row.name:<12} {row.value}{note}\n             {row.help}")


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
        stored = staff.set_option(s, name, value, by=_user())
    click.echo(f"{name.upper()} = {stored}")
