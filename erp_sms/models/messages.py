"""Messages: the outbox (= email log) with its history, the fold rows of the host path and
what the host is told over HTTP."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import utcnow
from .base import Base


class Message(Base):
    """One text message considered for one contact (or, with no contact, one order-level
    entry explaining why nobody was texted). The outbox and the email log in one."""

    __tablename__ = "sms_message"
    __table_args__ = (
        # The claim's two branches, each read in index order and stopped at the batch
        # size: queued texts by when they are due, sending texts by when their lease ends.
        Index("ix_sms_message_due", "status", "next_attempt_at", "id"),
        Index("ix_sms_message_lease", "status", "lease_expires_at", "id"),
        Index("ix_sms_message_order", "order_number"),
        Index("ix_sms_message_contact", "contact_ref"),
        Index("ix_sms_message_created", "created_at"),
        Index("ix_sms_message_provider", "provider_id"),
        Index("ix_sms_message_recipient", "recipient"),
        Index("ix_sms_message_order_event", "order_ref", "event"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    event: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(64))
    order_ref: Mapped[str] = mapped_column(String(64))
    order_number: Mapped[str] = mapped_column(String(64))
    organization_name: Mapped[str | None] = mapped_column(String(255))
    subject_ref: Mapped[str | None] = mapped_column(String(64))
    contact_ref: Mapped[str | None] = mapped_column(String(64))
    contact_name: Mapped[str | None] = mapped_column(String(255))
    raw_address: Mapped[str | None] = mapped_column(String(320))
    channel: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(320))
    # The recipient's number in E.164 (also for a gateway address): what an opt-out matches.
    recipient: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, default="")
    encoding: Mapped[str | None] = mapped_column(String(8))
    segments: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The last attempt may have reached the provider (timeout, unreadable answer, lost
    # lease): the provider is asked before the text is sent again or given up on.
    maybe_sent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    provider_id: Mapped[str | None] = mapped_column(String(255))
    error_code: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[str | None] = mapped_column(String(32))
    price_unit: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # A reminder sequence's step (its id within the sequence named by ``event``).
    step: Mapped[int | None] = mapped_column(Integer, default=None)
    # Goes out only inside the send window (SMSSENDWINDOW), checked again when claimed.
    send_window: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # The TWILIO rule record it is sent from (``TWILIO:WEST``); None: ``TWILIO``.
    sender: Mapped[str | None] = mapped_column(String(32), default=None)
    # What it is for (``codes.Program``): the consent it needs, checked when it is planned
    # and again when it is claimed and handed over.
    program: Mapped[str | None] = mapped_column(String(16), default=None)
    # The hosted opt-out page's token the text carries (``links``): how the page knows
    # the number without putting it in the link.
    link_token: Mapped[str | None] = mapped_column(String(16), default=None, index=True)
    # Its short links (``links.shorten``): the code under ERP_SMS_PUBLIC_URL/l/, the
    # original URLs (JSON, in order), and the first click a person made.
    link_code: Mapped[str | None] = mapped_column(String(16), default=None, index=True)
    link_urls: Mapped[str | None] = mapped_column(Text, default=None)
    clicked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # A ``merged`` text: the message that carries its news (SMSDIGESTMINUTES).
    merged_into: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    # When its words, number and raw reports were removed (``purge``, an erasure).
    purged_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    history: Mapped[list[MessageEvent]] = relationship(
        back_populates="message", order_by="MessageEvent.id", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"Message(id={self.id!r}, event={self.event!r}, status={self.status!r})"


class MessageEvent(Base):
    """One line of a message's timeline: a status change, a provider callback, a reroute."""

    __tablename__ = "sms_message_event"
    __table_args__ = (
        Index("ix_sms_message_event_message", "message_id"),
        Index("ix_sms_message_event_provider", "provider_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("sms_message.id", ondelete="CASCADE"))
    provider_id: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # status | callback | reroute | note
    status: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))  # notifier | dispatch | webhook | staff
    detail: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text)  # JSON of the provider's payload

    message: Mapped[Message | None] = relationship(back_populates="history")


class Fold(Base):
    """An order's texts to one contact, folded (SMSDIGESTMINUTES): the row the host path
    locks so that two transactions never both keep a text, the text that carries the
    news while it waits (by its idempotency key, known before it is written) and what
    it carries. One row per order and contact; a new window reuses it."""

    __tablename__ = "sms_fold"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)  # order_ref|contact_ref
    carrier_key: Mapped[str | None] = mapped_column(String(255))
    # JSON: every text folded for this order and contact, each with the carrier it went to
    # (a window's items are those of the current carrier; an event fired again is known).
    carried: Mapped[str] = mapped_column(Text, default="[]")
    token: Mapped[str | None] = mapped_column(String(32))  # the transaction that wrote it
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HostEvent(Base):
    """What the host is told over HTTP (``ERP_SMS_HOST_WEBHOOK_URL``), written in the same
    transaction as the change it tells and delivered by the worker at least once, in
    order per ``stream`` (a message, a number)."""

    __tablename__ = "sms_host_event"
    __table_args__ = (Index("ix_sms_host_event_undelivered", "delivered_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # message.status_changed, reply.received…
    stream: Mapped[str] = mapped_column(String(64))  # message:41, number:+13125550101
    message_id: Mapped[int | None] = mapped_column(Integer, default=None)
    payload: Mapped[str] = mapped_column(Text)  # JSON: the plain values the signals carry
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The worker run delivering (one at a time: the order holds) and until when.
    lease_token: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_until: Mapped[dt.datetime | None] = mapped_column(default=None)


# Core handles for the statements that claim and update rows (outbox, notifier).


class Click(Base):
    """A request for one of a text's short links: a person's click (``counted``), or a
    link preview or scanner fetching it (kept, not counted)."""

    __tablename__ = "sms_click"
    __table_args__ = (Index("ix_sms_click_message", "message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    url: Mapped[str] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(String(255), default=None)
    counted: Mapped[bool] = mapped_column(Boolean, default=True)
