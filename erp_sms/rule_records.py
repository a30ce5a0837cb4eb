"""Rule-maintenance records (TWILIO): validation, the AuthCode kept secret, and an audit.

Rule types and their fields are data (``rules/rule_types.toml``). The AuthCode is
encrypted at rest with Fernet when ``ERP_SMS_SECRET_KEY`` is set, never logged, and
shown masked; the audit records which field changed, never a secret's value.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import ScalarSelect, select
from sqlalchemy.orm import Session

from .catalog import RuleType, rule_types
from .config import get_settings
from .db import utcnow
from .errors import ConfigurationError, InputError
from .models import Rule, RuleAudit, RuleFieldValue, SenderMap
from .outbox import release_channel

TWILIO = "TWILIO"
_ENCRYPTED = "fernet:"


def rule_type(name: str) -> RuleType:
    types = rule_types()
    found = types.get(name.upper())
    if found is None:
        raise InputError(f"unknown rule {name!r}; known rules: {', '.join(sorted(types))}")
    return found


_SITE = re.compile(r"^[A-Z][A-Z0-9_]{0,22}$")


def record(name: str) -> tuple[RuleType, str]:
    """The rule type and the record's name: ``TWILIO``, or ``TWILIO:WEST`` for a second
    site's number (a record per site, each with its own number and credentials)."""
    base, sep, site = name.strip().upper().partition(":")
    rtype = rule_type(base)
    if not sep:
        return rtype, rtype.name
    if rtype.name != TWILIO or not _SITE.match(site):
        raise InputError(
            f"{name!r}: a site's record is TWILIO:SITE, SITE in letters, digits and _ "
            "(e.g. TWILIO:WEST)"
        )
    return rtype, f"{rtype.name}:{site}"


def validate_field(rtype: RuleType, name: str, value: str) -> str:
    """The value as stored, or ``InputError`` with the field's help sentence."""
    try:
        f = rtype.field(name)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None
    value = value.strip()
    if f.optional and not value:
        return ""  # cleared
    if f.kind == "phone":
        digits = re.sub(r"[\s().\-]", "", value)
        try:
            num = phonenumbers.parse(digits, "US")
        except phonenumbers.NumberParseException:
            raise InputError(f"{f.help} (got {value!r})") from None
        if not (digits.isdigit() and len(digits) == 10) and not digits.startswith("+"):
            raise InputError(f"{f.help} (got {value!r})")
        if not phonenumbers.is_possible_number(num):
            raise InputError(f"{f.help} (got {value!r})")
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    if f.choices and value.upper() not in f.choices:
        raise InputError(f"{f.help} (got {value!r})")
    if f.choices:
        return value.upper()
    if f.pattern and not re.fullmatch(f.pattern, value):
        shown = "the value given" if f.secret else repr(value)
        raise InputError(f"{f.help} ({shown} does not fit)")
    return value


def cli_flag(field_name: str) -> str:
    """The `erp-sms rules set` option for a field: AuthCode -> --auth-code."""
    return "--" + re.sub(r"(?<!^)(?=[A-Z])", "-", field_name).lower().replace("s-i-d", "sid")


def _fernet() -> Fernet | None:
    key = get_settings().secret_key
    if not key:
        return None
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(value: str) -> str:
    f = _fernet()
    return _ENCRYPTED + f.encrypt(value.encode()).decode() if f else value


def is_sealed(stored: str) -> bool:
    """Whether a stored secret is encrypted (with ``ERP_SMS_SECRET_KEY``)."""
    return stored.startswith(_ENCRYPTED)


def unseal(stored: str) -> str:
    if not stored.startswith(_ENCRYPTED):
        return stored
    f = _fernet()
    if f is None:
        raise ConfigurationError(
            "the TWILIO AuthCode is stored encrypted: set ERP_SMS_SECRET_KEY to the key it "
            "was saved with"
        )
    try:
        return f.decrypt(stored[len(_ENCRYPTED) :].encode()).decode()
    except InvalidToken:
        raise ConfigurationError(
            "the TWILIO AuthCode cannot be decrypted with this ERP_SMS_SECRET_KEY: use the "
            "key it was saved with, or set the AuthCode again"
        ) from None


def mask_secret(value: str | None) -> str:
    return "(not set)" if not value else "set (hidden)"


@dataclass(frozen=True)
class TwilioRule:
    """The TWILIO record as the Twilio channel needs it."""

    sid: str
    auth_code: str = field(repr=False)
    phone_number: str
    active: bool
    rejected_reason: str | None = None
    messaging_service_sid: str | None = None  # a pool of numbers (Twilio's own fan-out)
    name: str = TWILIO  # the record: TWILIO, or a site's (TWILIO:WEST)
    #: The secret of a webhook Shared Key: Twilio signs webhooks with it (HMAC-SHA256)
    #: instead of the Auth Token when the account is set up so.
    webhook_key: str | None = field(default=None, repr=False)


