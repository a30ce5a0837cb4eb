"""Retention and erasure (CONTRACT.md "Operators").

- ``purge``: texts finished more than N days ago lose their words, number, address and
  the provider's raw reports; replies as old lose theirs; delivered webhook events,
  fold locks and stopped reminder runs' plans go. Counts and costs stay (each text row
  stays with its status, channel, segments and price), and so does the consent trail:
  it is the evidence of consent the law asks to keep.
- ``erase_contact``: one person's data gone from erp-sms's tables at their request —
  texts, replies, consent trail, customer search, reminder plans. An opt-out survives
  as its number's keyed hash (``erased``), so the number still gets nothing.

The ERP's own tables are the host's: erasing the contact there is the host's part.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from . import erased, outbox
from .addresses import mask
from .consent import number_of
from .db import Database, rowcount, utcnow
from .errors import InputError
from .models import (
    ConsentEvent,
    DirectoryEntry,
    ErasedOptOut,
    Fold,
    HostEvent,
    InboundMessage,
    Message,
    OptOut,
    ProgramOptOut,
    SequenceRun,
    State,
    inbound_table,
)
from .outbox import retention as kept
from .recipients import RecipientLookup, default_lookup

PURGED_AT = "purged_at"  # sms_state: when the last purge ran
ERASED = "erased"  # the consent trail's action for an erasure

Progress = Callable[[int], None]


@dataclass
class Purged:
    """What a purge changed (or, dry, would change)."""

    texts: int = 0
    replies: int = 0
    webhook_events: int = 0
    runs: int = 0

    def line(self, days: int, *, dry_run: bool = False) -> str:
        verb = "would remove" if dry_run else "removed"
        line = (
            f"purge: {verb} the words, numbers and raw reports of {self.texts} text(s) "
            f"and {self.replies} reply(ies) finished more than {days} day(s) ago"
        )
        if not dry_run:
            line += (
                f"; dropped {self.webhook_events} delivered webhook event(s) and "
                f"{self.runs} stopped reminder plan(s)"
            )
        return line + "; counts and costs in reports are unchanged"


def count_purgeable(s: Session, days: int, now: dt.datetime | None = None) -> int:
    """How many texts a purge of ``days`` would change (for a progress bar)."""
    return kept.count_purgeable(s, cutoff_for(days, now or utcnow()))


def cutoff_for(days: int, now: dt.datetime) -> dt.datetime:
    if days < 1:
        raise InputError(f"--older-than takes a whole number of days of 1 or more, not {days}")
    return now - dt.timedelta(days=days)


def purge(
    db: Database,
    days: int,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Purged:
    """Forget what finished more than ``days`` ago, a batch per transaction;
    ``progress`` is told how many texts each batch did."""
    now = now or utcnow()
    cutoff = cutoff_for(days, now)
    done = Purged()
    if dry_run:
        with db.read_session() as s:
            done.texts = kept.count_purgeable(s, cutoff)
            done.replies = int(s.scalar(select(func.count()).where(_old_replies(cutoff))) or 0)
        return done
    while True:
        with db.session() as s:
            ids = kept.purgeable(s, cutoff)
            done.texts += kept.forget(s, ids)
        if progress is not None and ids:
            progress(len(ids))
        if len(ids) < kept.BATCH:
            break
    with db.session() as s:
        done.replies = _forget_replies(s, cutoff)
        done.webhook_events = rowcount(
            s.execute(
                delete(HostEvent).where(
                    HostEvent.delivered_at.is_not(None), HostEvent.delivered_at < cutoff
                )
            )
        )
        s.execute(delete(Fold).where(Fold.updated_at < cutoff))
        done.runs = rowcount(
            s.execute(
                update(SequenceRun)
                .where(SequenceRun.stopped_at < cutoff, SequenceRun.plan != _EMPTY_PLAN)
                .values(plan=_EMPTY_PLAN)
            )
        )
        _mark(s, PURGED_AT, now.isoformat())
    return done


_EMPTY_PLAN = json.dumps({"context": {}, "contacts": []})


def _old_replies(cutoff: dt.datetime) -> ColumnElement[bool]:
    return and_(InboundMessage.received_at < cutoff, InboundMessage.body != "")


def _forget_replies(s: Session, cutoff: dt.datetime) -> int:
    """Old replies lose their words and all but the last 4 digits of their number (an
    erased number's hash stays: it holds nothing), in one executemany."""
    rows = s.execute(
        select(InboundMessage.id, InboundMessage.from_number).where(_old_replies(cutoff))
    ).all()
    if rows:
        s.connection().execute(
            update(inbound_table)
            .where(inbound_table.c.id == bindparam("_id"))
            .values(body="", raw=None, from_number=bindparam("_number")),
            [
                {"_id": rid, "_number": n if n.startswith(erased.PREFIX) else mask(n)}
                for rid, n in rows
            ],
        )
    return len(rows)


def _mark(s: Session, name: str, value: str) -> None:
    row = s.get(State, name)
    if row is None:
        s.add(State(name=name, value=value, updated_at=utcnow()))
    else:
        row.value = value


def last_purge(s: Session) -> dt.datetime | None:
    row = s.get(State, PURGED_AT)
    return dt.datetime.fromisoformat(row.value) if row is not None else None


# -- erasure -----------------------------------------------------------------------------------


@dataclass
class Erased:
    """What an erasure removed."""

    contact_key: str
    texts: int
    replies: int
    consent_events: int
    opt_outs_kept: int
    canceled: int

    def line(self) -> str:
        kept_line = (
            f"; its opt-out is kept as a hash ({self.opt_outs_kept}), so the number still "
            "gets nothing"
            if self.opt_outs_kept
            else ""
        )
        return (
            f"contact {self.contact_key}: erased from erp-sms — {self.texts} text(s), "
            f"{self.replies} reply(ies) and {self.consent_events} consent record(s) no longer "
            f"hold its name, number or words; {self.canceled} waiting text(s) canceled"
            f"{kept_line}. Counts and costs in reports are unchanged. Remove the contact "
            "from the ERP too."
        )


def erase_contact(
    session: Session,
    contact_key: str,
    *,
    by: str = "host",
    lookup: RecipientLookup | None = None,
) -> Erased:
    """Remove a contact's personal data from erp-sms's tables, in ``session``'s
    transaction (a host calls it in its own; the CLI in one of its own): texts keep
    their status, channel, segments and price; their words, number, address, name and
    raw reports go; replies and consent records lose the number and words; the
    customer search forgets the contact; an opt-out stays, as the number's keyed hash.
    """
    lookup = lookup or default_lookup()
    key = str(contact_key)
    view = lookup.contact(session, key)
    numbers, names = _known(session, key)
    if view is not None:
        if view.name:
            names.add(view.name)
        n = number_of(view.address)
        if n:
            numbers.add(n)
    if view is None and not numbers and not names:
        raise InputError(
            f"no contact with id {key!r} in the ERP or in erp-sms's tables: check the id "
            "(`erp-sms timeline --contact ID`)"
        )
    secret = erased.ensure_key(session.connection())

    def hash_of(number: str) -> str:
        return erased.digest(secret, number)

    canceled = outbox.cancel_for_opt_out(
        session,
        numbers=sorted(numbers),
        contact_refs=[key],
        reason="canceled: the contact's data was erased before it was sent",
        by=by,
    )
    kept_count = _hash_opt_outs(session, key, numbers, hash_of)
    texts = 0
    name_list = sorted(names, key=len, reverse=True)
    while True:
        ids = kept.of_contact(session, key, sorted(numbers))
        texts += kept.forget(session, ids, forget_contact=True, names=name_list)
        if len(ids) < kept.BATCH:
            break
    replies = _erase_replies(session, numbers, hash_of)
    events = _erase_consent(session, key, numbers, hash_of)
    session.execute(
        delete(DirectoryEntry).where(
            DirectoryEntry.kind == "contact",
            or_(DirectoryEntry.key == key, DirectoryEntry.number.in_(sorted(numbers) or [""])),
        )
    )
    session.execute(delete(Fold).where(Fold.key.like(f"%|{key}")))
    streams = [f"number:{n}" for n in numbers]
    session.execute(delete(HostEvent).where(HostEvent.stream.in_(streams or [""])))
    _erase_plans(session, key, numbers)
    session.add(
        ConsentEvent(
            at=utcnow(),
            action=ERASED,
            source=by,
            actor=by,
            number=hash_of(sorted(numbers)[0]) if numbers else None,
            detail="the contact's data was erased at their request",
        )
    )
    session.flush()
    return Erased(key, texts, replies, events, kept_count, len(canceled))


def _known(session: Session, key: str) -> tuple[set[str], set[str]]:
    """The numbers and names erp-sms holds for the contact ``key``."""
    numbers: set[str] = set()
    names: set[str] = set()
    for number, name in session.execute(
        select(Message.recipient, Message.contact_name).where(Message.contact_ref == key).distinct()
    ):
        if number:
            numbers.add(number)
        if name:
            names.add(name)
    for number, name in session.execute(
        select(ConsentEvent.number, ConsentEvent.contact_name).where(
            ConsentEvent.contact_ref == key
        )
    ):
        if number and not number.startswith(erased.PREFIX):
            numbers.add(number)
        if name:
            names.add(name)
    for table in (OptOut, ProgramOptOut):
        numbers.update(session.scalars(select(table.number).where(table.contact_ref == key)))
    return {n for n in numbers if not n.startswith(erased.PREFIX)}, names


def _hash_opt_outs(
    session: Session, key: str, numbers: set[str], hash_of: Callable[[str], str]
) -> int:
    """Each opt-out of ``numbers`` (of every program, or of one) moved to
    ``sms_opt_out_erased`` under the number's hash."""
    count = 0
    wanted = sorted(numbers) or [""]
    moved: list[tuple[str, str, dt.datetime, str]] = [
        (row.number, erased.EVERY, row.at, row.source)
        for row in session.scalars(select(OptOut).where(OptOut.number.in_(wanted)))
    ]
    moved += [
        (row.number, row.program, row.at, row.source)
        for row in session.scalars(select(ProgramOptOut).where(ProgramOptOut.number.in_(wanted)))
    ]
    session.execute(delete(OptOut).where(OptOut.number.in_(wanted)))
    session.execute(delete(ProgramOptOut).where(ProgramOptOut.number.in_(wanted)))
    for number, program, at, source in moved:
        digest = hash_of(number)
        if session.get(ErasedOptOut, (digest, program)) is None:
            session.add(ErasedOptOut(digest=digest, program=program, at=at, source=source))
        count += 1
    return count


def _erase_replies(session: Session, numbers: set[str], hash_of: Callable[[str], str]) -> int:
    rows = session.execute(
        select(InboundMessage.id, InboundMessage.from_number).where(
            InboundMessage.from_number.in_(sorted(numbers) or [""])
        )
    ).all()
    for rid, number in rows:
        session.execute(
            update(InboundMessage)
            .where(InboundMessage.id == rid)
            .values(
                body="", raw=None, from_number=hash_of(number), contact_refs=None, order_number=None
            )
        )
    return len(rows)


def _erase_consent(
    session: Session, key: str, numbers: set[str], hash_of: Callable[[str], str]
) -> int:
    rows = session.scalars(
        select(ConsentEvent).where(
            or_(
                ConsentEvent.contact_ref == key,
                ConsentEvent.number.in_(sorted(numbers) or [""]),
            )
        )
    ).all()
    for ev in rows:
        ev.number = hash_of(ev.number) if ev.number else None
        ev.contact_ref = None
        ev.contact_name = None
        ev.address = None
        ev.detail = None
    return len(rows)


def _erase_plans(session: Session, key: str, numbers: set[str]) -> None:
    """Reminder runs keep each contact's route to plan again: drop the erased one's."""
    candidates = session.scalars(
        select(SequenceRun).where(
            or_(*(SequenceRun.plan.contains(v) for v in [key, *sorted(numbers)]))
        )
    ).all()
    for run in candidates:
        plan = json.loads(run.plan)
        contacts = [
            c
            for c in plan.get("contacts", [])
            if c.get("contact_ref") != key and c.get("recipient") not in numbers
        ]
        if len(contacts) != len(plan.get("contacts", [])):
            plan["contacts"] = contacts
            run.plan = json.dumps(plan)
