"""operations: when a text was purged, erased numbers' opt-outs (as keyed hashes), each worker's heartbeat, the plugin's housekeeping state, and the key
erased numbers' opt-outs are hashed with (random, made here once per database)

Revision ID: p0017
Revises: p0016
Create Date: 2026-12-05 12:00:00
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0017"
down_revision: str | Sequence[str] | None = "p0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", DATETIME, nullable=True))
    op.create_table(
        "sms_worker",
        sa.Column("worker_id", sa.String(64), primary_key=True),
        sa.Column("started_at", DATETIME, nullable=False),
        sa.Column("seen_at", DATETIME, nullable=False),
        sa.Column("stopped_at", DATETIME, nullable=True),
        sa.Column("version", sa.String(32), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
    )
    state = op.create_table(
        "sms_state",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", DATETIME, nullable=False),
    )
    op.create_table(
        "sms_opt_out_erased",
        sa.Column("digest", sa.String(32), primary_key=True),
        sa.Column("program", sa.String(16), primary_key=True),
        sa.Column("at", DATETIME, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
    )
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    op.bulk_insert(
        state, [{"name": "erase_key", "value": secrets.token_hex(32), "updated_at": now}]
    )


def downgrade() -> None:
    op.drop_table("sms_opt_out_erased")
    op.drop_table("sms_state")
    op.drop_table("sms_worker")
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
