"""the claim's indexes: due texts in (status, next_attempt_at, id) order, and leases by
(status, lease_expires_at, id) — a claim reads a batch, not every row that is due

Revision ID: p0008
Revises: p0007
Create Date: 2026-12-04 20:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "p0008"
down_revision: str | Sequence[str] | None = "p0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_sms_message_due", table_name="sms_message")
    op.create_index(
        "ix_sms_message_due", "sms_message", ["status", "next_attempt_at", "id"], unique=False
    )
    op.create_index(
        "ix_sms_message_lease", "sms_message", ["status", "lease_expires_at", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_sms_message_lease", table_name="sms_message")
    op.drop_index("ix_sms_message_due", table_name="sms_message")
    op.create_index(
        "ix_sms_message_due", "sms_message", ["status", "next_attempt_at"], unique=False
    )
