"""``erp-sms replies``: customers' replies that need a person — list, answer, mark done."""

from __future__ import annotations

import click

from .. import staff
from .common import _user, staff_session


@click.group("replies")
def group() -> None:
    """Customers' replies that need a person: list them, answer, mark done.

    \b
    Example:
      erp-sms replies list
      erp-sms replies answer 12 --message "Yes, dock 4 is fine."
      erp-sms replies done 12
    """


@group.command("list")
@click.option("--all", "all_", is_flag=True, help="Also the replies already done.")
def replies_list(all_: bool) -> None:
    """List the replies to answer, newest first (id, time in UTC, number, contact, order,
    text).

    \b
    Example:
      erp-sms replies list --all
    """
    with staff_session(readonly=True) as s:
        rows = staff.replies(s, show_done=all_)
        names = staff.contact_names(s, rows)
    if not rows:
        click.echo("no replies to answer" if not all_ else "no replies")
        return
    for r in rows:
        done = f"  [done by {r.done_by}]" if r.done_at else ""
        text = " ".join(r.body.split())
        click.echo(
            f"#{r.id}  {r.received_at:%Y-%m-%d %H:%M}  {r.from_number}  "
            f"{names.get(r.id, '(no contact)')}  {r.order_number or '-'}  {r.kind}: {text}{done}"
        )


@group.command("answer")
@click.argument("reply_id", type=click.IntRange(min=1, max=2**63 - 1))
@click.option("--message", "-m", required=True, help="The answer ({{ contact.name }} works).")
def replies_answer(reply_id: int, message: str) -> None:
    """Answer a reply by text, from the number the customer wrote to; the reply is done.

    \b
    Example:
      erp-sms replies answer 12 --message "Yes, dock 4 is fine."
    """
    with staff_session() as s:
        said = staff.answer_reply(s, reply_id, message, by=_user())
    click.echo(said)


@group.command("done")
@click.argument("reply_id", type=click.IntRange(min=1, max=2**63 - 1))
def replies_done(reply_id: int) -> None:
    """Mark a reply done (answered another way, or nothing to answer).

    \b
    Example:
      erp-sms replies done 12
    """
    with staff_session() as s:
        said = staff.mark_reply_done(s, reply_id, by=_user())
    click.echo(said)
