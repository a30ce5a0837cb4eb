"""Timelines of an order or a contact: every message with its status history, replies
and consent changes, in time order."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from .addresses import classify
from .config import get_settings
from .errors import AddressError, InputError
from .models import (
    PLANNED,
    Click,
    ConsentEvent,
    HostEvent,
    InboundMessage,
    Message,
    SequenceRun,
    Status,
)
from .recipients import default_lookup


@dataclass(frozen=True)
class Entry:
    at: dt.datetime
    what: str  # message | status | callback | note | host | click | fetched | reply | consent
    text: str
    message_id: int | None = None

    def line(self) -> str:
        ref = f"#{self.message_id} " if self.message_id else ""
        return f"{self.at:%Y-%m-%d %H:%M:%S}  {self.what:<8} {ref}{self.text}"


def _message_entries(m: Message) -> list[Entry]:
    history = list(m.history)
    # How it was planned: a line of its own once staff planned it again (the retry
    # writes it first); otherwise "queued" when something happened since, or as it is.
    if history and history[0].source == PLANNED:
        first = history.pop(0)
        initial, why = first.status or m.status, first.detail
    elif history:
        initial, why = Status.QUEUED, None
    else:
        initial, why = m.status, m.reason
    gone = m.purged_at is not None  # its personal data removed (purge, an erasure)
    who = m.contact_name or ("(removed)" if gone else "(no contact)")
    if m.step is not None:  # a reminder sequence's step: say which
        who = f"{who} (step {m.step})"
    via = f" via {m.channel} {m.address or '(removed)'}" if m.channel else ""
    said = f"{initial}: {_unsaid(initial, why)}" if initial != Status.QUEUED and why else initial
    if why and why.startswith(f"{initial} "):  # "merged into message 41"
        said = why
    if initial == Status.MERGED and m.body:  # what it carries into the other text
        said = f"{said} (would have said: {m.body})"
    out = [Entry(m.created_at, "message", f"{m.event} → {who}{via} — {said}", m.id)]
    for h in history:
        if h.kind == "callback":
            out.append(Entry(h.at, "callback", h.detail or (h.status or ""), m.id))
        elif h.kind == "note":  # what was folded into it, who wrote a one-off text
            out.append(Entry(h.at, "note", h.detail or "", m.id))
        else:
            detail = f": {_unsaid(h.status, h.detail)}" if h.detail else ""
            out.append(Entry(h.at, "status", f"{h.status}{detail}", m.id))
    return out


def _clicks(session: Session, msgs: list[Message]) -> list[Entry]:
    """Each request for these texts' short links: a person's click, or a scanner's fetch."""
    ids = [m.id for m in msgs if m.link_code]
    if not ids:
        return []
    rows = session.scalars(select(Click).where(Click.message_id.in_(ids)).order_by(Click.id))
    return [
        Entry(
            c.at,
            "click" if c.counted else "fetched",
            f"{c.url}"
            + ("" if c.counted else f" by {c.user_agent or 'a link scanner'} (not counted)"),
            c.message_id,
        )
        for c in rows
    ]


def _told(session: Session, msgs: list[Message]) -> list[Entry]:
    """The deliveries of these texts' statuses to the host's webhook (when one is set)."""
    ids = [m.id for m in msgs]
    if not ids:
        return []
    rows = session.scalars(
        select(HostEvent).where(HostEvent.message_id.in_(ids)).order_by(HostEvent.id)
    )
    out = []
    for r in rows:
        status = json.loads(r.payload).get("status")
        if r.delivered_at is not None:
            said = f"the host's webhook got {status} (msg_{r.id}, try {r.attempts})"
            out.append(Entry(r.delivered_at, "host", said, r.message_id))
        elif r.attempts:
            said = f"the host's webhook has not taken {status} yet: {r.last_error} (msg_{r.id})"
            out.append(Entry(r.next_attempt_at or r.created_at, "host", said, r.message_id))
    return out


def _unsaid(status: str | None, text: str | None) -> str:
    """``text`` without a leading "canceled: " that repeats the status before it."""
    text = text or ""
    return text.removeprefix(f"{status}: ") if status else text


