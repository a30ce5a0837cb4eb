"""Consent: the plugin's own opt-out list, the host's SMSUPDATE attribute, and the
consent trail.

An opt-out — by STOP reply, Twilio error 21610, staff, or the host — takes effect at
once (CONTRACT.md "Consent"):

- the number goes on the opt-out list (``sms_opt_out``, E.164, however it was typed),
  which is consulted when texts are planned and again when they are claimed;
- the SMSUPDATE attribute of the contact(s) is removed through the host's lookup;
- texts already queued or held for that contact or number are canceled with a reason
  naming the opt-out;
- one consent event records it (time, source, actor, number) — and only when something
  changed: opting out twice records one event.

An opt-in removes the number from the list and adds SMSUPDATE back. Sources: ``cli``,
``pages``, ``sms_reply``, ``twilio_21610``, ``host``, ``import``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import feedback
from .addresses import classify
from .config import get_settings
from .db import utcnow
from .errors import AddressError, InputError
from .models import ConsentEvent, OptOut
from .outbox import cancel_for_opt_out
from .recipients import ContactView, RecipientLookup, default_lookup
from .sendwindow import now as clock_now

OPT_IN = "opt_in"
OPT_OUT = "opt_out"


@dataclass(frozen=True)
class ConsentChange:
    """What an opt-in or opt-out did."""

    number: str | None
    contacts: list[ContactView] = field(default_factory=list)
    changed: bool = False  # False: it was already so (no consent event recorded)
    canceled: list[int] = field(default_factory=list)  # ids of texts canceled by it


def number_of(address: str | None) -> str | None:
    """The E.164 number of a text address, or None when it has none."""
    try:
        return classify(address, get_settings().default_region).e164
    except AddressError:
        return None


def normalise_number(text: str) -> str:
    """A phone number as typed by staff or sent by Twilio, in E.164; ``InputError``
    when it is not a phone number."""
    try:
        return classify(text, get_settings().default_region).e164
    except AddressError as exc:
        raise InputError(exc.message) from None


def opted_out(session: Session, numbers: Iterable[str]) -> dict[str, OptOutRow]:
    """The opt-outs among ``numbers`` (one query; rows, not ORM objects: the host path)."""
    wanted = sorted({n for n in numbers if n})
    if not wanted:
        return {}
    rows = session.execute(
        select(OptOut.number, OptOut.at, OptOut.source).where(OptOut.number.in_(wanted))
    )
    return {r.number: r for r in rows}


class OptOutRow(Protocol):
    """What ``describe`` needs of an opt-out (an ``OptOut`` or a row)."""

    number: str
    at: dt.datetime
    source: str


def describe(opt_out: OptOutRow) -> str:
    """The reason a text is not sent to an opted-out number."""
    return (
        f"{opt_out.number} opted out on {opt_out.at:%Y-%m-%d %H:%M} UTC ({opt_out.source}); "
        "it gets no texts until it opts back in (START, or `erp-sms contacts opt-in`)"
    )


def _contacts(
    session: Session, lookup: RecipientLookup, contact_key: str | None, number: str | None
) -> tuple[list[ContactView], str | None]:
    # However the caller wrote it (a host's "0044 7911 123458", a gateway address): the
    # list holds E.164, as a STOP and the planner see it; not a number is refused.
    number = normalise_number(number) if number is not None else None
    found: dict[str, ContactView] = {}
    if contact_key is not None:
        view = lookup.contact(session, contact_key)
        if view is None:
            raise InputError(
                f"no contact with id {contact_key!r}: check the id (`erp-sms timeline "
                "--contact ID` shows one contact)"
            )
        found[view.key] = view
        number = number or number_of(view.address)
    if number is not None:
        for c in lookup.contacts_with_number(session, number):
            found.setdefault(c.key, c)
    return list(found.values()), number


def opt_out(
    session: Session,
    *,
    contact_key: str | None = None,
    number: str | None = None,
    source: str,
    detail: str | None = None,
    actor: str | None = None,
    lookup: RecipientLookup | None = None,
) -> ConsentChange:
    """Opt a contact (and its number), or a number (and every contact with it), out —
    at once, in ``session``'s transaction."""
    lookup = lookup or default_lookup()
    contacts, number = _contacts(session, lookup, contact_key, number)
    changed = False
    if number is not None and session.get(OptOut, number) is None:
        key = contacts[0].key if contacts else None
        session.add(
            OptOut(number=number, source=source, contact_ref=key, detail=detail, at=utcnow())
        )
        changed = True
    views = []
    for c in contacts:
        if c.has_smsupdate:
            c = lookup.set_consent(session, c.key, False)
            changed = True
        views.append(c)
    if changed:
        _record(session, views, number, OPT_OUT, source, detail, actor)
        _tell(session, views, number, OPT_OUT, source)
    session.flush()
    what = f"{number or 'the contact'} opted out ({source})"
    canceled = cancel_for_opt_out(
        session,
        numbers=[number] if number else [],
        contact_refs=[c.key for c in views],
        reason=f"canceled: {what} before it was sent",
        by=source,
    )
    return ConsentChange(number, views, changed, canceled)


