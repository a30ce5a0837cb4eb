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


def downgrade(engine: Engine, revision: str) -> None:
    """Take the plugin's tables back to ``revision`` (e.g. ``p0016``): what an operator
    does before installing the erp-sms that knew no newer one. Columns and tables a
    newer version added are dropped with what they held."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def heads(*, plugin_only: bool = False) -> set[str]:
    """The newest revision of each branch this erp-sms knows (``plugin`` only: for a
    host with its own ERP tables)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    found = set(script.get_heads())
    if plugin_only:
        found = {h for h in found if h.startswith("p")}
    return found


def revisions() -> list[str]:
    """Every plugin revision, oldest first (what ``db downgrade`` accepts)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return sorted(r.revision for r in script.walk_revisions() if r.revision.startswith("p"))


def current(engine: Engine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return set(ctx.get_current_heads())
