"""A customer's reply, as Twilio posts it: kept (never lost), and acted on — an opt-out
(STOP in any of our users' customers' languages, a "wrong number"), an opt-in, HELP and
STATUS answered, "already paid" pausing the invoice's reminders until staff resume them;
anything else waits in staff's inbox."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import consent, feedback, options, outbox
from ..addresses import mask
from ..db import utcnow
from ..errors import InputError
from ..models import InboundMessage, Message, Status
from ..recipients import ContactView, ListsOpenOrders, default_lookup
from ..signals import ORDER_EVENTS
from .keywords import HELP, PAID, START, STATUS, STOP, WRONG_NUMBER, classify_reply

log = logging.getLogger(__name__)

# STATUS answers per number and hour: a customer asks now and then; a loop of
# auto-replies between two machines must not become a storm of texts.
STATUS_PER_HOUR = 3
# An order's stage, as its latest text told it.
_STAGES = {
    "sent_to_production": "in production",
    "work_order_completed": "in production, work orders complete",
    "shipment_shipped": "shipped",
    "shipment_delivered": "delivered",
}


def handle_inbound(session: Session, form: dict[str, str]) -> str | None:
    """Store the reply, act on what it asks, and return the text to answer with (HELP,
    STATUS) — in the webhook's one transaction."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    sender = form.get("From", "")
    body = form.get("Body", "")
    kind = classify_reply(body)
    number = _number(sender)
    if sid and session.scalar(select(InboundMessage.id).where(InboundMessage.provider_id == sid)):
        # Twilio retried: answer the same, change nothing
        return options.get(session, "SMSHELPTEXT") if kind == HELP else None
    contacts = list(default_lookup().contacts_with_number(session, number)) if number else []
    refs = [c.key for c in contacts]
    order_number = _latest_order(session, refs)
    reply = InboundMessage(
        provider_id=sid,
        from_number=(number or sender)[:32],
        to_number=(form.get("To") or "")[:32] or None,
        body=body,
        kind=kind,
        contact_refs=",".join(refs) or None,
        order_number=order_number,
        raw=json.dumps(form, sort_keys=True),
        received_at=utcnow(),
    )
    session.add(reply)
    session.flush()
    feedback.note(
        session,
        feedback.reply_received(
            reply_id=reply.id,
            from_number=reply.from_number,
            contact_keys=refs,
            order_number=order_number,
            kind=kind,
            body=body,
            at=reply.received_at,
        ),
    )
    answer: str | None = None
    if kind in (STOP, START, WRONG_NUMBER) and number:
        change = consent.opt_in if kind == START else consent.opt_out
        source = "wrong_number" if kind == WRONG_NUMBER else "sms_reply"
        done = change(session, number=number, source=source, detail=f"reply {body.strip()[:60]!r}")
        log.info(
            "inbound %s from %s: %d contact(s), %d text(s) canceled",
            kind,
            mask(sender),
            len(done.contacts),
            len(done.canceled),
        )
    elif kind == PAID and number:
        held = pause_reminders(session, number, reply)
        log.info("inbound 'paid' from %s: %d reminder step(s) paused", mask(sender), held)
    elif kind == STATUS and number:
        answer = status_answer(session, number, contacts, reply)
    if kind == HELP:
        answer = options.get(session, "SMSHELPTEXT")
    session.flush()
    return answer


def _number(sender: str) -> str | None:
    """The sender in E.164 (Twilio sends E.164; anything else is read in the default
    region), or None for a short code or an unreadable sender."""
    try:
        return consent.normalise_number(sender) if sender else None
    except InputError:
        return None


def _latest_order(session: Session, refs: Sequence[str]) -> str | None:
    """The order of the latest text to these contacts: what a reply is most likely about."""
    if not refs:
        return None
    return session.scalar(
        select(Message.order_number)
        .where(Message.contact_ref.in_(refs), Message.order_number != "")
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )


def pause_reminders(session: Session, number: str, reply: InboundMessage) -> int:
    """Hold the steps still to come of the invoice the latest reminder to ``number`` was
    about, each keeping its day, with the reason; staff resume them (``messages
    release``). The number of steps held."""
    latest = session.execute(
        select(Message.event, Message.order_ref, Message.subject_ref)
        .where(Message.recipient == number, Message.step.is_not(None))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    ).first()
    if latest is None:
        return 0
    reason = (
        f"the customer replied {reply.body.strip()[:60]!r} (reply #{reply.id}); "
        "release to resume the reminders"
    )
    held = outbox.pause(
        session, latest.event, latest.order_ref, latest.subject_ref, reason=reason, by="sms_reply"
    )
    return len(held)


def status_answer(
    session: Session, number: str, contacts: Sequence[ContactView], reply: InboundMessage
) -> str | None:
    """The stage of each of the contacts' orders not delivered yet, as their texts told
    it — or None past ``STATUS_PER_HOUR`` answers to this number in the last hour."""
    since = utcnow() - dt.timedelta(hours=1)
    asked = session.scalar(
        select(func.count()).where(
            InboundMessage.from_number == number,
            InboundMessage.kind == STATUS,
            InboundMessage.received_at >= since,
            InboundMessage.id != reply.id,
        )
    )
    if (asked or 0) >= STATUS_PER_HOUR:
        log.info("STATUS from %s: not answered (%d in the last hour)", mask(number), asked)
        return None
    company = options.get(session, "SMSCOMPANYNAME")
    who = f"{company}: " if company else ""
    refs = [c.key for c in contacts]
    if not refs:
        return f"{who}we do not know this number; call us for the status of your orders."
    lookup = default_lookup()
    if isinstance(lookup, ListsOpenOrders):  # the host knows its orders' stages
        seen: dict[str, str] = {}
        for c in contacts:
            seen.update(dict(lookup.open_orders(session, c)))
        return _said(who, list(seen.items()))
    return _said(who, _from_the_log(session, refs))


def _said(who: str, open_orders: list[tuple[str, str]]) -> str:
    if not open_orders:
        return f"{who}you have no open orders with us."
    said = "; ".join(f"order {n}: {stage}" for n, stage in open_orders[:5])
    more = f" and {len(open_orders) - 5} more" if len(open_orders) > 5 else ""
    return f"{who}{said}{more}."


def _from_the_log(session: Session, refs: Sequence[str]) -> list[tuple[str, str]]:
    """Open orders as the order texts told them: each order's latest, not delivered."""
    latest = (
        select(Message.order_number, func.max(Message.id).label("last"))
        .where(
            Message.contact_ref.in_(refs),
            Message.event.in_(sorted(ORDER_EVENTS)),
            Message.status.not_in([Status.SKIPPED, Status.FAILED, Status.CANCELED]),
        )
        .group_by(Message.order_number)
        .subquery()
    )
    rows = session.execute(
        select(Message.order_number, Message.event)
        .join(latest, Message.id == latest.c.last)
        .order_by(Message.order_number)
    ).all()
    return [(n, _STAGES[e]) for n, e in rows if e != "shipment_delivered"]
