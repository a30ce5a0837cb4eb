"""Consent and what customers text back: the consent trail, the opt-out list, replies."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Index,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import utcnow
from .base import Base


class ConsentEvent(Base):
    """An opt-in or opt-out, with where it came from (cli, sms_reply, twilio_21610, …)."""

    __tablename__ = "sms_consent_event"
    __table_args__ = (Index("ix_sms_consent_contact", "contact_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    contact_ref: Mapped[str | None] = mapped_column(String(64))
    contact_name: Mapped[str | None] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(16))  # opt_in | opt_out
    source: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(128), default=None)  # who, when staff
    number: Mapped[str | None] = mapped_column(String(32), default=None)  # E.164
    # The program it changed (orders, reminders, staff); None: every program.
    program: Mapped[str | None] = mapped_column(String(16), default=None)


class OptOut(Base):
    """A number that opted out (E.164, however it was typed): the plugin's own record,
    consulted when texts are planned and again when they are claimed. Written by every
    opt-out path (STOP, Twilio 21610, staff, the host); removed by an opt-in."""

    __tablename__ = "sms_opt_out"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(32))
    contact_ref: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)


class InboundMessage(Base):
    """A text a recipient sent back: keyword or free text, never lost."""

    __tablename__ = "sms_inbound"
    __table_args__ = (Index("ix_sms_inbound_from", "from_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    provider_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    from_number: Mapped[str] = mapped_column(String(32))
    to_number: Mapped[str | None] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # stop | start | help | reply
    contact_refs: Mapped[str | None] = mapped_column(Text)  # comma-separated
    order_number: Mapped[str | None] = mapped_column(String(64))
    raw: Mapped[str | None] = mapped_column(Text)
    # Staff's inbox: a reply that needs a human until someone marks it done.
    done_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    done_by: Mapped[str | None] = mapped_column(String(128), default=None)
    # SMSREPLYALERT: mailed to staff (when), and the worker run that took it to mail.
    alerted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    alert_token: Mapped[str | None] = mapped_column(String(32), default=None)
    alert_claimed_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ProgramOptOut(Base):
    """A number that opted out of one program (order updates, reminders, staff's texts)
    but not the others; ``OptOut`` is the opt-out of all of them (a STOP)."""

    __tablename__ = "sms_opt_out_program"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    program: Mapped[str] = mapped_column(String(16), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(32))
    contact_ref: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)


class ErasedOptOut(Base):
    """The opt-out of a number whose owner's data was erased, kept as the number's keyed
    hash (``erased.digest``): the number is gone from erp-sms's tables, and a text to it
    is still refused. ``program`` is ``*`` for every program (a STOP)."""

    __tablename__ = "sms_opt_out_erased"

    digest: Mapped[str] = mapped_column(String(32), primary_key=True)
    program: Mapped[str] = mapped_column(String(16), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(32))
