"""What the operator's tools read: each worker's heartbeat, and the plugin's own
housekeeping state (when the retention purge last ran, the key erased numbers are
hashed with)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..db import utcnow
from .base import Base


class Worker(Base):
    """A dispatch worker as it last said it was alive: ``erp-sms doctor``, ``/metrics``
    and the dashboard read "last worker seen N s ago" from here."""

    __tablename__ = "sms_worker"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    version: Mapped[str | None] = mapped_column(String(32), default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)


class State(Base):
    """One named value of the plugin's own (not staff's options): ``purged_at``, the
    ``erase_key`` written by the migration that made this table."""

    __tablename__ = "sms_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
