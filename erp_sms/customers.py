"""Finding customers in the email log the way office staff type them: a name without
its accents (``muller`` finds Müller), a phone number as the customer says it
(``07911 123456`` in the UK finds +447911123456), an order number; what staff type is
matched as text, never as a pattern (``%`` finds a ``%``, not every order).
"""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import func, insert, or_, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .config import get_settings
from .db import Database, utcnow
from .models import DirectoryMark, directory_table, message_table

LIMIT = 50

# Lower-case letters a name may carry that fold to plain ones, beyond what NFKD takes
# apart (ø, ł, ß…).
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


@functools.lru_cache(maxsize=1 << 16)  # organizations and names repeat text after text
def fold(text: str) -> str:
    """``text`` lower-cased without accents: what a search compares."""
    if text.isascii():
        return text.lower()
    plain = "".join(_FOLDS.get(c, c) for c in text.lower())
    decomposed = unicodedata.normalize("NFKD", plain)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


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


# -- the directory: who the log names, once each -----------------------------------------------

STEP = 50_000  # message ids read per step of a refresh
# A host's transaction may commit a text after a later one; its id would then sit below
# a mark already past it. Texts of the last quarter hour are read again on the next
# refresh (duplicates are ignored), so such a text is still found.
SETTLE = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class Refreshed:
    """What a refresh did: entries added, and texts (by id) it left for the next one."""

    added: int
    behind: int


def refresh(db: Database, *, steps: int | None = None) -> Refreshed:
    """Bring the directory up to the email log — the contacts and orders named by every
    text since the mark — reading at most ``steps`` steps of STEP ids (None: all). The
    search page runs a step or two before it searches; ``erp-sms db upgrade`` runs it
    to the end (the first time, over the whole log). Safe to run twice at once."""
    m = message_table.c
    added = 0
    with db.session() as s:
        mark = s.get(DirectoryMark, 1)
        if mark is None:
            mark = DirectoryMark(id=1, message_id=0)
            s.add(mark)
        top = s.scalar(select(func.max(m.id))) or 0
        settled = s.scalar(select(func.max(m.id)).where(m.created_at < utcnow() - SETTLE)) or 0
        read_to = mark.message_id
        # The texts of the last SETTLE already read: again (a later commit may have
        # left one of them out), however many steps the backlog gets.
        low = min(settled, read_to)
        while low < read_to:
            high = min(low + STEP, read_to)
            added += _enter(s, low, high)
            low = high
        taken = 0
        while low < top and (steps is None or taken < steps):
            high = min(low + STEP, top)
            added += _enter(s, low, high)
            low, taken = high, taken + 1
        mark.message_id = max(mark.message_id, low)
        if added >= _ANALYZE_AFTER and s.get_bind().dialect.name == "postgresql":
            # Statistics now, not when autovacuum gets to it: without them the planner
            # reads every order for LIKE '%muller%' (60-200 ms at 1,000,000, 0.3 with).
            s.execute(text("ANALYZE sms_directory"))
    return Refreshed(added, top - low)


_ANALYZE_AFTER = 10_000  # entries a refresh added (a backfill)


def _enter(session: Session, low: int, high: int) -> int:
    """The directory entries of the texts with ids in (low, high]."""
    m = message_table.c
    span = (m.id > low, m.id <= high)
    entries: dict[tuple[str, str, str, str], str] = {}
    for ref, name, number in session.execute(
        select(m.contact_ref, m.contact_name, m.recipient)
        .where(*span, m.contact_ref.is_not(None))
        .distinct()
    ):
        entry = ("contact", str(ref)[:64], (name or "")[:255], (number or "")[:32])
        entries[entry] = fold(entry[2])[:400]
    for number, organization in session.execute(
        select(m.order_number, m.organization_name).where(*span).distinct()
    ):
        entry = ("order", str(number)[:64], (organization or "")[:255], "")
        # The order number and its organization: one LIKE finds either.
        entries[entry] = f"{fold(entry[1])}\n{fold(entry[2])}"[:400]
    if not entries:
        return 0
    rows = [
        {"kind": k, "key": key, "name": name, "number": number, "folded": folded}
        for (k, key, name, number), folded in entries.items()
    ]
    conn = session.connection()
    name = conn.dialect.name
    if name == "postgresql":
        # One statement over five arrays: a multi-row VALUES of 5,000 parameters is
        # parsed again by the driver for every batch (most of a million-row backfill).
        columns = list(
            zip(
                *[(r["kind"], r["key"], r["name"], r["number"], r["folded"]) for r in rows],
                strict=True,
            )
        )
        result = conn.execute(
            _PG_ENTER, dict(zip(_PG_ARRAYS, (list(c) for c in columns), strict=True))
        )
        return int(result.rowcount or 0)
    stmt: Any
    if name == "sqlite":
        stmt = sqlite_insert(directory_table).on_conflict_do_nothing()
    else:
        # Every value is ours and cut to its column: IGNORE hides only the duplicates.
        stmt = insert(directory_table).prefix_with("IGNORE")
    # The driver's executemany: its row count is the rows that went in.
    return int(conn.execute(stmt, rows).rowcount or 0)


_PG_ARRAYS = ("kinds", "keys", "names", "numbers", "folded")
_PG_ENTER = text(
    "INSERT INTO sms_directory (kind, key, name, number, folded) "
    "SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:keys AS text[]), "
    "CAST(:names AS text[]), CAST(:numbers AS text[]), CAST(:folded AS text[])) "
    "ON CONFLICT DO NOTHING"
)


def find(session: Session, q: str) -> Found:
    """Customers by name, order number or phone number, from the directory of who the
    email log names (``refresh`` it first): what a search reads grows with the
    customers, not with every text they were sent (issue 27)."""
    q = q.strip()
    if not q:
        return Found([], [])
    d = directory_table.c
    whole = whole_number(q, get_settings().default_region)
    if whole is not None:
        # A whole phone number: the contacts with it, one index lookup — not a scan of
        # every name and order for its text (4-11 ms at 1,000,000 texts, and growing).
        return Found([], _contacts(session, d.number == whole))
    plain = fold(q)
    named = d.folded.contains(plain, autoescape=True)
    matched = session.execute(
        select(d.key, d.name).where(d.kind == "order", named).order_by(d.key, d.name).limit(LIMIT)
    ).all()
    orders = _with_counts(session, [(key, name) for key, name in matched])
    conds = [named] + [
        d.number.contains(digits, autoescape=True)
        for digits in phone_digits(q, get_settings().default_region)
    ]
    return Found(orders, _contacts(session, or_(*conds)))


def _contacts(session: Session, matches: Any) -> list[tuple[str, str | None, str | None]]:
    """(key, name, number) of the directory's contacts that ``matches``."""
    d = directory_table.c
    return [
        (key, name or None, number or None)
        for key, name, number in session.execute(
            select(d.key, d.name, d.number)
            .where(d.kind == "contact", matches)
            .order_by(d.name, d.key, d.number)
            .limit(LIMIT)
        )
    ]


def _with_counts(
    session: Session, orders: list[tuple[str, str]]
) -> list[tuple[str, str | None, int]]:
    """(order, organization, texts) of the orders found, counted by the order index."""
    if not orders:
        return []
    m = message_table.c
    counts = {
        (number, organization or ""): n
        for number, organization, n in session.execute(
            select(m.order_number, m.organization_name, func.count())
            .where(m.order_number.in_(sorted({key for key, _name in orders})))
            .group_by(m.order_number, m.organization_name)
        )
    }
    return [(key, name or None, counts.get((key, name), 0)) for key, name in orders]
