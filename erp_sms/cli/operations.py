"""``erp-sms doctor`` and ``purge``: what an operator runs beside the worker."""

from __future__ import annotations

import click

from ..config import get_settings
from .common import database
from .progress import progress_bar


@click.command()
@click.option(
    "--offline", is_flag=True, help="Do not connect to the SMTP relay (only the database)."
)
def doctor(offline: bool) -> None:
    """Check what stops or endangers texts: one line per problem with its fix; exits 1
    when there is one, 0 when there is none.

    \b
    Example:
      erp-sms doctor && echo "all good"
    """
    from ..staff import doctor as checks

    report = checks.examine(get_settings(), smtp=not offline)
    for finding in report.findings:
        click.echo(f"problem: {finding}")
    if report.findings:
        raise SystemExit(1)
    click.echo(f"no problems found: {'; '.join(report.healthy) or 'nothing to check'}")


@click.command()
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1, max=36500),
    required=True,
    metavar="DAYS",
    help="Texts finished more than DAYS days ago.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
def purge(days: int, dry_run: bool) -> None:
    """Remove the words, numbers, addresses and raw provider reports of texts finished
    more than DAYS days ago (and of replies as old); counts and costs in reports stay,
    and so do opt-outs and the consent trail. SMSRETENTIONDAYS makes the worker do it
    daily.

    \b
    Example:
      erp-sms purge --older-than 365 --dry-run
      erp-sms purge --older-than 365
    """
    from .. import retention

    with database() as db_:
        if dry_run:
            done = retention.purge(db_, days, dry_run=True)
        else:
            with db_.read_session() as s:
                total = retention.count_purgeable(s, days)
            with progress_bar(total, "purging") as advance:
                done = retention.purge(db_, days, progress=advance)
    click.echo(done.line(days, dry_run=dry_run))
