"""Staff's one-off texts and retries: planned by the same code as an event's texts."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import utcnow
from ..errors import InputError
from ..events import ANSWER_EVENT, ONE_OFF_EVENT, get_event
from ..models import Message, Status
from ..outbox import (
    add_event,
    add_planned,
    replace_plan,
    require,
    set_status,
)
from ..recipients import (
    ContactView,
    FindsOrders,
    ListsSubjects,
    OrderView,
    default_lookup,
    optional,
)
from .plan import Draft, _plan
from .receiver import _notify

log = logging.getLogger(__name__)


# -- one-off texts from staff -----------------------------------------------------------------


@dataclass(frozen=True)
class OneOff:
    """The "order" of a one-off text: the contact it is for, in the organization it is
    sent for (whose site number it goes out from)."""

    contact: ContactView
    organization_key: str
    sender: str | None = None  # the TWILIO record it goes out from (an answer's)
    sender_fixed: bool = False  # ``sender`` (None: TWILIO) whatever the mapping says


class _OneContact:
    """The recipient lookup of a one-off text: the one contact, as the listed contact of
    an order of its organization — so every rule of "Who gets a text" applies to it."""

    def order(self, session: Session, order: OneOff) -> OrderView:
        c = order.contact
        return OrderView(
            key=f"contact:{c.key}",
            number="",
            organization_key=order.organization_key,
            organization_name=None,
            sms_update=True,
            listed_contact_key=c.key,
            sender=order.sender,
            sender_fixed=order.sender_fixed,
        )

    def contacts(self, session: Session, order: OneOff, *, listed_only: bool) -> list[ContactView]:
        return [order.contact]


def text_contact(
    session: Session,
    contact: ContactView,
    organization_key: str,
    source: str,
    *,
    by: str,
    event_name: str = ONE_OFF_EVENT,
    sender: str | None = None,
    sender_fixed: bool = False,
    note: str | None = None,
) -> Message:
    """Queue a one-off text from staff to ``contact`` (``source``: a template, rendered
    with the contact and sender), planned and logged like any event's text: SMSUPDATE,
    the opt-out list, the address and route, the send window when SMSWINDOWEVENTS names
    ``staff_text``, the organization's sender (with ``sender_fixed``: ``sender``, None
    for TWILIO, instead — an answer goes from the number the customer wrote to).
    Returns the row (queued, or skipped or failed with the reason); its history names
    ``by`` (``note``: what to say instead)."""
    from dataclasses import replace

    event = replace(get_event(event_name), lookup=_OneContact())  # type: ignore[arg-type]
    ref = f"{event_name}:{utcnow():%Y%m%d%H%M%S}:{secrets.token_hex(6)}"
    draft = Draft(source=source, subject=(ref, {}))
    order = OneOff(contact, organization_key, sender, sender_fixed)
    planned = _notify(event, order, session, {}, draft=draft)
    msg = session.scalars(
        select(Message).where(Message.idempotency_key == planned[0].idempotency_key)
    ).one()
    said = note or f"one-off text written by {by}"
    add_event(session, msg, kind="note", source="staff", detail=said)
    session.flush()
    return msg


RETRYABLE = (Status.SKIPPED, Status.FAILED, Status.UNDELIVERED)


def retried(msg: Message, carrier: Message) -> str:
    """What became of a retried text, in a sentence: ``carrier`` is the text that now
    carries it (``msg`` itself, or a new one when the provider had taken ``msg``)."""
    now = f"#{msg.id}" if carrier is msg else f"#{msg.id} sent again as #{carrier.id}:"
    if carrier.status == Status.QUEUED:
        return f"{now} queued ({carrier.channel} {carrier.address})"
    return f"{now} {'still ' if carrier is msg else ''}{carrier.status}: {carrier.reason}"


#: Plans a reminder step again (``sequences.retry_step``, handed in by the staff
#: actions: sequences build on this module, not the other way round).
StepRetry = Callable[[Session, Message, Any, Mapping[str, Any]], str]


def retry(
    session: Session, ids: list[int], *, by: str, step_retry: StepRetry | None = None
) -> list[tuple[Message, str]]:
    """``erp-sms messages retry``: plan skipped or failed texts again with today's data
    and rules (the same planning as the host path) — the contact, its address and
    consent, the routing, the template; a reminder step through ``step_retry``. Returns
    each message with a sentence on what became of it. ``InputError`` (nothing changed)
    for unknown ids or other statuses."""

    rows = require(session, ids, RETRYABLE, "retry")
    out = []
    for msg in rows:
        event = get_event(msg.event)
        if event.name in (ONE_OFF_EVENT, ANSWER_EVENT):
            raise InputError(
                f"cannot retry #{msg.id}: it is a one-off text; write it again on the "
                "contact's page or with `erp-sms contacts text`; nothing was changed"
            )
        lookup = event.lookup or default_lookup()
        purpose = "retry texts"
        order = optional(lookup, FindsOrders, purpose).find_order(session, msg.order_number)
        if order is None:
            raise InputError(
                f"cannot retry #{msg.id}: order {msg.order_number} no longer exists; nothing "
                "was changed"
            )
        if msg.step is not None and step_retry is not None:
            # A reminder step: its subject (the invoice) is the run's, as it was started.
            out.append((msg, step_retry(session, msg, order, {})))
            continue
        kwargs: dict[str, Any] = {}
        if event.subject and msg.subject_ref is not None:
            subjects = optional(lookup, ListsSubjects, purpose).subjects(
                session, order, event.subject
            )
            match = [o for o in subjects if lookup.subject(event.subject, o)[0] == msg.subject_ref]
            if not match:
                what = event.subject.replace("_", " ")
                raise InputError(
                    f"cannot retry #{msg.id}: the {what} {msg.subject_ref} of order "
                    f"{msg.order_number} no longer exists; nothing was changed"
                )
            kwargs[event.subject] = match[-1]
        planned = {m.idempotency_key: m for m in _plan(event, order, session, kwargs)}
        again = planned.pop(msg.idempotency_key, None)
        if msg.contact_ref is None:
            # An order-level entry (nobody could be texted): the texts planned now replace it.
            new = add_planned(session, [m for m in planned.values() if m.contact_ref])
            if again is not None or not new:
                replace_plan(session, msg, again or msg, by=by)
                out.append((msg, f"#{msg.id} still {msg.status}: {msg.reason}"))
                continue
            ids_text = ", ".join(f"#{m.id} {m.status}" for m in new)
            reason = f"retried by {by}: replaced by {ids_text}"
            set_status(session, msg, Status.CANCELED, source=by, reason=reason)
            out.append((msg, f"#{msg.id} replaced by {ids_text}"))
            continue
        if again is None:
            gone = (
                f"on retry by {by}: {msg.contact_name} is no longer among the order's recipients "
                "(opted out, unlinked or not listed)"
            )
            replace_plan(session, msg, msg, by=by, reason=gone)
            out.append((msg, f"#{msg.id} still {msg.status}: {msg.reason}"))
            continue
        out.append((msg, retried(msg, replace_plan(session, msg, again, by=by))))
    session.flush()
    return out
