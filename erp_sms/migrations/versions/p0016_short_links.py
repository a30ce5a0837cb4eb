"""short links with clicks: each text's link code and original URLs, its first click, and
every request for its links

Revision ID: p0016
Revises: p0015
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0016"
down_revision: str | Sequence[str] | None = "p0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_code", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("link_urls", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("clicked_at", DATETIME, nullable=True))
        batch_op.create_index("ix_sms_message_link_code", ["link_code"])
    op.create_table(
        "sms_click",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("at", DATETIME, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("user_agent", sa.String(255), nullable=True),
        sa.Column("counted", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_sms_click_message", "sms_click", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_sms_click_message", table_name="sms_click")
    op.drop_table("sms_click")
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_message_link_code")
        batch_op.drop_column("clicked_at")
        batch_op.drop_column("link_urls")
        batch_op.drop_column("link_code")
