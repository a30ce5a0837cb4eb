"""Staff sign-ins for the web pages (``erp-sms users add|remove|list``).

Passwords are kept only as Argon2id hashes (argon2-cffi, the OWASP recommendation). After
``MAX_FAILURES`` wrong passwords in a row an account is locked for ``LOCK_MINUTES``; a
name that does not exist costs the same hash check, so the answer does not tell which
names exist.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import utcnow
from .errors import InputError
from .models import StaffUser

MIN_PASSWORD = 10
MAX_FAILURES = 5
LOCK_MINUTES = 15

_hasher = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """Checked against when the name is unknown, so both answers take as long. Made on
    first use: an Argon2 hash takes 64 MB and ~0.2 s, which every command (the worker,
    `report`…) paid at import when this was made there."""
    return _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt: the user, or a sentence for the form."""

    user: StaffUser | None
    error: str | None = None


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise InputError(f"user name {name!r}: 1-64 characters without spaces, e.g. maria")
    return name


def add(session: Session, name: str, password: str, *, by: str) -> StaffUser:
    """Add a staff user, or set a new password for an existing one (which ends their
    sessions and lifts a lock)."""
    name = _check_name(name)
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password needs at least {MIN_PASSWORD} characters")
    user = session.scalar(select(StaffUser).where(StaffUser.name == name))
    if user is None:
        user = StaffUser(name=name, created_by=by, failed_attempts=0)
        session.add(user)
    user.password_hash = _hasher.hash(password)
    user.session_token = secrets.token_hex(16)
    user.failed_attempts, user.locked_until = 0, None
    session.flush()
    return user


def remove(session: Session, name: str) -> None:
    """Remove a staff user; their open sessions end at their next request."""
    user = session.scalar(select(StaffUser).where(StaffUser.name == name.strip()))
    if user is None:
        raise InputError(f"no user {name!r}: `erp-sms users list` shows who there is")
    session.delete(user)
    session.flush()


def set_time_zone(session: Session, name: str, zone: str | None) -> str:
    """Show the pages to ``name`` in ``zone`` (an IANA name; empty: the server's default,
    ERP_SMS_DEFAULT_TIMEZONE). Returns the zone now in effect."""
    from .config import get_settings
    from .sendwindow import zone as parse_zone

    user = session.scalar(select(StaffUser).where(StaffUser.name == name.strip()))
    if user is None:
        raise InputError(f"no user {name!r}: `erp-sms users list` shows who there is")
    user.time_zone = parse_zone(zone).key if zone and zone.strip() else None
    session.flush()
    return user.time_zone or get_settings().default_timezone


def all_users(session: Session) -> list[StaffUser]:
    """Every staff user, by name."""
    return list(session.scalars(select(StaffUser).order_by(StaffUser.name)))


def by_session_token(session: Session, user_id: str) -> StaffUser | None:
    """The user a signed session cookie names (``"<id>:<token>"``), while the token is
    still theirs (not after a password change or removal)."""
    ident, _, token = user_id.partition(":")
    if not ident.isdigit() or not token:
        return None
    user = session.get(StaffUser, int(ident))
    if user is None or not secrets.compare_digest(user.session_token, token):
        return None
    return user


def authenticate(
    session: Session, name: str, password: str, *, now: dt.datetime | None = None
) -> SignIn:
    """Check a name and password; count failures and lock after ``MAX_FAILURES``."""
    now = now or utcnow()
    user = session.scalar(select(StaffUser).where(StaffUser.name == name.strip()))
    wrong = "wrong user name or password"
    if user is None:
        with contextlib.suppress(VerificationError, InvalidHashError):
            _hasher.verify(_dummy(), password)
        return SignIn(None, wrong)
    if user.locked_until is not None and user.locked_until > now:
        left = max(1, int((user.locked_until - now).total_seconds() // 60) + 1)
        return SignIn(None, f"too many wrong passwords: try again in {left} minute(s)")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        user.failed_attempts += 1
        if user.failed_attempts >= MAX_FAILURES:
            user.locked_until = now + dt.timedelta(minutes=LOCK_MINUTES)
            user.failed_attempts = 0
            return SignIn(None, f"too many wrong passwords: locked for {LOCK_MINUTES} minutes")
        return SignIn(None, wrong)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.failed_attempts, user.locked_until, user.last_sign_in_at = 0, None, now
    return SignIn(user)
