"""What every staff command shares: the database, the session, who is acting."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..config import get_settings
from ..db import Database, describe_error, safe_url
from ..errors import ErpSmsError


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "staff"


def _db() -> Database:
    return Database(get_settings().database_url)


@contextmanager
def database() -> Iterator[Database]:
    """The configured database; its errors become one line that says what to do."""
    db = _db()
    try:
        yield db
    except SQLAlchemyError as exc:
        raise ErpSmsError(describe_error(exc, get_settings().database_url)) from None
    finally:
        db.dispose()


@contextmanager
def staff_session(*, readonly: bool = False) -> Iterator[Session]:
    """A session for one staff command; ``readonly`` takes no write lock on SQLite."""
    with database() as db, db.read_session() if readonly else db.session() as s:
        yield s


def _safe_url() -> str:
    return safe_url(get_settings().database_url)


def readable(db: Database) -> None:
    """Ask the database for one text's id: a database that cannot be read (gone, not a
    database, no tables) is one line before any work starts, not a warning per step."""
    from sqlalchemy import select

    from ..models import Message

    with db.read_session() as s:
        s.execute(select(Message.id).limit(1)).all()
