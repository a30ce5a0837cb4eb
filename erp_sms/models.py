"""The plugin's tables: outbox (= email log) and its history, rule-maintenance records,
setup options, template overrides, consent events and inbound replies.

None of them has a foreign key into the ERP tables: a host may have tables of its own,
and the email log must stay readable after a contact or order is deleted, so each
message keeps a snapshot (order number, contact name, address) of what it was sent for.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .codes import Channel as Channel
from .codes import Status as Status
from .db import UTCDateTime, utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime}


#: The source of a timeline line that records how a text was first planned (written when
#: staff plan it again, so its first status is not lost).
PLANNED = "planned"


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
    # A ``merged`` text: the message that carries its news (SMSDIGESTMINUTES).
    merged_into: Mapped[int | None] = mapped_column(Integer, default=None, index=True)

    history: Mapped[list[MessageEvent]] = relationship(
        back_populates="message", order_by="MessageEvent.id", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"Message(id={self.id!r}, event={self.event!r}, status={self.status!r})"


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


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


class Rule(Base):
    """A rule-maintenance record (e.g. TWILIO); its fields are rows of ``RuleField``."""

    __tablename__ = "sms_rule"

    rule_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    rejected_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    rejected_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    fields: Mapped[list[RuleFieldValue]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )

    def get(self, name: str) -> str | None:
        for f in self.fields:
            if f.name == name:
                return f.value
        return None

    def changed_at(self, name: str) -> dt.datetime | None:
        for f in self.fields:
            if f.name == name:
                return f.updated_at
        return None


class RuleFieldValue(Base):
    __tablename__ = "sms_rule_field"

    rule_type: Mapped[str] = mapped_column(
        ForeignKey("sms_rule.rule_type", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RuleAudit(Base):
    """Who changed which field of a rule record, and when (never the secret's value)."""

    __tablename__ = "sms_rule_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_type: Mapped[str] = mapped_column(String(32))
    field: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))  # set | cleared | flagged | test
    changed_by: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    detail: Mapped[str | None] = mapped_column(Text)


class Option(Base):
    __tablename__ = "sms_option"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))


class TemplateOverride(Base):
    """A staff-edited template; replaces the file default of the same name."""

    __tablename__ = "sms_template"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))


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


class SenderMap(Base):
    """The TWILIO rule record an organization's texts go out from (one number per site)."""

    __tablename__ = "sms_sender_map"

    organization_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_name: Mapped[str | None] = mapped_column(String(255))
    rule_type: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))


class StaffUser(Base):
    """A staff sign-in for the web pages: the password only as an Argon2 hash; failed
    attempts lock the account for a while."""

    __tablename__ = "sms_staff_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))
    last_sign_in_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    failed_attempts: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Changed when the password changes or the user is removed: old sessions end.
    session_token: Mapped[str] = mapped_column(String(64))
    # The IANA zone the pages show times in for them; None: ERP_SMS_DEFAULT_TIMEZONE.
    time_zone: Mapped[str | None] = mapped_column(String(64), default=None)
    # viewer, operator or admin (erp_sms.users.ROLES).
    role: Mapped[str] = mapped_column(String(16), default="operator")


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
message_table = _table(Message)
message_event_table = _table(MessageEvent)
directory_table = _table(DirectoryEntry)
opt_out_table = _table(OptOut)
sequence_run_table = _table(SequenceRun)
fold_table = _table(Fold)
inbound_table = _table(InboundMessage)
host_event_table = _table(HostEvent)
