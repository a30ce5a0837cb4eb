"""a flag on each message: its last attempt may have reached the provider

Revision ID: p0003
Revises: p0002
Create Date: 2026-11-21 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p0003"
down_revision: str | Sequence[str] | None = "p0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("maybe_sent", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # Texts waiting for a retry may follow a timeout: ask the provider first, as before.
    op.execute("UPDATE sms_message SET maybe_sent = attempts > 0 WHERE status = 'queued'")


def downgrade() -> None:
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_column("maybe_sent")
