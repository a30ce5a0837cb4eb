"""reminder sequences (runs, staff-edited steps, per-organization switches), senders per
site, and on each message its step, send-window flag and sender

Revision ID: p0004
Revises: p0003
Create Date: 2026-11-22 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0004"
down_revision: str | Sequence[str] | None = "p0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_sequence_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.String(length=64), nullable=False),
        sa.Column("order_ref", sa.String(length=64), nullable=False),
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("order_number", sa.String(length=64), nullable=False),
        sa.Column("organization_ref", sa.String(length=64), nullable=True),
        sa.Column("organization_name", sa.String(length=255), nullable=True),
        sa.Column("anchor", sa.Date(), nullable=False),
        sa.Column("started_at", DATETIME, nullable=False),
        sa.Column("stopped_at", DATETIME, nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sequence", "order_ref", "subject_ref", name="uq_sms_sequence_run"),
    )
    op.create_index("ix_sms_sequence_run_org", "sms_sequence_run", ["organization_ref"])
    op.create_table(
        "sms_sequence",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("updated_at", DATETIME, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "sms_sequence_step",
        sa.Column("sequence", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("sms", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("sequence", "step"),
    )
    op.create_table(
        "sms_sequence_switch",
        sa.Column("sequence", sa.String(length=64), nullable=False),
        sa.Column("organization_ref", sa.String(length=64), nullable=False),
        sa.Column("organization_name", sa.String(length=255), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", DATETIME, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("sequence", "organization_ref"),
    )
    op.create_table(
        "sms_sender_map",
        sa.Column("organization_ref", sa.String(length=64), nullable=False),
        sa.Column("organization_name", sa.String(length=255), nullable=True),
        sa.Column("rule_type", sa.String(length=32), nullable=False),
        sa.Column("updated_at", DATETIME, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("organization_ref"),
    )
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("step", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("send_window", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("sender", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_sms_message_order_event", ["order_ref", "event"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_message_order_event")
        batch_op.drop_column("sender")
        batch_op.drop_column("send_window")
        batch_op.drop_column("step")
    op.drop_table("sms_sender_map")
    op.drop_table("sms_sequence_switch")
    op.drop_table("sms_sequence_step")
    op.drop_table("sms_sequence")
    op.drop_index("ix_sms_sequence_run_org", table_name="sms_sequence_run")
    op.drop_table("sms_sequence_run")
