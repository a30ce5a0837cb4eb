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
from typing import Any, Protocol

from sqlalchemy import null, select, union_all
from sqlalchemy.orm import Session

from . import erased, feedback
from .addresses import classify
from .codes import Program
from .config import get_settings
from .db import utcnow
from .errors import AddressError, InputError
from .models import ConsentEvent, ErasedOptOut, OptOut, ProgramOptOut
from .outbox import cancel_for_opt_out
from .recipients import ContactView, RecipientLookup, default_lookup

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


def blocking_query(program: Any) -> Any:
    """The opt-outs that stop a text of ``program`` (a value or a bind parameter): those
    of every program (``sms_opt_out``, a STOP) and those of that one — rows of
    (number, at, source, program), program NULL for all."""
    every = select(OptOut.number, OptOut.at, OptOut.source, null().label("program"))
    p = ProgramOptOut
    one = select(p.number, p.at, p.source, p.program).where(p.program == program)
    return union_all(every, one)


def opted_out(
    session: Session, numbers: Iterable[str], program: str | None = None
) -> dict[str, OptOutRow]:
    """The opt-outs among ``numbers`` that stop a text of ``program`` (None: of every
    program only); one query, rows, not ORM objects (the host path)."""
    wanted = sorted({n for n in numbers if n})
    if not wanted:
        return {}
    blocking = blocking_query(program or "").subquery()
    rows = session.execute(select(blocking).where(blocking.c.number.in_(wanted)))
    return {r.number: r for r in rows}


class OptOutRow(Protocol):
    """What ``describe`` needs of an opt-out (an ``OptOut`` or a row)."""

    number: str
    at: dt.datetime
    source: str


def describe(opt_out: OptOutRow) -> str:
    """The reason a text is not sent to an opted-out number."""
    program = getattr(opt_out, "program", None)
    if opt_out.number.startswith(erased.PREFIX):  # kept as a hash: the number is not known
        return (
            f"the number opted out on {opt_out.at:%Y-%m-%d %H:%M} UTC ({opt_out.source}) and "
            "its owner's data was erased since; it gets no texts until it opts back in "
            "(START, or `erp-sms contacts opt-in`)"
        )
    if program:
        return (
            f"{opt_out.number} opted out of {PROGRAM_WORDS.get(program, program)} on "
            f"{opt_out.at:%Y-%m-%d %H:%M} UTC ({opt_out.source}); it gets none until it opts "
            f"back in (`erp-sms contacts opt-in ID --program {program}`)"
        )
    return (
        f"{opt_out.number} opted out on {opt_out.at:%Y-%m-%d %H:%M} UTC ({opt_out.source}); "
        "it gets no texts until it opts back in (START, or `erp-sms contacts opt-in`)"
    )


# How a program is said in a reason.
PROGRAM_WORDS = {
    Program.ORDERS: "order updates",
    Program.REMINDERS: "payment reminders",
    Program.STAFF: "texts from staff",
}


