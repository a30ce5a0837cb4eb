"""Reminder sequences: runs, staff-edited steps, switches per organization."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Date,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import utcnow
from .base import Base


class SequenceRun(Base):
    """One start of a reminder sequence for one subject (an invoice): its anchor date
    and what was planned for each contact, so steps staff change later can be planned
    again without the host."""

    __tablename__ = "sms_sequence_run"
    __table_args__ = (
        UniqueConstraint("sequence", "order_ref", "subject_ref", name="uq_sms_sequence_run"),
        Index("ix_sms_sequence_run_org", "organization_ref"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sequence: Mapped[str] = mapped_column(String(64))
    order_ref: Mapped[str] = mapped_column(String(64))
    subject_ref: Mapped[str] = mapped_column(String(64))  # "-" when the sequence has none
    order_number: Mapped[str] = mapped_column(String(64))
    organization_ref: Mapped[str | None] = mapped_column(String(64))
    organization_name: Mapped[str | None] = mapped_column(String(255))
    anchor: Mapped[dt.date] = mapped_column(Date)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str] = mapped_column(Text)  # JSON: contexts and each contact's route


class SequenceSteps(Base):
    """A sequence whose steps staff edited: its steps are the ``SequenceStep`` rows from
    then on (none at all when staff removed every step), not the code's."""

    __tablename__ = "sms_sequence"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))


class SequenceStep(Base):
    __tablename__ = "sms_sequence_step"

    sequence: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    days: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(String(64))
    sms: Mapped[bool] = mapped_column(Boolean, default=True)


class SequenceSwitch(Base):
    """A sequence switched on or off for one organization (no row: on)."""

    __tablename__ = "sms_sequence_switch"

    sequence: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_name: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))
