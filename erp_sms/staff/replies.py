"""Customers' replies: the inbox, a conversation per number, staff's answers (planned
like any text, from the number the customer wrote to) and marking a reply done."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from .. import consent, rule_records
from .. import templates as tpl
from ..addresses import field_name
from ..conversations.keywords import NEEDS_A_PERSON
from ..db import utcnow
from ..errors import InputError, TemplateError
from ..events import ANSWER_EVENT
from ..models import InboundMessage, Message, Status
from ..notifier import text_contact as queue_one
from ..recipients import default_lookup
from .template_actions import SAMPLE_SENDER

# The inbox lists the newest this many (``--all``: done ones too).
INBOX_SIZE = 200


def _inbox(show_done: bool) -> Select[InboundMessage]:
    q = select(InboundMessage).where(InboundMessage.kind.in_(sorted(NEEDS_A_PERSON)))
    if not show_done:
        q = q.where(InboundMessage.done_at.is_(None))
    return q.order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc()).limit(INBOX_SIZE)


def replies(session: Session, *, show_done: bool = False) -> list[InboundMessage]:
    """Replies that need a person (free text, "paid", "wrong number"), newest first: the
    ones not done yet, or (``show_done``) all of them."""
    return list(session.scalars(_inbox(show_done)))


def contact_names(session: Session, rows: list[InboundMessage]) -> dict[int, str]:
    """The contact each reply came from, by the reply's id (the first of its contacts)."""
    lookup = default_lookup()
    out: dict[int, str] = {}
    for r in rows:
        refs = [x for x in (r.contact_refs or "").split(",") if x]
        view = lookup.contact(session, refs[0]) if refs else None
        if view is not None:
            out[r.id] = view.name
    return out


@dataclass(frozen=True)
class Turn:
    """One line of a conversation: a text we sent or a reply we got."""

    at: dt.datetime
    ours: bool
    text: str
    status: str  # a text's status; a reply's kind
    id: int  # the message's or the reply's id
    done: bool = True  # a reply: marked done (answered, or nothing to answer)


def conversation(session: Session, number: str, *, limit: int = 100) -> list[Turn]:
    """Texts to ``number`` and replies from it, interleaved, newest last."""
    try:
        e164 = consent.normalise_number(number)
    except InputError:
        raise InputError(f"{number!r} is not a phone number: give it as +13125550101") from None
    sent = session.scalars(
        select(Message)
        .where(Message.recipient == e164, Message.status.not_in([Status.SKIPPED, Status.MERGED]))
        .order_by(Message.id.desc())
        .limit(limit)
    )
    got = session.scalars(
        select(InboundMessage)
        .where(InboundMessage.from_number == e164)
        .order_by(InboundMessage.id.desc())
        .limit(limit)
    )
    turns = [Turn(m.created_at, True, m.body, m.status, m.id) for m in sent]
    turns += [Turn(r.received_at, False, r.body, r.kind, r.id, r.done_at is not None) for r in got]
    return sorted(turns, key=lambda t: (t.at, not t.ours))[-limit:]


def sender_for(session: Session, to_number: str | None) -> str | None:
    """The TWILIO record whose number the customer wrote to (None: the main one, or a
    number no record has)."""
    if not to_number:
        return None
    for name in rule_records.senders(session):
        rule = rule_records.twilio_rule(session, name)
        if rule is None or not rule.phone_number:
            continue
        try:
            if consent.normalise_number(rule.phone_number) == to_number:
                return name
        except InputError:
            continue
    return None


def answer_reply(session: Session, reply_id: int, text: str, *, by: str) -> str:
    """Answer reply ``reply_id`` with ``text``: planned like any text (the opt-out list,
    the length and wording rules), from the number the customer wrote to, logged as
    ``staff_reply`` written by ``by``; the reply is then done. ``InputError`` (nothing
    queued) for an unknown reply, a number no contact has, or a text that does not
    render."""
    reply = session.get(InboundMessage, reply_id)
    if reply is None:
        raise InputError(f"no reply #{reply_id}: `erp-sms replies list` shows them")
    refs = [x for x in (reply.contact_refs or "").split(",") if x]
    view = default_lookup().contact(session, refs[0]) if refs else None
    if view is None:
        raise InputError(
            f"reply #{reply_id} came from {reply.from_number}, which is no contact's number: "
            f"add it to the contact ({field_name()}) to answer by text, or call them"
        )
    text = text.strip()
    if not text:
        raise InputError("the answer is empty: write what to send")
    try:
        tpl.check(
            text, {"order": {}, "sender": SAMPLE_SENDER, "contact": view.context}, "the answer"
        )
    except TemplateError as exc:
        raise InputError(exc.message) from None
    org = sorted(view.organization_keys)[0] if view.organization_keys else ""
    msg = queue_one(
        session,
        view,
        org,
        text,
        by=by,
        event_name=ANSWER_EVENT,
        sender=sender_for(session, reply.to_number),
        sender_fixed=True,
        note=f"answer to reply #{reply_id}, written by {by}",
    )
    if msg.status != Status.QUEUED:
        return f"#{msg.id} {msg.status}: {msg.reason}"
    if reply.done_at is None:
        reply.done_at, reply.done_by = utcnow(), by
    session.flush()
    return (
        f"#{msg.id} queued for {view.name} ({msg.channel} {msg.address}), "
        f"{msg.segments} segment(s); reply #{reply_id} done"
    )
