"""Numbers whose owner asked to be forgotten: their opt-out is kept as a keyed hash
(HMAC-SHA256 with a random key made once per database by migration p0017), so the
number itself is gone from erp-sms's tables and a text to it is still refused.

The hash takes the place of the number in ``sms_opt_out`` (and the program opt-outs);
``#`` starts it, which no E.164 number does. The planner and the send guard look up a
number and its hash together.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .models import State

KEY = "erase_key"
PREFIX = "#"

# Per engine: the key never changes once made (the migration writes it, nothing rewrites
# it), so each process reads it once per database.
_keys: dict[Any, bytes] = {}
_lock = threading.Lock()


def key(conn: Any) -> bytes | None:
    """The database's erase key (None: a schema without it, where nothing was erased)."""
    engine = conn.engine
    found = _keys.get(engine)
    if found is not None:
        return found
    try:
        stored = conn.execute(select(State.value).where(State.name == KEY)).scalar()
    except SQLAlchemyError:
        return None
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
    from sqlalchemy import insert

    from .db import utcnow

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
