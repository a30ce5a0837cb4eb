"""reference ERP tables: an index on erp_contact_organization(organization_id)

The link table's primary key starts with contact_id, so "the contacts of this
organization" — the host path's first query — scanned the whole table on PostgreSQL and
SQLite (MariaDB already has one for the foreign key).

Revision ID: e0002
Revises: e0001
Create Date: 2026-11-21 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "e0002"
down_revision: str | Sequence[str] | None = "e0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_erp_contact_organization_organization",
        "erp_contact_organization",
        ["organization_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_erp_contact_organization_organization", table_name="erp_contact_organization")
