"""an order's texts folded per contact (SMSDIGESTMINUTES): the fold rows the host path
locks, and on each merged text the message that carries it

Revision ID: p0011
Revises: p0010
Create Date: 2026-12-05 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0011"
down_revision: str | Sequence[str] | None = "p0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_fold",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("carrier_key", sa.String(255), nullable=True),
        sa.Column("carried", sa.Text(), nullable=False),
        sa.Column("token", sa.String(32), nullable=True),
        sa.Column("updated_at", DATETIME, nullable=False),
    )
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merged_into", sa.Integer(), nullable=True))
        batch_op.create_index("ix_sms_message_merged_into", ["merged_into"])


def downgrade() -> None:
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_message_merged_into")
        batch_op.drop_column("merged_into")
    op.drop_table("sms_fold")
