"""each staff member's own time zone for the pages

Revision ID: p0006
Revises: p0005
Create Date: 2026-11-22 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p0006"
down_revision: str | Sequence[str] | None = "p0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sms_staff_user") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sms_staff_user") as batch:
        batch.drop_column("time_zone")
