"""staff sign-ins for the web pages, and replies marked done by staff

Revision ID: p0005
Revises: p0004
Create Date: 2026-11-22 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0005"
down_revision: str | Sequence[str] | None = "p0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_staff_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", DATETIME, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("last_sign_in_at", DATETIME, nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", DATETIME, nullable=True),
        sa.Column("session_token", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("sms_inbound") as batch:
        batch.add_column(sa.Column("done_at", DATETIME, nullable=True))
        batch.add_column(sa.Column("done_by", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sms_inbound") as batch:
        batch.drop_column("done_by")
        batch.drop_column("done_at")
    op.drop_table("sms_staff_user")
