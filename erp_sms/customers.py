"""Finding customers in the email log the way office staff type them: a name without
its accents (``muller`` finds Müller), a phone number as the customer says it
(``07911 123456`` in the UK finds +447911123456), an order number; what staff type is
matched as text, never as a pattern (``%`` finds a ``%``, not every order).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import String, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from .config import get_settings
from .models import Message

LIMIT = 50

# Lower-case letters a name may carry that fold to plain ones, beyond what NFKD takes
# apart: the table PostgreSQL's translate() gets after lower(), so both sides fold alike.
_FOLDS = {
    **dict.fromkeys("áàâãäåāăą", "a"),
    **dict.fromkeys("çćčĉ", "c"),
    **dict.fromkeys("ďđ", "d"),
    **dict.fromkeys("éèêëēėęě", "e"),
    "ğ": "g",
    **dict.fromkeys("íìîïīįı", "i"),
    **dict.fromkeys("łľ", "l"),
    **dict.fromkeys("ñńň", "n"),
    **dict.fromkeys("óòôõöøōő", "o"),
    **dict.fromkeys("řŕ", "r"),
    **dict.fromkeys("śšşș", "s"),
    **dict.fromkeys("ťţț", "t"),
    **dict.fromkeys("úùûüūůűų", "u"),
    **dict.fromkeys("ýÿ", "y"),
    **dict.fromkeys("źżž", "z"),
    "ß": "ss",
    "æ": "ae",
    "œ": "oe",
}


def fold(text: str) -> str:
    """``text`` lower-cased without accents: what a search compares."""
    plain = "".join(_FOLDS.get(c, c) for c in text.lower())
    decomposed = unicodedata.normalize("NFKD", plain)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class folded(FunctionElement[str]):
    """``fold(column)`` in SQL: on SQLite the Python function itself (registered on the
    connection by ``find``), on PostgreSQL ``translate()`` (no extension needed), on
    MariaDB its accent-insensitive collation does it and ``lower()`` is enough."""

    type = String()
    inherit_cache = True
    name = "erp_sms_fold"


_SQLITE_FOLD = "erp_sms_fold"
_ONE = {k: v for k, v in _FOLDS.items() if len(v) == 1}
_MANY = {k: v for k, v in _FOLDS.items() if len(v) > 1}


@compiles(folded)
def _folded_sqlite(element: folded, compiler: Any, **kw: Any) -> str:
    return f"{_SQLITE_FOLD}({compiler.process(element.clauses, **kw)})"


@compiles(folded, "postgresql")
def _folded_postgresql(element: folded, compiler: Any, **kw: Any) -> str:
    expr: Any = func.lower(next(iter(element.clauses)))
    for letter, plain in _MANY.items():
        expr = func.replace(expr, letter, plain)
    expr = func.translate(expr, "".join(_ONE), "".join(_ONE.values()))
    return str(compiler.process(expr, **kw))


@compiles(folded, "mysql")
@compiles(folded, "mariadb")
def _folded_mysql(element: folded, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


def _register_fold(session: Session) -> None:
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.create_function(_SQLITE_FOLD, 1, _fold_or_none, deterministic=True)


def _fold_or_none(text: str | None) -> str | None:
    return None if text is None else fold(text)


def phone_digits(text: str, region: str) -> list[str]:
    """The digit strings a number typed as ``text`` is stored under: as typed, and as
    the international number (without +) and the national one when it parses."""
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) < 4:
        return []
    found = {digits}
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return [digits]
    if phonenumbers.is_possible_number(number):
        found.add(f"{number.country_code}{number.national_number}")
        found.add(str(number.national_number))
    return sorted(found, key=len, reverse=True)


def whole_number(text: str, region: str) -> str | None:
    """``text`` as an E.164 number when it is a whole, valid one (``07911 123456`` in the
    UK: +447911123456), else None (a part of a number, a name)."""
    if sum(c.isdigit() for c in text) < 7 or any(c.isalpha() for c in text):
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class Found:
    """Orders (number, organization, texts) and contacts (key, name, number) found."""

    orders: list[tuple[str, str | None, int]]
    contacts: list[tuple[str, str | None, str | None]]


def find(session: Session, q: str) -> Found:
    """Customers by name, order number or phone number, from the email log."""
    q = q.strip()
    if not q:
        return Found([], [])
    plain = fold(q)
    _register_fold(session)
    orders = [
        (number, org, n)
        for number, org, n in session.execute(
            select(Message.order_number, Message.organization_name, func.count())
            .where(
                or_(
                    Message.order_number.icontains(q, autoescape=True),
                    folded(Message.organization_name).contains(plain, autoescape=True),
                )
            )
            .group_by(Message.order_number, Message.organization_name)
            .order_by(Message.order_number)
            .limit(LIMIT)
        )
    ]
    conds = [folded(Message.contact_name).contains(plain, autoescape=True)]
    whole = whole_number(q, get_settings().default_region)
    if whole is not None:
        # A whole number: the texts sent to it by the recipient index (every channel
        # stores the E.164 number there), not a scan of every address (issue 27).
        conds.append(Message.recipient == whole)
    else:
        for digits in phone_digits(q, get_settings().default_region):
            conds += [
                Message.recipient.contains(digits, autoescape=True),
                Message.address.contains(digits, autoescape=True),
            ]
    contacts = [
        (str(key), name, number)
        for key, name, number in session.execute(
            select(Message.contact_ref, Message.contact_name, Message.recipient)
            .where(or_(*conds), Message.contact_ref.is_not(None))
            .distinct()
            .limit(LIMIT)
        )
    ]
    return Found(orders, contacts)
