"""replies mailed to staff (SMSREPLYALERT): when each was mailed, and the worker run that
took it

Revision ID: p0012
Revises: p0011
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0012"
down_revision: str | Sequence[str] | None = "p0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sms_inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alerted_at", DATETIME, nullable=True))
        batch_op.add_column(sa.Column("alert_token", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("alert_claimed_at", DATETIME, nullable=True))
    # Replies from before: not mailed now (staff saw them on the pages).
    op.execute("UPDATE sms_inbound SET alerted_at = received_at")


def downgrade() -> None:
    with op.batch_alter_table("sms_inbound", schema=None) as batch_op:
        batch_op.drop_column("alert_claimed_at")
        batch_op.drop_column("alert_token")
        batch_op.drop_column("alerted_at")
