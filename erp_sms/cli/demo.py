"""``erp-sms demo``."""

from __future__ import annotations

import click

# -- demo --------------------------------------------------------------------------------------


@click.command()
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
    from ..demo import run_demo

    run_demo(database, echo=click.echo)
