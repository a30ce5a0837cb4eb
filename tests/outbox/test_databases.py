"""Schema and host-path behaviour on every database (SQLite; PostgreSQL and MariaDB on
loopback when present)."""

from __future__ import annotations

import logging
from dataclasses import replace

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

import erp_sms
from erp_sms import erp, migrate, signals
from erp_sms.db import Database
from erp_sms.erp import ErpBase
from erp_sms.migrate import VERSION_TABLE
from erp_sms.models import Base, Status
from erp_sms.recipients import ErpLookup

from ..helpers import messages, scene


def test_db_upgrade_is_safe_to_rerun_and_matches_the_models(any_db: Database):
    migrate.upgrade(any_db.engine)  # already at head: a no-op
    migrate.upgrade(any_db.engine, plugin_only=True)
    assert migrate.current(any_db.engine) == {"e0002", "p0017"}
    with any_db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        diff = compare_metadata(ctx, [ErpBase.metadata, Base.metadata])
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]
    # The search's trigram index is the migration's, made only where pg_trgm can be had.
    diff = [
        d for d in diff if not (d[0] == "remove_index" and d[1].name == "ix_sms_directory_folded")
    ]
    assert diff == []


def test_plugin_only_upgrade_creates_no_erp_tables(tmp_path):
    from sqlalchemy import inspect

    from erp_sms.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'host.db'}")
    migrate.upgrade(engine, plugin_only=True)
    names = set(inspect(engine).get_table_names())
    names.discard(VERSION_TABLE)
    assert "sms_message" in names and not any(n.startswith("erp_") for n in names)
    engine.dispose()


def _world(s):
    return scene(s, {"ann": ("Ann", "3125550101@vtext.com")}).order


class LongNameLookup(ErpLookup):
    """A host whose contact names are longer than the email log's column (255)."""

    def contacts(self, session, order, *, listed_only):
        return [
            replace(c, name="B" * 300)
            for c in super().contacts(session, order, listed_only=listed_only)
        ]


def test_notifier_commits_and_rolls_back_with_the_host_on_every_database(any_db: Database):
    with any_db.sessions() as s:
        order = _world(s)
        signals.sent_to_production.send(order, session=s)
        s.rollback()
        assert messages(s) == []
        order = s.get(erp.SalesOrder, order.id)
        signals.sent_to_production.send(order, session=s)
        signals.sent_to_production.send(order, session=s)
        s.commit()
        rows = messages(s)
        assert [(m.contact_name, m.status) for m in rows] == [("Ann", Status.QUEUED)]


def test_an_error_in_our_insert_leaves_the_hosts_transaction_usable(any_db: Database, caplog):
    """PostgreSQL and MariaDB reject our insert (value too long). Inside our SAVEPOINT
    that error must not abort the host's transaction, and the failure is on record."""
    event = erp_sms.register_event("long_name_test", "SMS S2P", lookup=LongNameLookup())
    with any_db.sessions() as s:
        order = _world(s)
        s.add(erp.WorkOrder(number="WO-9", sales_order=order, status="complete"))
        with caplog.at_level(logging.ERROR, logger="erp_sms"):
            event.send(order, session=s)  # never raises
        s.commit()
        assert s.scalar(select(erp.WorkOrder.number)) == "WO-9"
        rows = messages(s)
        if any_db.engine.dialect.name == "sqlite":  # SQLite does not enforce lengths
            assert [m.status for m in rows] == [Status.QUEUED]
        else:
            assert "could not queue" in caplog.text
            (row,) = rows  # the failure itself is on record
            assert row.status == Status.FAILED and "could not queue texts" in row.reason
