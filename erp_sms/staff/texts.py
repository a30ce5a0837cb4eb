"""Texts and contacts: one-off texts, release, cancel and retry, consent, and the
contacts on sunsetting gateways."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from .. import consent, outbox, retention, rule_records
from .. import templates as tpl
from ..addresses import GATEWAY, classify, field_name
from ..catalog import Carrier
from ..config import get_settings
from ..db import utcnow
from ..errors import AddressError, InputError, TemplateError
from ..models import InboundMessage, Message, Status
from ..notifier import retry as plan_again
from ..notifier import text_contact as queue_one
from ..recipients import ListsGatewayContacts, default_lookup, optional
from ..sendwindow import now
from ..sequences import retry_step
from .template_actions import SAMPLE_SENDER


def text_contact(session: Session, contact: str, text: str, *, by: str) -> list[str]:
    """A one-off text to one contact, planned and logged like any other (SMSUPDATE, the
    opt-out list, the route, the template checks, the organization's number). Refused
    (``InputError``, nothing queued) when the text does not render or is too long;
    otherwise the lines say what became of it."""

    view = default_lookup().contact(session, contact)
    if view is None:
        raise InputError(f"no contact {contact!r}: give the contact's id (see `erp-sms report`)")
    if not view.organization_keys:
        raise InputError(
            f"{view.name} is linked to no organization: link them to one, so the text goes "
            "out from its number"
        )
    text = text.strip()
    if not text:
        raise InputError("the text is empty: write what to send")
    ctx = {"order": {}, "sender": SAMPLE_SENDER, "contact": view.context}
    try:
        tpl.check(text, ctx, "the text")
    except TemplateError as exc:
        raise InputError(exc.message) from None
    msg = queue_one(session, view, sorted(view.organization_keys)[0], text, by=by)
    if msg.status != Status.QUEUED:
        return [f"#{msg.id} {msg.status}: {msg.reason}"]
    line = f"#{msg.id} queued for {view.name} ({msg.channel} {msg.address}), "
    line += f"{msg.segments} segment(s)"
    return [line + (f"; {msg.reason}" if msg.reason else "")]


# -- texts ------------------------------------------------------------------------------------


def release(session: Session, ids: Sequence[int] | None, *, by: str) -> int:
    """Put held texts (``None``: all of them) back in the queue; how many."""
    return len(outbox.release(session, None if ids is None else list(ids), by=by))


def cancel(session: Session, ids: Sequence[int], *, by: str, reason: str | None = None) -> int:
    """Cancel queued or held texts; how many."""
    if not ids:
        raise InputError("name the texts to cancel")
    return len(outbox.cancel(session, list(ids), by=by, reason=reason))


def retry(session: Session, ids: Sequence[int], *, by: str) -> list[str]:
    """Plan skipped or failed texts again with today's data and rules; a line each."""

    if not ids:
        raise InputError("name the texts to retry")

    def step_again(s: Session, msg: Message, order: Any, kwargs: Mapping[str, Any]) -> str:
        return retry_step(s, msg, order, kwargs, by=by)

    return [line for _m, line in plan_again(session, list(ids), by=by, step_retry=step_again)]


# -- carrier gateways -------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayContact:
    """A contact whose text address is a carrier gateway with a sunset date, and what to do."""

    key: str
    name: str
    opted_in: bool
    gateway: str
    carrier: Carrier
    todo: str


def gateway_contacts(session: Session, today: dt.date | None = None) -> list[GatewayContact]:
    """Contacts on shut-down or sunsetting gateways (the lookup's ``gateway_contacts``;
    ``InputError`` naming that method when the host has none)."""

    today = today or now().date()
    region = get_settings().default_region
    active, _phone = rule_records.twilio_routing(session)
    lookup = default_lookup()
    out = []
    finder = optional(lookup, ListsGatewayContacts, "list contacts on gateways")
    for c in finder.gateway_contacts(session):
        try:
            addr = classify(c.address, region)
        except AddressError:
            continue
        carrier = addr.carrier
        if addr.kind != GATEWAY or carrier is None or carrier.sunset is None:
            continue
        if active:
            todo = (
                f"texts already go through Twilio to {addr.e164}; you may replace "
                f"{field_name()} with {addr.e164}"
            )
        elif carrier.is_shut_down(today):
            todo = f"not texted: activate the TWILIO rule, texts will go to {addr.e164}"
        else:
            left = carrier.days_left(today)
            soon = f" — {left} day(s) left, texts to it are flagged" if left is not None else ""
            todo = (
                f"still texted by email until then{soon}: activate TWILIO before {carrier.sunset}"
            )
        out.append(
            GatewayContact(c.key, c.name, c.has_smsupdate, addr.gateway or "", carrier, todo)
        )
    return out


# -- consent ----------------------------------------------------------------------------------


def change_consent(
    session: Session,
    contact: str,
    opted_in: bool,
    *,
    by: str,
    source: str,
    note: str | None,
    program: str | None = None,
) -> list[str]:
    """Opt a contact in or out (SMSUPDATE, the opt-out list, the consent trail), of every
    program or (``program``) of one; an opt-out cancels their texts not sent yet (of that
    program). Lines to show."""
    change = consent.opt_in if opted_in else consent.opt_out
    done = change(
        session, contact_key=contact, source=source, detail=note, actor=by, program=program
    )
    view = done.contacts[0]
    number = f" ({done.number})" if done.number else ""
    of = f" of {consent.PROGRAM_WORDS[program]}" if program and not opted_in else ""
    into = f" to {consent.PROGRAM_WORDS[program]}" if program and opted_in else ""
    if not done.changed:
        state = f"opted in{into}" if opted_in else f"opted out{of}"
        return [f"contact {view.key} {view.name}{number} was already {state}; nothing changed"]
    if program is not None:
        state = f"opted in{into}" if opted_in else f"opted out{of} (other texts still come)"
    else:
        state = "opted in (SMSUPDATE added)" if opted_in else "opted out (SMSUPDATE removed)"
    out = [f"contact {view.key} {view.name}{number}: {state}; consent recorded"]
    canceled = getattr(done, "canceled", ())
    if canceled:
        ids = ", ".join(f"#{i}" for i in canceled)
        out.append(f"{len(canceled)} queued or held text(s) canceled: {ids}")
    return out


def mark_reply_done(session: Session, reply_id: int, *, by: str) -> str:
    """Mark a customer's reply done (answered, or nothing to answer)."""
    row = session.get(InboundMessage, reply_id)
    if row is None:
        raise InputError(f"no reply #{reply_id}")
    if row.done_at is None:
        row.done_at, row.done_by = utcnow(), by
    return f"reply #{reply_id} from {row.from_number} marked done"


def erase_contact(session: Session, contact: str, *, by: str, confirmed: bool) -> str:
    """A person asked to be forgotten: their personal data removed from erp-sms's tables
    (``retention.erase_contact``), only when ``confirmed`` (it cannot be undone). The
    line to show."""
    if not confirmed:
        raise InputError(
            f"erasing contact {contact} cannot be undone: confirm it (tick the box, or "
            "`--yes` on the command line)"
        )
    return retention.erase_contact(session, contact, by=by).line()
