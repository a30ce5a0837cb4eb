"""opt-out list keyed by number; the recipient's number on every message

Revision ID: p0002
Revises: p0001
Create Date: 2026-11-21 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0002"
down_revision: str | Sequence[str] | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_opt_out",
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("at", DATETIME, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("contact_ref", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("number"),
    )
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_sms_message_recipient", ["recipient"], unique=False)
    with op.batch_alter_table("sms_consent_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("number", sa.String(length=32), nullable=True))
    # Twilio rows already carry the E.164 number as their address.
    op.execute("UPDATE sms_message SET recipient = address WHERE channel = 'twilio'")


def downgrade() -> None:
    with op.batch_alter_table("sms_consent_event", schema=None) as batch_op:
        batch_op.drop_column("number")
        batch_op.drop_column("actor")
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_message_recipient")
        batch_op.drop_column("recipient")
    op.drop_table("sms_opt_out")
