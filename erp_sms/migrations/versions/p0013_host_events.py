"""what the host is told over HTTP (ERP_SMS_HOST_WEBHOOK_URL): an outbox of its own,
written with each change and delivered by the worker

Revision ID: p0013
Revises: p0012
Create Date: 2026-12-05 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0013"
down_revision: str | Sequence[str] | None = "p0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_host_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", DATETIME, nullable=False),
        sa.Column("delivered_at", DATETIME, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", DATETIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("lease_until", DATETIME, nullable=True),
    )
    op.create_index("ix_sms_host_event_undelivered", "sms_host_event", ["delivered_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_sms_host_event_undelivered", table_name="sms_host_event")
    op.drop_table("sms_host_event")
