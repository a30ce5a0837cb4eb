"""Settings staff keep: the rule-maintenance records and their audit, options, template
overrides, senders per site, staff sign-ins."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    ForeignKey,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import utcnow
from .base import Base


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
