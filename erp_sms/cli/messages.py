"""``erp-sms messages``: release, cancel or retry texts."""

from __future__ import annotations

import click

from .. import staff
from ..errors import InputError
from .common import _user, staff_session

# A message id as every database can store it (a larger one would be a raw "out of range").
MESSAGE_ID = click.IntRange(1, 2**31 - 1)

# -- messages -----------------------------------------------------------------------------------


@click.group()
def messages() -> None:
    """Release, cancel or retry texts.

    \b
    Example:
      erp-sms messages release --all
    """


@messages.command("release")
@click.argument("ids", nargs=-1, type=MESSAGE_ID)
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
        done = staff.release(s, None if all_ else list(ids), by=_user())
    click.echo(f"{done} text(s) released")


@messages.command("cancel")
@click.argument("ids", nargs=-1, type=MESSAGE_ID, required=True)
@click.option("--reason", default=None, help="Why (shown in the email log).")
def messages_cancel(ids: tuple[int, ...], reason: str | None) -> None:
    """Cancel queued or held texts (sent ones are past canceling).

    \b
    Example:
      erp-sms messages cancel 41 --reason "customer called"
    """
    with staff_session() as s:
        done = staff.cancel(s, list(ids), by=_user(), reason=reason)
    click.echo(f"{done} text(s) canceled")


@messages.command("retry")
@click.argument("ids", nargs=-1, type=MESSAGE_ID, required=True)
def messages_retry(ids: tuple[int, ...]) -> None:
    """Plan skipped or failed texts again with today's data and rules (after fixing
    the cause: TWILIO activated, Email 2 corrected, the contact opted in…).

    \b
    Example:
      erp-sms messages retry 41 42
    """
    with staff_session() as s:
        lines = staff.retry(s, list(ids), by=_user())
    for line in lines:
        click.echo(line)
