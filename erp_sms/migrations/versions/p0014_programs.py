"""consent per program: opt-outs of one program (orders, reminders, staff), each text's
program, and the program a consent event changed

Revision ID: p0014
Revises: p0013
Create Date: 2026-12-05 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision: str = "p0014"
down_revision: str | Sequence[str] | None = "p0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_opt_out_program",
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("program", sa.String(16), primary_key=True),
        sa.Column("at", DATETIME, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("contact_ref", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("program", sa.String(16), nullable=True))
    with op.batch_alter_table("sms_consent_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("program", sa.String(16), nullable=True))
    # The texts already in the log: a reminder step, staff's own, or an order's.
    op.execute("UPDATE sms_message SET program = 'reminders' WHERE step IS NOT NULL")
    op.execute(
        "UPDATE sms_message SET program = 'staff' "
        "WHERE event IN ('staff_text', 'staff_reply') AND program IS NULL"
    )
    op.execute("UPDATE sms_message SET program = 'orders' WHERE program IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("sms_consent_event", schema=None) as batch_op:
        batch_op.drop_column("program")
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_column("program")
    op.drop_table("sms_opt_out_program")
