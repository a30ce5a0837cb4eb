"""``erp-sms db``: create or migrate the tables."""

from __future__ import annotations

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
        migrate.upgrade(db_.engine, plugin_only=plugin_only)
        heads = ", ".join(sorted(migrate.current(db_.engine)))
        # The customer search's directory, filled now rather than by the pages a step
        # at a time (the first time: every text the log holds).
        added = customers.refresh(db_).added
    only = "; plugin tables only (the host has its own)" if plugin_only else ""
    click.echo(f"database {_safe_url()} is up to date ({heads}){only}")
    if added:
        click.echo(f"customer search: {added} contact(s) and order(s) read from the email log")
