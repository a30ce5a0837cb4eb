"""``erp-sms demo``."""

from __future__ import annotations

import sys

import click

# -- demo --------------------------------------------------------------------------------------


@click.command()
@click.option(
    "--database", default=None, help="SQLite file for the demo (default: a temporary one)."
)
@click.option(
    "--serve/--no-serve",
    default=None,
    help="Keep the staff pages up on the demo data until Ctrl-C (default: on a terminal).",
)
def demo(database: str | None, serve: bool | None) -> None:
    """Build sample data, fire all four events, deliver through a local SMTP sink and a
    local Twilio-compatible API, print the email log report, and end with the staff
    pages' URL and a sign-in.

    \b
    Example:
      erp-sms demo
      erp-sms demo --no-serve
    """
    import threading

    from ..demo import run_demo

    if serve is None:
        serve = sys.stdin.isatty() and sys.stdout.isatty()
    stop = threading.Event() if serve else None
    try:
        run_demo(database, echo=click.echo, serve_until=stop)
    except KeyboardInterrupt:
        click.echo("demo: stopped")