def for_order(session: Session, number: str) -> list[Entry]:
    msgs = list(
        session.scalars(
            select(Message)
            .where(Message.order_number == number)
            .options(selectinload(Message.history))
            .order_by(Message.id)
        )
    )
    replies = session.scalars(select(InboundMessage).where(InboundMessage.order_number == number))
    if not msgs:
        raise InputError(f"no texts for order {number!r} in the email log")
    entries = (
        [e for m in msgs for e in _message_entries(m)]
        + _told(session, msgs)
        + _clicks(session, msgs)
    )
    entries += [
        Entry(r.received_at, "reply", f"{r.kind}: {r.body!r} from {r.from_number}") for r in replies
    ]
    return sorted(entries, key=lambda e: (e.at, e.message_id or 0))


def for_subject(session: Session, kind: str, ref: str) -> list[Entry]:
    """The texts about one subject (an invoice, a work order…) across its events and
    reminder steps: what a host shows on its invoice page. ``kind`` is the events'
    subject keyword (``invoice``), ``ref`` its key (the id the host fires it with)."""
    from .events import all_events

    events = sorted(e.name for e in all_events() if e.subject == kind)
    if not events:
        kinds = sorted({e.subject for e in all_events() if e.subject})
        raise InputError(f"no event has a subject {kind!r}; subjects: {', '.join(kinds)}")
    msgs = list(
        session.scalars(
            select(Message)
            .where(Message.subject_ref == ref, Message.event.in_(events))
            .options(selectinload(Message.history))
            .order_by(Message.id)
        )
    )
    if not msgs:
        raise InputError(f"no texts for {kind} {ref!r} in the email log")
    entries = (
        [e for m in msgs for e in _message_entries(m)]
        + _told(session, msgs)
        + _clicks(session, msgs)
    )
    return sorted(entries, key=lambda e: (e.at, e.message_id or 0))


def subject_title(session: Session, kind: str, ref: str) -> str:
    """How staff know a subject: ``invoice INV-2291 (order SO-104233)``, from what its
    reminder run or its texts kept — not the key the host fires it with (a UUID)."""
    run = session.execute(
        select(SequenceRun.plan, SequenceRun.order_number)
        .where(SequenceRun.subject_ref == ref)
        .order_by(SequenceRun.id.desc())
        .limit(1)
    ).first()
    label, order = None, None
    if run is not None:
        order = run.order_number
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            said = json.loads(run.plan)["context"].get(kind) or {}
            label = said.get("number") or said.get("name")
    if order is None:
        order = session.scalar(
            select(Message.order_number).where(Message.subject_ref == ref).limit(1)
        )
    what = kind.replace("_", " ")
    name = f"{what} {label}" if label else f"{what} {ref}"
    return f"{name} (order {order})" if order else name


def for_contact(session: Session, contact_key: str) -> list[Entry]:
    contact = default_lookup().contact(session, contact_key)
    numbers: list[str] = []
    if contact is not None and contact.address:
        with contextlib.suppress(AddressError):
            numbers.append(classify(contact.address, get_settings().default_region).e164)
    msgs = list(
        session.scalars(
            select(Message)
            .where(Message.contact_ref == contact_key)
            .options(selectinload(Message.history))
            .order_by(Message.id)
        )
    )
    conds = [InboundMessage.contact_refs.contains(contact_key)]
    if numbers:
        conds.append(InboundMessage.from_number.in_(numbers))
    replies = [
        r
        for r in session.scalars(select(InboundMessage).where(or_(*conds)))
        if r.from_number in numbers or contact_key in (r.contact_refs or "").split(",")
    ]
    consents = session.scalars(select(ConsentEvent).where(ConsentEvent.contact_ref == contact_key))
    if contact is None and not msgs:
        raise InputError(f"no contact with id {contact_key!r}")
    entries = (
        [e for m in msgs for e in _message_entries(m)]
        + _told(session, msgs)
        + _clicks(session, msgs)
    )
    entries += [
        Entry(
            r.received_at,
            "reply",
            f"{r.kind}: {r.body!r}" + (f" (order {r.order_number})" if r.order_number else ""),
        )
        for r in replies
    ]
    entries += [
        Entry(c.at, "consent", f"{c.action} ({c.source})" + (f": {c.detail}" if c.detail else ""))
        for c in consents
    ]
    return sorted(entries, key=lambda e: (e.at, e.message_id or 0))
