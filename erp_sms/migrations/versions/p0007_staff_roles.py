"""staff roles (viewer, operator, admin); users made before roles existed are admins

Revision ID: p0007
Revises: p0006
Create Date: 2026-12-04 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p0007"
down_revision: str | Sequence[str] | None = "p0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing users could do everything: they stay able to (admin). New users get the
    # application's default (operator); the server default goes once the rows have one.
    with op.batch_alter_table("sms_staff_user") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="admin")
        )
    with op.batch_alter_table("sms_staff_user") as batch:
        batch.alter_column("role", server_default=None, existing_type=sa.String(length=16))


def downgrade() -> None:
    with op.batch_alter_table("sms_staff_user") as batch:
        batch.drop_column("role")
