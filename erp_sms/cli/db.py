"""``erp-sms db``: create or migrate the tables."""

from __future__ import annotations

import sys

import click

from .. import customers
from ..errors import InputError
from .common import _safe_url, database

# -- db --------------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """Create or migrate the tables.

    \b
    Example:
      ERP_SMS_DATABASE_URL=postgresql+psycopg://erp@localhost/erp erp-sms db upgrade
    """


@db.command("upgrade")
@click.option(
    "--plugin-only", is_flag=True, help="Only the plugin's tables (a host with its own ERP tables)."
)
@click.option(
    "--with-reference",
    is_flag=True,
    help="Also the reference ERP tables when ERP_SMS_HOST_MODULE is set (normally not).",
)
def db_upgrade(plugin_only: bool, with_reference: bool) -> None:
    """Create or migrate all tables (ERP reference + plugin); safe to run again. With
    ERP_SMS_HOST_MODULE set (a host with its own tables), only the plugin's tables.

    \b
    Example:
      erp-sms db upgrade
      erp-sms db upgrade --plugin-only
    """
    from .. import migrate
    from ..host import host_configured

    if plugin_only and with_reference:
        raise InputError("--plugin-only and --with-reference contradict each other: pick one")
    plugin_only = plugin_only or (host_configured() and not with_reference)
    with database() as db_:
        before = migrate.current(db_.engine)
        if sys.stderr.isatty():  # a big table can take minutes: say something is going on
            click.echo(
                f"database {_safe_url()}: {'upgrading' if before else 'creating'}…", err=True
            )
        migrate.upgrade(db_.engine, plugin_only=plugin_only)
        after = migrate.current(db_.engine)
        heads = ", ".join(sorted(after))
        # The customer search's directory, filled now rather than by the pages a step
        # at a time (the first time: every text the log holds).
        added = customers.refresh(db_).added
    only = "; plugin tables only (the host has its own)" if plugin_only else ""
    if not before:
        click.echo(f"database {_safe_url()}: created the tables ({heads}){only}")
    elif before == after:
        click.echo(f"database {_safe_url()} is up to date ({heads}); nothing to do{only}")
    else:
        was = ", ".join(sorted(before))
        click.echo(f"database {_safe_url()}: upgraded from {was} to {heads}{only}")
    if added:
        click.echo(f"customer search: {added} contact(s) and order(s) read from the email log")


@db.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_downgrade(revision: str, yes: bool) -> None:
    """Take the plugin's tables back to REVISION (e.g. p0016), before installing an
    erp-sms that knows no newer one. What newer versions added (columns, tables) is
    dropped with what it held: back up the database first.

    \b
    Example:
      erp-sms db downgrade p0016 --yes
      pip install 'erp-sms==<the older version>'
    """
    from .. import migrate

    known = migrate.revisions()
    if revision not in known:
        raise InputError(
            f"unknown revision {revision!r}: use one of {known[0]} … {known[-1]} "
            "(each release's notes say which it needs)"
        )
    if not yes and not click.confirm(
        f"Take the erp-sms tables in {_safe_url()} back to {revision}? What newer versions "
        "added is dropped",
        default=False,
    ):
        raise click.Abort()
    with database() as db_:
        migrate.downgrade(db_.engine, revision)
        heads = ", ".join(sorted(migrate.current(db_.engine)))
    click.echo(f"database {_safe_url()}: now at {heads}")
