"""Numbers whose owner asked to be forgotten: their opt-out is kept as a keyed hash
(HMAC-SHA256 with a random key made once per database by migration p0017), so the
number itself is gone from erp-sms's tables and a text to it is still refused.

The hashes live in ``sms_opt_out_erased`` (``*``: every program, or one program); ``#``
starts each, which no E.164 number does. The planner's one settings statement says
whether the table holds anything, and only then looks the event's numbers' hashes up (an
erasure is rare: the host path pays nothing for it otherwise); the send guard looks up a
number and its hash in one statement.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Exists, exists, insert, select

from .db import utcnow
from .models import ErasedOptOut, State

KEY = "erase_key"
PREFIX = "#"
EVERY = "*"  # the program of an opt-out of every program (a STOP)

# Per engine: the key never changes once made (the migration writes it, nothing rewrites
# it), so each process reads it once per database.
_keys: dict[Any, bytes] = {}
_lock = threading.Lock()


def key(conn: Any) -> bytes | None:
    """The database's erase key (None: its row was deleted by hand; nothing was erased
    with a key this database still has)."""
    engine = conn.engine
    found = _keys.get(engine)
    if found is not None:
        return found
    stored = conn.execute(select(State.value).where(State.name == KEY)).scalar()
    if not stored:
        return None
    with _lock:
        _keys[engine] = bytes.fromhex(stored)
    return _keys[engine]


def ensure_key(conn: Any) -> bytes:
    """The key, made now should the database have lost it (its row deleted by hand): an
    erasure always has one to hash with. Hashes made with a lost key no longer match."""
    found = key(conn)
    if found is not None:
        return found
    conn.execute(insert(State).values(name=KEY, value=secrets.token_hex(32), updated_at=utcnow()))
    made = key(conn)
    assert made is not None
    return made


def digest(secret: bytes, number: str) -> str:
    """The hash an erased ``number`` (E.164) is kept as: 31 characters after ``#``."""
    mac = hmac.new(secret, number.encode("utf-8"), hashlib.sha256).digest()
    return PREFIX + base64.b32encode(mac).decode("ascii")[:31].lower()


def hasher(conn: Any) -> Callable[[str], str] | None:
    """``digest`` with this database's key, or None when it has none."""
    secret = key(conn)
    if secret is None:
        return None
    return lambda number: digest(secret, number)


def any_query() -> Exists:
    """Whether any erased number's opt-out is kept (an EXISTS for the planner's settings
    statement: nothing to hash when there is none)."""
    return exists(select(ErasedOptOut.digest))


@dataclass(frozen=True)
class Blocked:
    """An erased number's opt-out, as ``consent.describe`` reads an opt-out."""

    number: str  # the hash: the number itself is not kept
    at: dt.datetime
    source: str
    program: str | None


def blocking(conn: Any, numbers: Sequence[str], program: str | None) -> dict[str, Blocked]:
    """The kept opt-outs among ``numbers``' hashes that stop a text of ``program``, by
    number (one statement)."""
    hash_of = hasher(conn)
    if hash_of is None or not numbers:
        return {}
    by_hash = {hash_of(n): n for n in numbers}
    e = ErasedOptOut
    rows = conn.execute(
        select(e.digest, e.at, e.source, e.program).where(
            e.digest.in_(sorted(by_hash)), e.program.in_([EVERY, program or EVERY])
        )
    ).all()
    out: dict[str, Blocked] = {}
    for digest, at, source, prog in rows:
        if by_hash[digest] not in out or prog == EVERY:
            out[by_hash[digest]] = Blocked(digest, at, source, None if prog == EVERY else prog)
    return out
