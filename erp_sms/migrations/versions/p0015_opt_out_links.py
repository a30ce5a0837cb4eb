"""the hosted opt-out page: the token each text's link carries

Revision ID: p0015
Revises: p0014
Create Date: 2026-12-05 09:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p0015"
down_revision: str | Sequence[str] | None = "p0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_token", sa.String(16), nullable=True))
        batch_op.create_index("ix_sms_message_link_token", ["link_token"])


def downgrade() -> None:
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_message_link_token")
        batch_op.drop_column("link_token")