def opt_in(
    session: Session,
    *,
    contact_key: str | None = None,
    number: str | None = None,
    source: str,
    detail: str | None = None,
    actor: str | None = None,
    lookup: RecipientLookup | None = None,
    at: dt.datetime | None = None,
) -> ConsentChange:
    """Opt a contact (and its number), or a number (and every contact with it), back in.
    ``at``: when the consent was given, if not now (an import of consents collected
    elsewhere)."""
    lookup = lookup or default_lookup()
    contacts, number = _contacts(session, lookup, contact_key, number)
    changed = False
    if number is not None:
        row = session.get(OptOut, number)
        if row is not None:
            session.delete(row)
            changed = True
    views = []
    for c in contacts:
        if not c.has_smsupdate:
            c = lookup.set_consent(session, c.key, True)
            changed = True
        views.append(c)
    if changed:
        _record(session, views, number, OPT_IN, source, detail, actor, at)
        _tell(session, views, number, OPT_IN, source)
    session.flush()
    return ConsentChange(number, views, changed)


def _tell(
    session: Session, contacts: list[ContactView], number: str | None, action: str, source: str
) -> None:
    """The host hears of the change once ``session`` commits (``erp_sms.feedback``)."""
    feedback.note(
        session,
        feedback.consent_changed(
            number=number,
            contact_keys=[c.key for c in contacts],
            action=action,
            source=source,
            at=utcnow(),
        ),
    )


def _record(
    session: Session,
    contacts: list[ContactView],
    number: str | None,
    action: str,
    source: str,
    detail: str | None,
    actor: str | None,
    at: dt.datetime | None = None,
) -> None:
    targets: list[ContactView | None] = list(contacts) or [None]
    for c in targets:
        session.add(
            ConsentEvent(
                at=at or utcnow(),
                contact_ref=c.key if c else None,
                contact_name=c.name if c else None,
                address=c.address if c else number,
                number=number,
                action=action,
                source=source,
                detail=detail if c else f"{detail or ''}; no contact has this number".lstrip("; "),
                actor=actor,
            )
        )


# -- the consent trail -----------------------------------------------------------------------

TRAIL_COLUMNS = (
    "at",
    "action",
    "source",
    "actor",
    "contact_id",
    "contact_name",
    "number",
    "address",
    "detail",
)


def trail(
    session: Session,
    *,
    contact_key: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[dict[str, str]]:
    """Every opt-in and opt-out (STOP/START replies, Twilio 21610, staff on the CLI or the
    pages, the host, imports), oldest first, as rows of ``TRAIL_COLUMNS`` for an auditor;
    times in UTC, ISO 8601."""
    q = select(ConsentEvent).order_by(ConsentEvent.at, ConsentEvent.id)
    if contact_key is not None:
        q = q.where(ConsentEvent.contact_ref == contact_key)
    if since is not None:
        q = q.where(ConsentEvent.at >= since)
    if until is not None:
        q = q.where(ConsentEvent.at <= until)
    return [
        {
            "at": e.at.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "action": e.action,
            "source": e.source,
            "actor": e.actor or "",
            "contact_id": e.contact_ref or "",
            "contact_name": e.contact_name or "",
            "number": e.number or "",
            "address": e.address or "",
            "detail": e.detail or "",
        }
        for e in session.scalars(q)
    ]


IMPORT_COLUMNS = ("contact", "date", "source")  # and optionally "note"


@dataclass(frozen=True)
class Imported:
    """What ``import_opt_ins`` did: a line per row."""

    recorded: int
    lines: list[str]


def import_opt_ins(
    session: Session,
    rows: Iterable[dict[str, str]],
    *,
    by: str,
    today: dt.date | None = None,
    lookup: RecipientLookup | None = None,
) -> Imported:
    """Record opt-ins collected elsewhere (a signed form, a web form…): each row names the
    contact (id), the date it was given (YYYY-MM-DD) and where (``source``; ``note``
    optional). Every row is checked before anything is written (``InputError`` naming the
    line). A consent older than the contact's last opt-out is not applied: the opt-out
    came later and stands."""
    lookup = lookup or default_lookup()
    today = today or clock_now().date()
    checked: list[tuple[int, ContactView, dt.date, str, str]] = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        missing = [c for c in IMPORT_COLUMNS if not (row.get(c) or "").strip()]
        if missing:
            raise InputError(
                f"line {line}: no {missing[0]}: each row needs contact, date (YYYY-MM-DD) "
                "and source; nothing was imported"
            )
        key, text, source = (row[c].strip() for c in IMPORT_COLUMNS)
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise InputError(
                f"line {line}: {text!r} is not a date: use YYYY-MM-DD; nothing was imported"
            ) from None
        if day > today:
            raise InputError(f"line {line}: {day} is in the future; nothing was imported")
        view = lookup.contact(session, key)
        if view is None:
            raise InputError(f"line {line}: no contact {key!r}; nothing was imported")
        checked.append((line, view, day, source[:200], (row.get("note") or "").strip()))
    out, recorded = [], 0
    for line, view, day, source, note in checked:
        given = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
        last_out = session.scalar(
            select(ConsentEvent.at)
            .where(ConsentEvent.contact_ref == view.key, ConsentEvent.action == OPT_OUT)
            .order_by(ConsentEvent.at.desc())
            .limit(1)
        )
        if last_out is not None and last_out.astimezone(dt.UTC).date() >= day:
            out.append(
                f"line {line}: {view.name}: not applied — they opted out on "
                f"{last_out.astimezone(dt.UTC).date()}, after this consent of {day}"
            )
            continue
        detail = f"collected via {source} on {day}" + (f": {note}" if note else "")
        done = opt_in(
            session, contact_key=view.key, source="import", detail=detail, actor=by, at=given
        )
        recorded += 1
        if done.changed:
            out.append(f"line {line}: {view.name}: opted in ({source}, {day})")
        else:  # already opted in: the evidence still belongs in the trail
            _record(session, [view], done.number, OPT_IN, "import", detail, by, given)
            out.append(f"line {line}: {view.name}: already opted in; consent recorded")
    return Imported(recorded, out)