def get_rule(session: Session, name: str) -> Rule | None:
    return session.get(Rule, record(name)[1])


def senders(session: Session) -> list[str]:
    """The names of every TWILIO record (``TWILIO`` and the sites')."""
    names = session.scalars(
        select(Rule.rule_type).where(Rule.rule_type.like(f"{TWILIO}%")).order_by(Rule.rule_type)
    )
    return [n for n in names if n == TWILIO or n.startswith(TWILIO + ":")]


def set_fields(
    session: Session,
    name: str,
    values: Mapping[str, str],
    *,
    active: bool | None = None,
    by: str = "staff",
) -> Rule:
    """Validate and save fields (and Active), audit each change; an active record must
    be complete. New credentials clear a 'rejected' flag."""
    rtype, full = record(name)
    clean = {rtype.field(k).name: validate_field(rtype, k, v) for k, v in values.items()}
    rule = session.get(Rule, full)
    if rule is None:
        rule = Rule(rule_type=full, active=False)
        session.add(rule)
        for f in rtype.fields:
            if f.kind != "logic" and f.default is not None and f.name not in clean:
                clean[f.name] = str(f.default)
    now = utcnow()
    by_name = {f.name: f for f in rule.fields}
    for fname, value in clean.items():
        spec = rtype.field(fname)
        stored = seal(value) if spec.secret and value else value
        row = by_name.get(fname)
        if row is None:
            if stored == "":
                continue  # clearing a field that was never set changes nothing
            rule.fields.append(RuleFieldValue(name=fname, value=stored, updated_at=now))
        else:
            if not spec.secret and row.value == stored:
                continue
            row.value = stored
            row.updated_at = now
        _audit(session, full, fname, "set", by)
    if active is not None and active != rule.active:
        if active:
            missing = [
                f.name
                for f in rtype.fields
                if f.kind != "logic"
                and not f.optional
                and not (clean.get(f.name) or rule.get(f.name))
            ]
            if missing:
                flags = " ".join(f"{cli_flag(m)} …" for m in missing)
                raise InputError(
                    f"cannot activate {full}: {', '.join(missing)} missing; set them "
                    f"with `erp-sms rules set {full} {flags}`"
                )
        rule.active = active
        _audit(session, full, "Active", "set", by, "on" if active else "off")
    # New credentials or a new sender answer what a flag said (a rejected AuthCode, a
    # From Twilio refused, an empty Messaging Service): the texts go out again.
    credentials_changed = any(
        rtype.field(k).secret or k in ("SID", "MessagingServiceSid", "PhoneNumber") for k in clean
    )
    if credentials_changed and rule.rejected_at is not None:
        rule.rejected_at = None
        rule.rejected_reason = None
    session.flush()
    if rtype.name == TWILIO:
        _release_held(session, rule, by)
    return rule


def _release_held(session: Session, rule: Rule, by: str) -> None:
    """Texts held for the TWILIO record (credentials rejected, or TWILIO inactive) go
    back to the queue once the record is active and not flagged."""
    if rule.active and rule.rejected_at is None:
        release_channel(session, "twilio", by=by)


def _audit(
    session: Session, rule_name: str, field: str, action: str, by: str, detail: str | None = None
) -> None:
    """Record who changed which field (never a secret's value: callers pass none)."""
    session.add(
        RuleAudit(rule_type=rule_name, field=field, action=action, changed_by=by, detail=detail)
    )


def flag_rejected(session: Session, name: str, reason: str, *, by: str = "dispatch") -> None:
    """Mark the record's credentials as rejected by the provider (e.g. Twilio 20003)."""
    rule = session.get(Rule, record(name)[1])
    if rule is None or rule.rejected_at is not None:
        return
    rule.rejected_at = utcnow()
    rule.rejected_reason = reason
    _audit(session, rule.rule_type, "AuthCode", "flagged", by, reason)


def clear_rejected(session: Session, name: str, *, by: str) -> None:
    """The credentials were checked and work: lift the flag and release held texts."""
    rule = session.get(Rule, record(name)[1])
    if rule is None or rule.rejected_at is None:
        return
    rule.rejected_at = None
    rule.rejected_reason = None
    _audit(session, rule.rule_type, "AuthCode", "cleared", by, "credentials checked and working")
    session.flush()
    _release_held(session, rule, by)


