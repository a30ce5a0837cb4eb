"""the customer directory: one row per contact and per order the email log names, their
words folded, so a search reads the customers, not every text (filled from the log by
customers.refresh; on PostgreSQL a trigram index when pg_trgm can be had)

Revision ID: p0009
Revises: p0008
Create Date: 2026-12-04 22:00:00
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p0009"
down_revision: str | Sequence[str] | None = "p0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)


def upgrade() -> None:
    op.create_table(
        "sms_directory",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("folded", sa.String(length=400), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "key", "name", "number", name="uq_sms_directory"),
    )
    op.create_table(
        "sms_directory_mark",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _trigram_index(bind)


def _trigram_index(bind: sa.Connection) -> None:
    """``LIKE '%muller%'`` through an index: pg_trgm ships with PostgreSQL and is a
    trusted extension (a database owner may create it). Without it the search reads the
    directory, still far smaller than the log."""
    with bind.begin_nested():
        available = bind.scalar(
            sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")
        )
    if not available:
        log.warning("pg_trgm is not available: customer search reads the whole directory")
        return
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            bind.execute(
                sa.text(
                    "CREATE INDEX ix_sms_directory_folded ON sms_directory "
                    "USING gin (folded gin_trgm_ops)"
                )
            )
    except sa.exc.DBAPIError as exc:
        log.warning("no trigram index for customer search (%s)", exc.orig)


def downgrade() -> None:
    op.drop_table("sms_directory_mark")
    op.drop_table("sms_directory")
