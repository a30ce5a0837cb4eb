"""Create or migrate the tables: ``erp-sms db upgrade``.

Two Alembic branches share one version table of our own (``erp_sms_alembic_version``,
so a host's own Alembic history is never touched): ``erp`` holds the reference ERP
tables, ``plugin`` the plugin's. A host with its own ERP tables upgrades ``plugin`` only.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

VERSION_TABLE = "erp_sms_alembic_version"


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("erp_sms") / "migrations"))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, *, plugin_only: bool = False) -> None:
    """Bring the database to the newest schema; safe to run again."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "plugin@head" if plugin_only else "heads")


def current(engine: Engine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return set(ctx.get_current_heads())