def twilio_routing(session: Session, name: str = TWILIO) -> tuple[bool, str | None]:
    """(active, sending phone number): what the host-side notifier needs, no secrets."""
    active, phone = session.execute(select(*routing_query(name))).one()
    return bool(active), phone


def routing_query(
    name: str = TWILIO,
) -> tuple[ScalarSelect[bool | None], ScalarSelect[str | None]]:
    """Whether the TWILIO record is active and its PhoneNumber, as scalar subqueries the
    host path reads together with its other settings (NULL when there is no record)."""
    active = select(Rule.active).where(Rule.rule_type == name).scalar_subquery()
    phone = (
        select(RuleFieldValue.value)
        .where(RuleFieldValue.rule_type == name, RuleFieldValue.name == "PhoneNumber")
        .scalar_subquery()
    )
    return active, phone


def twilio_rule(session: Session, name: str = TWILIO) -> TwilioRule | None:
    """The TWILIO record (or a site's, ``TWILIO:WEST``) with the AuthCode decrypted, or
    None when there is none."""
    rule = session.get(Rule, name)
    if rule is None:
        return None
    auth = rule.get("AuthCode")
    key = rule.get("WebhookKey")
    return TwilioRule(
        sid=rule.get("SID") or "",
        auth_code=unseal(auth) if auth else "",
        phone_number=rule.get("PhoneNumber") or "",
        active=bool(rule.active),
        rejected_reason=rule.rejected_reason,
        messaging_service_sid=rule.get("MessagingServiceSid") or None,
        name=rule.rule_type,
        webhook_key=unseal(key) if key else None,
    )


# The TWILIO records as the webhooks check signatures with them: per database and
# secret key, with the stored (sealed) credentials they were built from.
# Keyed by the engine itself (its URL as text costs more than the statement); engines
# live as long as their process, and a test's few hundred are small.
_signing: dict[tuple[Any, str | None], tuple[Any, list[TwilioRule]]] = {}
_signing_lock = threading.Lock()
# Built once: building a statement costs more than running this one.
_STORED_SIGNING = (
    select(RuleFieldValue.rule_type, RuleFieldValue.name, RuleFieldValue.value)
    .where(
        RuleFieldValue.rule_type.like(f"{TWILIO}%"),
        RuleFieldValue.name.in_(("SID", "AuthCode", "WebhookKey")),
    )
    .order_by(RuleFieldValue.rule_type, RuleFieldValue.name)
)


def signing_rules(session: Session) -> list[TwilioRule]:
    """Every TWILIO record (``TWILIO`` and the sites') with its secrets decrypted, as
    the webhooks check signatures. One small statement reads the stored credentials as
    they are (sealed); the records are loaded and decrypted again only when those
    changed — one statement a request instead of three and a decryption (issue 27). A
    rotated AuthCode is seen on the very next request, in every process: a replaced key
    is never trusted again. (A version from timestamps would not do: MariaDB's DATETIME
    keeps whole seconds.)"""
    stored = tuple(tuple(r) for r in session.connection().execute(_STORED_SIGNING))
    key = (session.get_bind(), get_settings().secret_key)
    cached = _signing.get(key)
    if cached is not None and cached[0] == stored:
        return cached[1]
    rules = [r for r in (twilio_rule(session, n) for n in senders(session)) if r is not None]
    with _signing_lock:
        _signing[key] = (stored, rules)
    return rules


def map_sender(
    session: Session, organization_ref: str, organization_name: str | None, name: str, *, by: str
) -> str:
    """Send an organization's texts from a site's TWILIO record (``TWILIO`` again: back
    to the main record). The record must exist. Texts already queued keep their sender."""
    _rtype, full = record(name)
    if _rtype.name != TWILIO:
        raise InputError(f"texts go out from a TWILIO record, not {name!r}")
    if full != TWILIO and session.get(Rule, full) is None:
        raise InputError(
            f"there is no {full} record yet: set it up with `erp-sms rules set {full} --sid … "
            "--auth-code … --phone-number … --active`"
        )
    row = session.get(SenderMap, organization_ref)
    if full == TWILIO:
        if row is not None:
            session.delete(row)
    else:
        if row is None:
            row = SenderMap(organization_ref=organization_ref)
            session.add(row)
        row.organization_name, row.rule_type, row.updated_by = organization_name, full, by
    _audit(
        session, full, "Sender", "set", by, f"organization {organization_name or organization_ref}"
    )
    session.flush()
    return full


def sender_map(session: Session) -> list[tuple[str, str | None, str]]:
    """(organization key, name, record) of every organization with a site's sender."""
    rows = session.scalars(select(SenderMap).order_by(SenderMap.organization_name))
    return [(r.organization_ref, r.organization_name, r.rule_type) for r in rows]
