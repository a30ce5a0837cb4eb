"""What every staff command shares: the database session, who is acting."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from .config import get_settings
from .db import Database
from .errors import ErpSmsError


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "staff"


def _db() -> Database:
    return Database(get_settings().database_url)


@contextmanager
def staff_session(*, readonly: bool = False) -> Iterator[Session]:
    """A session for one staff command; ``readonly`` takes no write lock on SQLite."""
    db = _db()
    try:
        with db.read_session() if readonly else db.session() as s:
            yield s
    except (OperationalError, ProgrammingError) as exc:
        text = str(exc.orig) if exc.orig is not None else str(exc)
        if "no such table" in text or "does not exist" in text or "doesn't exist" in text:
            raise ErpSmsError(
                f"the erp-sms tables are missing in {_safe_url()}: run `erp-sms db upgrade`"
            ) from None
        raise ErpSmsError(f"database error: {text.splitlines()[0]}") from None
    finally:
        db.dispose()


def _safe_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(get_settings().database_url).render_as_string(hide_password=True)