def by_program(session: Session, contact: ContactView) -> list[tuple[str, str]]:
    """A contact's consent per program, as staff read it: (program in words, state)."""
    number = number_of(contact.address)
    if not contact.has_smsupdate:
        return [(PROGRAM_WORDS[p], "no: SMSUPDATE is off") for p in Program.ALL]
    every = session.get(OptOut, number) if number else None
    out = []
    for p in Program.ALL:
        row = every or (session.get(ProgramOptOut, (number, p)) if number else None)
        state = f"opted out {row.at:%Y-%m-%d} ({row.source})" if row is not None else "yes"
        out.append((PROGRAM_WORDS[p], state))
    return out


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
    program: str | None = None,
) -> ConsentChange:
    """Opt a contact (and its number), or a number (and every contact with it), out —
    at once, in ``session``'s transaction; ``program``: of that program only (order
    updates, reminders, staff's texts), the others still come."""
    lookup = lookup or default_lookup()
    contacts, number = _contacts(session, lookup, contact_key, number)
    if program is not None:
        return _program_out(session, contacts, number, program, source, detail, actor)
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
        record_event(session, views, number, OPT_OUT, source, detail, actor)
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
    program: str | None = None,
) -> ConsentChange:
    """Opt a contact (and its number), or a number (and every contact with it), back in.
    ``at``: when the consent was given, if not now (an import of consents collected
    elsewhere). ``program``: into that program only — a number that had opted out of
    everything stays out of the others."""
    lookup = lookup or default_lookup()
    contacts, number = _contacts(session, lookup, contact_key, number)
    if program is not None:
        _check_program(program)
    changed = False
    if number is not None:
        _unhash(session, number)
        row = session.get(OptOut, number)
        if row is not None:
            if program is not None:  # out of all but this one now
                for other in Program.ALL:
                    if other != program and session.get(ProgramOptOut, (number, other)) is None:
                        session.add(
                            ProgramOptOut(
                                number=number, program=other, source=row.source,
                                contact_ref=row.contact_ref, detail=row.detail, at=row.at,
                            )
                        )  # fmt: skip
            session.delete(row)
            changed = True
        programs = [program] if program is not None else list(Program.ALL)
        for p in programs:
            mine = session.get(ProgramOptOut, (number, p))
            if mine is not None:
                session.delete(mine)
                changed = True
    views = []
    for c in contacts:
        if not c.has_smsupdate:
            c = lookup.set_consent(session, c.key, True)
            changed = True
        views.append(c)
    if changed:
        record_event(session, views, number, OPT_IN, source, detail, actor, at, program)
        _tell(session, views, number, OPT_IN, source)
    session.flush()
    return ConsentChange(number, views, changed)


def _unhash(session: Session, number: str) -> None:
    """An erased number's opt-outs (kept as its hash) under the number again: the number
    is back in erp-sms's tables the moment its owner opts back in, and the opt-in then
    lifts them as it lifts any other."""
    hash_of = erased.hasher(session.connection())
    if hash_of is None:
        return
    rows = session.scalars(select(ErasedOptOut).where(ErasedOptOut.digest == hash_of(number))).all()
    for row in rows:
        session.delete(row)
        if row.program == erased.EVERY:
            if session.get(OptOut, number) is None:
                session.add(OptOut(number=number, at=row.at, source=row.source))
        elif session.get(ProgramOptOut, (number, row.program)) is None:
            session.add(
                ProgramOptOut(number=number, program=row.program, at=row.at, source=row.source)
            )
    session.flush()


def _check_program(program: str) -> None:
    if program not in Program.ALL:
        raise InputError(f"unknown program {program!r}: use one of {', '.join(Program.ALL)}")


def _program_out(
    session: Session,
    contacts: list[ContactView],
    number: str | None,
    program: str,
    source: str,
    detail: str | None,
    actor: str | None,
) -> ConsentChange:
    """Out of one program: the number's row for it, the consent trail, its texts still
    waiting canceled; SMSUPDATE and the other programs are left as they are."""
    _check_program(program)
    if number is None:
        raise InputError(
            "the contact has no phone number to opt out of one program: opt it out of all, "
            "or give it a number"
        )
    changed = False
    if (
        session.get(OptOut, number) is None
        and session.get(ProgramOptOut, (number, program)) is None
    ):
        key = contacts[0].key if contacts else None
        session.add(
            ProgramOptOut(
                number=number, program=program, source=source, contact_ref=key, detail=detail,
                at=utcnow(),
            )
        )  # fmt: skip
        record_event(session, contacts, number, OPT_OUT, source, detail, actor, program=program)
        _tell(session, contacts, number, OPT_OUT, source)
        changed = True
    session.flush()
    words = PROGRAM_WORDS.get(program, program)
    canceled = cancel_for_opt_out(
        session,
        numbers=[number],
        contact_refs=[c.key for c in contacts],
        reason=f"canceled: {number} opted out of {words} ({source}) before it was sent",
        by=source,
        program=program,
    )
    return ConsentChange(number, contacts, changed, canceled)


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


def record_event(
    session: Session,
    contacts: list[ContactView],
    number: str | None,
    action: str,
    source: str,
    detail: str | None,
    actor: str | None,
    at: dt.datetime | None = None,
    program: str | None = None,
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
                program=program,
            )
        )
