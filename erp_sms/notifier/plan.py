"""The planner: for an event and an order, who gets a text, over which route, with which
words — or why not (skipped, failed, held) — as message rows not yet written."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import inspect
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class

from .. import consent, links, options, templates, wording
from ..addresses import Address, route
from ..catalog import tracking_url
from ..config import get_settings
from ..db import utcnow
from ..errors import TemplateError
from ..events import EventType
from ..models import Message, Status, message_table
from ..recipients import (
    ContactView,
    OrderView,
    default_lookup,
    select_recipients,
)
from ..sendwindow import Policy
from ..sendwindow import now as clock
from .fold import lists_for
from .reads import CONTACT_FIELDS, PlanInfo, _classify_all, _last_read, _settings_and_opt_outs

log = logging.getLogger(__name__)


_COLUMNS = [c.key for c in message_table.columns if c.key != "id"]


def idempotency_key(event: str, order: str, subject: str | None, contact: str | None) -> str:
    key = f"{event}|{order}|{subject or '-'}|{contact or '-'}"
    if len(key) > 255:
        key = f"{event}|sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def _row(msg: Message) -> dict[str, Any]:
    values = msg.__dict__  # the instance's own values (no attribute descriptor per column)
    return {k: values.get(k) for k in _COLUMNS}


_new_instance = manager_of_class(Message).new_instance
_MAPPER = inspect(Message)


def _new_message(base: Mapping[str, Any], key: str, status: str, reason: str | None) -> Message:
    """A planned row as an unattached ``Message``. Built the way the ORM builds an object
    it loads (values straight into the instance's dict): the declarative constructor's
    event per attribute cost ~35 µs a row, a tenth of an event with five contacts. The
    object behaves as any transient one (attributes set later are tracked as usual)."""
    if not _MAPPER.configured:  # the constructor would configure; this way does not
        configure_mappers()
    now = utcnow()
    msg = _new_instance()
    msg.__dict__.update(
        base,
        idempotency_key=key,
        status=status,
        reason=reason,
        created_at=now,
        updated_at=now,
        attempts=0,
        maybe_sent=False,
        send_window=False,
        body="",
        # No history row at creation: the message row itself is the first entry of its
        # timeline (created_at, initial status, reason); history holds the changes.
        next_attempt_at=now if status == Status.QUEUED else None,
    )
    return msg


def _sender_context(phone: str | None) -> dict[str, str]:
    if not phone:
        return {"phone_number": ""}
    try:
        num = phonenumbers.parse(phone, "US")
        fmt = phonenumbers.PhoneNumberFormat.NATIONAL
        return {"phone_number": phonenumbers.format_number(num, fmt), "e164": phone}
    except phonenumbers.NumberParseException:
        return {"phone_number": phone}


@dataclass(frozen=True)
class Draft:
    """What staff give the planner instead of what an event has: a template's text not
    saved yet (a preview) or typed for one contact (a one-off text), and the subject to
    use when the order has none of its own (sample data, a one-off's own key)."""

    source: str | None = None
    subject: tuple[str, Mapping[str, Any]] | None = None


def _plan(
    event: EventType,
    order: Any,
    session: Session,
    kwargs: Mapping[str, Any],
    info: PlanInfo | None = None,
    *,
    draft: Draft | None = None,
) -> list[Message]:
    """The rows of one event: a text per contact to text, and an entry with the reason
    for every contact (or order) that cannot be texted. ``draft``: staff's unsaved text
    or subject (previews and one-off texts plan with this same code)."""
    info = info if info is not None else PlanInfo()
    draft = draft or Draft()
    lookup = event.lookup or default_lookup()
    view: OrderView = lookup.order(session, order)
    base: dict[str, Any] = {
        "event": event.name,
        "template": event.template,
        "order_ref": view.key,
        "order_number": view.number,
        "organization_name": view.organization_name,
        "program": event.program,
    }
    subject_ref: str | None = None
    subject_ctx: Mapping[str, Any] = {}
    if draft.subject is not None:
        subject_ref, subject_ctx = draft.subject
    elif event.subject:
        obj = kwargs.get(event.subject)
        if obj is None:
            key = idempotency_key(event.name, view.key, None, None)
            what = event.subject.replace("_", " ")
            reason = (
                f"{event.name} was fired without {event.subject}=: pass the {what} to "
                f"signal.send() so the text can name it"
            )
            return [_new_message(base, key, Status.FAILED, reason)]
        subject_ref, subject_ctx = lookup.subject(event.subject, obj)
        subject_ctx = _with_tracking(event.subject, subject_ctx)
    base["subject_ref"] = subject_ref
    info.view, info.subject_ref = view, subject_ref

    # SMSONLYONE decides which contacts the lookup returns, so it is known before the
    # settings are read: this process's last reading of it. The settings (SMSONLYONE, the
    # TWILIO routing, the template's override) then come in one statement with the
    # opt-outs of the contacts' numbers — always current; when SMSONLYONE has changed
    # since, the contacts are asked again (once, right after staff flip it).
    only_one = _last_read.only_one
    decisions = select_recipients(
        view, lookup.contacts(session, order, listed_only=only_one), only_listed=only_one
    )
    region = get_settings().default_region
    addresses = _classify_all(decisions, region)
    numbers = [a.e164 for a in addresses.values() if isinstance(a, Address)]
    stored_only_one, active, sender_phone, override, blocked = _settings_and_opt_outs(
        session, event.template, numbers, info, event.program
    )
    if (options.value_from("SMSONLYONE", stored_only_one) == "on") != only_one:
        only_one = not only_one
        _last_read.only_one = only_one
        decisions = select_recipients(
            view, lookup.contacts(session, order, listed_only=only_one), only_listed=only_one
        )
        addresses = _classify_all(decisions, region)
        numbers = [a.e164 for a in addresses.values() if isinstance(a, Address)]
        blocked = consent.opted_out(session, numbers, event.program)
    twilio_active = bool(active)
    source: str | None = None
    template_error: str | None = None
    try:
        source = draft.source or templates.source_from(event.template, override).source
    except TemplateError as exc:
        template_error = exc.message
    sender_ctx = {**_sender_context(sender_phone), "name": info.company}
    context: dict[str, Any] = {"order": view.context, "sender": sender_ctx}
    if event.subject:
        context[event.subject] = subject_ctx
    context.update(lists_for(event.name, subject_ctx))  # an order's text may carry several
    info.context, info.source = context, source
    keep = wording.keep_from(context)  # what shortening a too-long text must not cut
    # A template that names no ``contact`` reads the same for every contact: rendered
    # and finished once per channel (the packaged templates are all like that).
    same_for_all = source is not None and not templates.refers_to(source, "contact")
    finished: dict[str | None, wording.Finished] = {}
    done_urls: dict[str | None, list[str]] = {}  # the short links' URLs, per channel
    settings = get_settings()

    out = []
    for i, d in enumerate(decisions):
        contact: ContactView | None = d.contact
        key = idempotency_key(event.name, view.key, subject_ref, contact.key if contact else None)
        if contact is None:
            out.append(_skip(info, base, key, Status.SKIPPED, d.skip_reason))
            continue
        who = {
            "contact_ref": contact.key,
            "contact_name": contact.name,
            "raw_address": contact.address,
        }
        if d.skip_reason:
            out.append(_skip(info, {**base, **who}, key, Status.SKIPPED, d.skip_reason))
            continue
        address = addresses[i]
        if not isinstance(address, Address):
            out.append(_skip(info, {**base, **who}, key, Status.SKIPPED, address))
            continue
        r = route(address, twilio_active)
        who |= {"channel": r.channel, "address": r.address, "recipient": address.e164}
        who["sender"] = info.sender
        if r.channel is None:
            out.append(_skip(info, {**base, **who}, key, Status.SKIPPED, r.reason))
            continue
        if address.e164 in blocked:
            # Numbers on the opt-out list get nothing.
            reason = consent.describe(blocked[address.e164])
            out.append(_skip(info, {**base, **who}, key, Status.SKIPPED, reason))
            continue
        if info.collect:
            info.contacts.append({**who, "status": Status.QUEUED, "context": dict(contact.context)})
        if template_error or source is None:
            out.append(_new_message({**base, **who}, key, Status.FAILED, template_error))
            continue
        try:
            done = finished.get(r.channel) if same_for_all else None
            if done is None:
                rendered = templates.render(
                    source, {**context, "contact": contact.context}, event.template
                )
                # Links as short links with the text's code (segments counted with them).
                body, urls = links.shorten(settings, rendered.body)
                done = wording.finish(body, r.channel, info.rules, keep)
                done_urls[r.channel] = urls
                if same_for_all:
                    finished[r.channel] = done
        except TemplateError as exc:
            out.append(_new_message({**base, **who}, key, Status.FAILED, exc.message))
            continue
        except wording.NotSendable as exc:
            out.append(_new_message({**base, **who}, key, exc.status, exc.reason))
            continue
        msg = _new_message({**base, **who}, key, Status.QUEUED, None)
        msg.body, msg.encoding, msg.segments = done.body, done.encoding, done.segments
        if info.rules.opt_out_link:  # the recipient's own link, in the slot (same length)
            msg.body, msg.link_token = links.fill(settings, done.body, address.e164)
        if done_urls.get(r.channel):
            msg.body, msg.link_code = links.fill_code(settings, msg.body, key)
            msg.link_urls = json.dumps(done_urls[r.channel])
        info.contact_contexts[key] = contact.context
        out.append(msg)
    return out


def _with_tracking(subject: str, ctx: Mapping[str, Any]) -> Mapping[str, Any]:
    """A shipping event's context with ``tracking_url``: the host's own, else the
    carrier's page for the tracking number (``rules/tracking.toml``), else empty."""
    if subject != "shipping_event" or ctx.get("tracking_url"):
        return ctx
    url = tracking_url(ctx.get("carrier"), ctx.get("tracking_number"))
    return {**ctx, "tracking_url": url or ""}


def _skip(
    info: PlanInfo, fields: Mapping[str, Any], key: str, status: str, reason: str | None
) -> Message:
    """A row that says why this contact (or the order) gets no text; noted in ``info``."""
    if info.collect:
        who = {k: fields.get(k) for k in CONTACT_FIELDS}
        info.contacts.append({**who, "status": status, "reason": reason})
    return _new_message(fields, key, status, reason)


# What a message row records of its contact and route (a sequence's run keeps it too).
def _apply_window(event: EventType, new: Sequence[Message], info: PlanInfo) -> None:
    """When ``event`` keeps to the send window, its queued texts wait for the window's
    next opening in the recipient's local time (the reason says until when); the worker
    checks again when it claims them."""
    if not info.windowed(event):
        return

    now = clock()
    policy = Policy.from_options(info.window, info.zone)
    for m in new:
        if m.status != Status.QUEUED:
            continue
        m.send_window = True
        deferred = policy.deferral(m.recipient, max(m.next_attempt_at or now, now))
        if deferred is not None:
            m.next_attempt_at, m.reason = deferred


def _order_identity(event: EventType, order: Any, session: Session) -> tuple[str, str]:
    """(key, number) of the order an event was fired for, however the lookup fails."""
    try:
        view = (event.lookup or default_lookup()).order(session, order)
        return view.key, view.number
    except Exception:
        log.debug("erp-sms: the lookup cannot describe %r either", order, exc_info=True)
    for attr in ("id", "pk", "key", "number"):
        value = order.get(attr) if isinstance(order, Mapping) else getattr(order, attr, None)
        if value is not None:
            return str(value)[:64], str(getattr(order, "number", value))[:64]
    text = repr(order)
    return f"repr:{hashlib.sha256(text.encode()).hexdigest()[:32]}", text[:64]


def preview(
    event: EventType,
    order: Any,
    session: Session,
    kwargs: Mapping[str, Any],
    draft: Draft,
) -> list[Message]:
    """What the event would queue for ``order`` now — the host path's own planning (who,
    which route, the opt-out list, the send window, the sender) with ``draft``'s text —
    written nowhere."""
    info = PlanInfo()
    planned = _plan(event, order, session, kwargs, info, draft=draft)
    _apply_window(event, planned, info)
    return planned
