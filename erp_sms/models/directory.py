"""The customer directory the search reads (derived from the email log)."""

from __future__ import annotations

from sqlalchemy import (
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class DirectoryEntry(Base):
    """A contact (key, name, number) or an order (number, organization) as the email log
    has named it, with its words folded for search — one row each however many texts
    name it, so a search reads the customers, not every text (issue 27). Derived from
    ``sms_message`` by ``customers.refresh``; never the truth, rebuilt from the log."""

    __tablename__ = "sms_directory"
    __table_args__ = (
        UniqueConstraint("kind", "key", "name", "number", name="uq_sms_directory"),
        Index("ix_sms_directory_number", "kind", "number"),  # a whole number searched
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # contact | order
    key: Mapped[str] = mapped_column(String(64))  # contact_ref | order_number
    name: Mapped[str] = mapped_column(String(255), default="")  # contact | organization
    number: Mapped[str] = mapped_column(String(32), default="")  # E.164; '' for orders
    folded: Mapped[str] = mapped_column(String(400))  # customers.fold of the words


class DirectoryMark(Base):
    """How far ``customers.refresh`` has read the email log: texts with ids up to
    ``message_id`` were read (one row, id 1); the recent ones are read again."""

    __tablename__ = "sms_directory_mark"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(default=0)
