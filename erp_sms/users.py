"""Staff sign-ins for the web pages (``erp-sms users add|remove|list``).

Passwords are kept only as Argon2id hashes (argon2-cffi, the OWASP recommendation). After
``MAX_FAILURES`` wrong passwords in a row an account is locked for ``LOCK_MINUTES``,
however many are tried at once: each attempt takes its turn with one conditional UPDATE,
committed before the password is checked. An unknown name, a locked account and a wrong
password get the same answer after the same hash check, so the answer tells no one
which names exist.

Each user has a role (CONTRACT.md "Staff pages: roles and safety"): ``viewer`` reads,
``operator`` also acts on texts and contacts, ``admin`` also changes the configuration.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from .config import get_settings
from .db import Database, utcnow
from .errors import InputError
from .models import StaffUser
from .sendwindow import zone as parse_zone

MIN_PASSWORD = 10
MAX_FAILURES = 5
LOCK_MINUTES = 15

# Lowest first: each role may do what the ones before it may.
ROLES = ("viewer", "operator", "admin")
DEFAULT_ROLE = "operator"
ROLE_SAYS = {
    "viewer": "you can read every page and change nothing",
    "operator": "you can also release, retry and cancel texts, text contacts and answer replies",
    "admin": "you can also change the TWILIO records, options, templates, reminders and users",
}

# One answer for every refusal: it must not tell a locked or unknown name from a wrong
# password.
REFUSED = (
    f"wrong user name or password (after {MAX_FAILURES} wrong passwords an account is "
    f"locked for {LOCK_MINUTES} minutes)"
)

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
    # For the server's log only, never the form: unknown, locked or wrong password.
    why: str = ""


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise InputError(f"user name {name!r}: 1-64 characters without spaces, e.g. maria")
    return name


def check_role(role: str) -> str:
    """``role`` if it is one of ``ROLES``, else a one-line error saying which there are."""
    role = role.strip().lower()
    if role not in ROLES:
        raise InputError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def may(role: str | None, needed: str) -> bool:
    """Whether a user with ``role`` may do what needs ``needed``."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def add(
    session: Session, name: str, password: str, *, by: str, role: str | None = None
) -> StaffUser:
    """Add a staff user (as ``role``, default ``operator``), or set a new password for an
    existing one (which ends their sessions and lifts a lock; ``role`` given changes it)."""
    name = _check_name(name)
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password needs at least {MIN_PASSWORD} characters")
    role = check_role(role) if role else None
    user = session.scalar(select(StaffUser).where(StaffUser.name == name))
    if user is None:
        user = StaffUser(name=name, created_by=by, failed_attempts=0, role=DEFAULT_ROLE)
        session.add(user)
    if role:
        user.role = role
    user.password_hash = _hasher.hash(password)
    user.session_token = secrets.token_hex(16)
    user.failed_attempts, user.locked_until = 0, None
    session.flush()
    return user


def _existing(session: Session, name: str) -> StaffUser:
    user = session.scalar(select(StaffUser).where(StaffUser.name == name.strip()))
    if user is None:
        raise InputError(f"no user {name!r}: `erp-sms users list` shows who there is")
    return user


def remove(session: Session, name: str) -> None:
    """Remove a staff user; their open sessions end at their next request."""
    session.delete(_existing(session, name))
    session.flush()


def set_role(session: Session, name: str, role: str) -> str:
    """Give ``name`` the role ``role``; it applies from their next request."""
    user = _existing(session, name)
    user.role = check_role(role)
    session.flush()
    return user.role


def set_time_zone(session: Session, name: str, zone: str | None) -> str:
    """Show the pages to ``name`` in ``zone`` (an IANA name; empty: the server's default,
    ERP_SMS_DEFAULT_TIMEZONE). Returns the zone now in effect."""
    user = _existing(session, name)
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
    db: Database, name: str, password: str, *, now: dt.datetime | None = None
) -> SignIn:
    """Check a name and password; lock after ``MAX_FAILURES`` wrong ones in a row.

    The attempt first takes its turn: one conditional UPDATE counts it, and locks the
    account when it is the last one allowed, and commits before the slow hash check. So
    16 attempts at once check at most ``MAX_FAILURES`` passwords, and a right one among
    them lifts the lock it set. Every refusal answers ``REFUSED`` after one hash check."""
    now = now or utcnow()
    name = name.strip()
    lock = now + dt.timedelta(minutes=LOCK_MINUTES)
    with db.session() as s:
        conn = s.connection()
        # A lock that ran out starts a fresh count. One column per statement: MySQL
        # evaluates SET left to right with the new values, the others with the old.
        taken = conn.execute(
            update(StaffUser)
            .where(
                StaffUser.name == name,
                (StaffUser.locked_until.is_(None)) | (StaffUser.locked_until <= now),
            )
            .values(
                failed_attempts=case(
                    (StaffUser.locked_until.is_not(None), 1),
                    else_=StaffUser.failed_attempts + 1,
                )
            )
        ).rowcount
        turn = None
        if taken:
            # Our UPDATE holds the row until the commit: the count read is ours. (MariaDB
            # has no UPDATE … RETURNING.) The last attempt allowed locks the account
            # before its own check; a right password lifts it.
            turn = s.execute(
                select(StaffUser.id, StaffUser.password_hash, StaffUser.failed_attempts).where(
                    StaffUser.name == name
                )
            ).one()
            conn.execute(
                update(StaffUser)
                .where(StaffUser.id == turn.id)
                .values(locked_until=lock if turn.failed_attempts >= MAX_FAILURES else None)
            )
    if turn is None:  # unknown, or locked: the same answer after the same work
        with contextlib.suppress(VerificationError, InvalidHashError):
            _hasher.verify(_dummy(), password)
        return SignIn(None, REFUSED, "unknown name or locked account")
    ident, hashed = turn.id, turn.password_hash
    try:
        _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return SignIn(None, REFUSED, "wrong password")
    with db.session() as s:
        user = s.get(StaffUser, ident)
        if user is None:  # removed meanwhile
            return SignIn(None, REFUSED)
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        user.failed_attempts, user.locked_until, user.last_sign_in_at = 0, None, now
        s.flush()
        s.expunge(user)
    return SignIn(user)
