"""``erp-sms timeline`` and ``serve``."""

from __future__ import annotations

import errno
import socket

import click

from ..config import get_settings
from ..errors import InputError
from .common import staff_session

# -- timeline / serve ----------------------------------------------------------------------------


@click.command()
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
    from .. import timeline as tl

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


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on (1-65535).",
)
def serve(host: str, port: int) -> None:
    """Serve the Twilio webhooks (/twilio/status, /twilio/inbound) and the staff pages.
    Point Twilio at ERP_SMS_PUBLIC_URL; behind a proxy that is the URL Twilio signs.

    \b
    Example:
      ERP_SMS_PUBLIC_URL=https://erp.example.com/sms erp-sms serve --port 8080
    """
    from ..webhooks import serve as run

    if not get_settings().public_url:
        click.echo(
            "warning: ERP_SMS_PUBLIC_URL is not set; signatures are checked against "
            "the URL each request shows (wrong behind a proxy)",
            err=True,
        )
    _can_listen(host, port)
    try:
        run(
            host,
            port,
            on_listening=lambda url: click.echo(
                f"erp-sms: listening on {url} (webhooks at /twilio/…, staff pages at /)", err=True
            ),
        )
    except OSError as exc:  # taken between the check and the server's own bind
        _refuse(host, port, exc)
        raise


def _can_listen(host: str, port: int) -> None:
    """One line when ``host:port`` cannot be listened on — checked with a socket of our
    own, closed at once (the server's, on a failed bind, would be left open)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        _refuse(host, port, exc)
        raise


def _refuse(host: str, port: int, exc: OSError) -> None:
    why = {
        errno.EADDRINUSE: "is in use by another program",
        errno.EACCES: "needs privileges this user does not have",
        errno.EADDRNOTAVAIL: "is not an address of this machine",
    }.get(exc.errno or 0)
    if why is not None:
        raise InputError(
            f"cannot listen on {host}:{port}: it {why}; choose another with --port (or --host)"
        ) from None
