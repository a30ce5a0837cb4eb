"""Staff actions: what the CLI (``erp_sms.cli``) and the web pages (``erp_sms.web``) both
do, so neither re-implements a rule. Each action takes the staff member's session and
name and returns what to tell them; bad input raises ``InputError`` with one sentence.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import consent, outbox, rule_records, wording
from . import options as options_mod
from . import templates as tpl
from .addresses import GATEWAY, classify
from .catalog import Carrier
from .config import get_settings
from .errors import AddressError, InputError, StaleEdit, TemplateError
from .events import EventType, event_for_template
from .models import Channel, Message, Option, RuleAudit, Status, TemplateOverride
from .recipients import ErpLookup, default_lookup, lookup_method
from .segments import UCS2, analyse

SAMPLE_SENDER = {"phone_number": "(312) 555-0100", "e164": "+13125550100", "name": "Your Company"}


# -- versions: a form carries the version it was read at; a stale save is refused --------


def _digest(text: str | None) -> str:
    return "default" if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def _when(at: dt.datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC" if at else "just now"


def rule_version(session: Session, full: str) -> str:
    """The version of a rule record's values: its last change in the audit."""
    last = session.scalar(
        select(func.max(RuleAudit.id)).where(
            RuleAudit.rule_type == full, RuleAudit.action.in_(("set", "cleared"))
        )
    )
    return str(last or 0)


def _check_rule_version(session: Session, full: str, version: str | None) -> None:
    if version is None or version == rule_version(session, full):
        return
    since = int(version) if version.isdigit() else 0
    changes = session.scalars(
        select(RuleAudit)
        .where(
            RuleAudit.rule_type == full,
            RuleAudit.action.in_(("set", "cleared")),
            RuleAudit.id > since,
        )
        .order_by(RuleAudit.id)
    )
    said = "; ".join(
        f"{a.field} {a.action} by {a.changed_by} at {_when(a.changed_at)}" for a in changes
    )
    raise StaleEdit(
        f"{full} was changed since you opened it ({said}): nothing was saved. "
        "Look at the record again, then make your change."
    )


def template_version(session: Session, name: str) -> str:
    """The version of a template: its saved text (``default`` while it has none)."""
    row = session.get(TemplateOverride, tpl.canonical_name(session, name))
    return _digest(row.body if row else None)


def _check_template_version(session: Session, name: str, version: str | None) -> None:
    # Locked until the commit: two saves from one version cannot both pass.
    row = session.get(TemplateOverride, name, with_for_update=True)
    if version is None or version == _digest(row.body if row else None):
        return
    now = (
        f"saved by {row.updated_by or 'someone'} at {_when(row.updated_at)} as: {row.body}"
        if row
        else "reset to the default"
    )
    raise StaleEdit(
        f"{name} was changed since you opened it (it was {now}): nothing was saved. "
        "Your text is kept in the editor: save again to put it in place of theirs."
    )


def option_version(session: Session, name: str) -> str:
    """The version of an option: its stored value (``default`` while it has none)."""
    row = session.get(Option, options_mod.definition(name).name)
    return _digest(row.value if row else None)


# -- the TWILIO rule records ----------------------------------------------------------------


@dataclass(frozen=True)
class RuleSaved:
    """What ``set_rule`` changed."""

    name: str
    changed: tuple[str, ...]
    active: bool
    released: int
    stored_unencrypted: bool

    def lines(self) -> list[str]:
        """The outcome in words (the last ones are warnings)."""
        state = "active" if self.active else "inactive"
        what = ", ".join(self.changed) or "nothing changed"
        out = [f"{self.name} saved ({what}); the record is {state}"]
        if self.released:
            out.append(f"{self.released} held text(s) released to the queue")
        return out


def set_rule(
    session: Session,
    name: str,
    values: Mapping[str, str],
    active: bool | None,
    *,
    by: str,
    version: str | None = None,
) -> RuleSaved:
    """Set fields of a rule record (each validated before anything is written); held
    texts the change makes sendable go back to the queue. Given the ``version`` the
    form was read at (``rule_version``), a record changed since is refused."""
    if not values and active is None:
        raise InputError(
            "nothing to set: give --sid, --auth-code, --phone-number, --use-code or "
            "--active/--inactive"
        )
    rtype, full = rule_records.record(name)
    for field_name, value in values.items():
        rule_records.validate_field(rtype, field_name, value)
    _check_rule_version(session, full, version)
    before = rule_records.get_rule(session, full)
    old = {k: before.get(k) for k in values} if before else {}
    was_active = before.active if before else None
    held_before = {m.id for m in outbox.find(session, "held")}
    rule = rule_records.set_fields(session, full, dict(values), active=active, by=by)
    released = held_before - {m.id for m in outbox.find(session, "held")}
    # What set_fields really changed (it skips a value equal to the stored one, after
    # normalising it); a secret is always written anew.
    changed = sorted(
        k for k in values if rtype.field(k).secret or before is None or rule.get(k) != old[k]
    )
    if active is not None and active != was_active:
        changed.append("Active")
    unencrypted = "AuthCode" in values and not get_settings().secret_key
    return RuleSaved(full, tuple(changed), rule.active, len(released), unencrypted)


UNENCRYPTED = (
    "ERP_SMS_SECRET_KEY is not set, so the AuthCode is stored unencrypted; set it and save "
    "the AuthCode again to encrypt it"
)


def test_credentials(session: Session, name: str, *, by: str) -> tuple[bool, str]:
    """Ask Twilio whether the stored credentials work; a rejection flags the record
    (its texts are held), a success clears the flag. Returns (ok, a sentence)."""
    from .twilio_check import OK, REJECTED, check_credentials

    _rtype, full = rule_records.record(name)
    rule = rule_records.twilio_rule(session, full)
    if rule is None or not rule.sid or not rule.auth_code:
        raise InputError(
            f"{full} is not set up: use `erp-sms rules set {full} --sid … --auth-code …`"
        )
    verdict, sentence = check_credentials(rule, get_settings())
    if verdict == OK:
        rule_records.clear_rejected(session, full, by=by)
    elif verdict == REJECTED:
        rule_records.flag_rejected(session, full, sentence, by=by)
    return verdict == OK, sentence


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionRow:
    """An option as the pages list it, with the version its form carries."""

    name: str
    value: str
    is_default: bool
    help: str
    kind: str
    version: str


def option_rows(session: Session) -> list[OptionRow]:
    """Every option with its value and what it does."""
    from .catalog import option_defs

    defs = option_defs()
    return [
        OptionRow(
            name,
            value,
            is_default,
            defs[name].help,
            defs[name].kind,
            _digest(None if is_default else value),
        )
        for name, (value, is_default) in options_mod.all_values(session).items()
    ]


def set_option(
    session: Session, name: str, value: str, *, by: str, version: str | None = None
) -> str:
    """Set an option; returns the value as stored. Given the ``version`` the form was
    read at (``option_version``), an option changed since is refused."""
    opt = options_mod.definition(name)
    if version is not None:
        row = session.get(Option, opt.name, with_for_update=True)
        if version != _digest(row.value if row else None):
            now = (
                f"set to {row.value} by {row.updated_by or 'someone'} at {_when(row.updated_at)}"
                if row
                else "back to its default"
            )
            raise StaleEdit(
                f"{opt.name} was changed since you opened the page ({now}): nothing was "
                "saved. Set it again if you still want your value."
            )
    return options_mod.set_value(session, name, value, by=by)


# -- templates ------------------------------------------------------------------------------


def sample_context(event: EventType | None) -> dict[str, Any]:
    """Sample data for template checks: the variables the event's lookup provides (its
    ``samples()``; the reference schema's otherwise), the sender, and the subject."""
    lookup = (event.lookup if event else None) or default_lookup()
    samples = getattr(lookup, "samples", None)
    given = dict(samples() if callable(samples) else ErpLookup().samples())
    ctx: dict[str, Any] = {"sender": SAMPLE_SENDER, **given}
    ctx.setdefault("order", ErpLookup().samples()["order"])
    ctx.setdefault("contact", ErpLookup().samples()["contact"])
    if event is not None and event.subject and event.subject not in ctx:
        ctx[event.subject] = dict(event.sample_subject or {})
    if event is not None and event.step_templates:
        ctx.setdefault("sequence", {"name": event.name, "step": 1, "days": 0})
    return ctx


def variables(name: str) -> list[str]:
    """The variables a template can use (``order.number``, ``contact.name``…)."""

    def walk(prefix: str, value: Any) -> Iterator[str]:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                yield from walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            yield prefix

    return sorted(walk("", sample_context(event_for_template(name))))


@dataclass(frozen=True)
class TemplateCheck:
    """A template checked against sample data: the text, its length, and what is wrong."""

    name: str
    body: str = ""
    encoding: str = ""
    segments: int = 0
    units: int = 0
    ucs2_characters: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    error: str | None = None


def check_template(session: Session, name: str, source: str) -> TemplateCheck:
    """Render ``source`` for template ``name`` with sample data and finish it as a Twilio
    text would go out (the opt-out line, look-alikes, the length rules): body, encoding,
    segments, the characters that force UCS-2, warnings per channel — or the error with
    its line number (also a text over SMSMAXSEGMENTS)."""
    name = tpl.canonical_name(session, name)
    ctx = sample_context(event_for_template(name))
    company = options_mod.get(session, "SMSCOMPANYNAME")
    if company:
        ctx["sender"] = {**ctx["sender"], "name": company}
    try:
        r = tpl.check(source, ctx, name)
    except TemplateError as exc:
        return TemplateCheck(name, error=exc.message)
    rules = replace(wording.Rules.read(session), too_long=wording.CHECK)  # refused, never cut
    keep = wording.keep_from(ctx)
    warnings: list[str] = []
    finished: dict[str, wording.Finished] = {}
    for channel, label in ((Channel.TWILIO, "Twilio"), (Channel.EMAIL_GATEWAY, "gateway")):
        try:
            finished[channel] = wording.finish(r.body, channel, rules, keep)
        except wording.NotSendable as exc:
            if exc.status == Status.FAILED:
                return TemplateCheck(
                    name, r.body, error=f"{name}: with sample data, {label} texts: {exc.reason}"
                )
            warnings.append(f"{label} texts are not sent: {exc.reason}")
            continue
        if channel == Channel.EMAIL_GATEWAY and wording.says_stop(r.body):
            warnings.append("gateway texts: the STOP/HELP sentence is taken out (no reply is read)")
    if not company and "sender.name" in source:
        warnings.append("SMSCOMPANYNAME is not set: texts do not say who sent them")
    # Shown as Twilio sends it: that channel always takes the text (a failure returned above).
    info = analyse(finished[Channel.TWILIO].body)
    if info.segments > 1:
        warnings.append(f"{info.segments} segments ({info.units} {info.encoding} units)")
    if info.encoding == UCS2:
        chars = " ".join(repr(c) for c in info.non_gsm)
        warnings.append(f"characters outside GSM-7 force UCS-2 (70 per segment): {chars}")
    return TemplateCheck(
        name,
        finished[Channel.TWILIO].body,
        info.encoding,
        info.segments,
        info.units,
        info.non_gsm,
        tuple(warnings),
    )


@dataclass(frozen=True)
class TemplateRow:
    name: str
    origin: str
    check: TemplateCheck
    event: str | None


def template_rows(session: Session) -> list[TemplateRow]:
    """Every template: where it comes from, and its check with sample data."""
    out = []
    for name in tpl.known_names(session):
        src = tpl.load(session, name)
        event = event_for_template(name)
        out.append(
            TemplateRow(
                name,
                src.origin,
                check_template(session, name, src.source),
                event.name if event else None,
            )
        )
    return out


def save_template(
    session: Session, name: str, source: str, *, by: str, version: str | None = None
) -> TemplateCheck:
    """Save a staff override after checking it; a template that does not render is
    refused (``TemplateError`` with the line number). Given the ``version`` the editor
    was opened at (``template_version``), a template saved since is refused."""
    name = tpl.canonical_name(session, name)
    source = source.strip()
    checked = check_template(session, name, source)
    if checked.error:
        raise TemplateError(checked.error)
    _check_template_version(session, name, version)
    row = session.get(TemplateOverride, name)
    if row is None:
        session.add(TemplateOverride(name=name, body=source, updated_by=by))
    else:
        row.body, row.updated_by = source, by
    session.flush()
    return checked


def reset_template(session: Session, name: str, *, version: str | None = None) -> str:
    """Drop the staff override: the shipped default applies again (refused, given the
    ``version`` the editor was opened at, when it was saved since)."""
    name = tpl.canonical_name(session, name)
    _check_template_version(session, name, version)
    row = session.get(TemplateOverride, name)
    if row is None:
        raise InputError(f"{name} has no override; it already uses the default")
    if tpl.default_source(name) is None:
        raise InputError(f"{name} has no shipped default to go back to")
    session.delete(row)
    session.flush()
    return f"{name} reset to the default"


@dataclass(frozen=True)
class PreviewLine:
    """One row the event would write: the contact, where the text goes (or ``skipped:``
    / ``failed:`` and why; a text held for the send window says until when), the text."""

    contact: str | None
    route: str
    body: str = ""
    encoding: str = ""
    segments: int = 0
    error: str | None = None


@dataclass
class Preview:
    name: str
    number: str
    notes: list[str] = field(default_factory=list)
    lines: list[PreviewLine] = field(default_factory=list)


def preview(session: Session, name: str, number: str, source: str | None = None) -> Preview:
    """Template ``name`` (or ``source``, unsaved) for a real order: what the host path
    would queue now — the notifier's own planning (recipients, routes, the opt-out list,
    the send window, the sender) — written nowhere."""
    from .notifier import Draft
    from .notifier import preview as plan_preview

    name = tpl.canonical_name(session, name)
    event = event_for_template(name)
    if event is None:
        raise InputError(f"{name} belongs to no event: nothing would send it to an order")
    lookup = event.lookup or default_lookup()
    order = lookup_method(lookup, "find_order", "preview templates against real orders")(
        session, number
    )
    if order is None:
        raise InputError(f"no order {number!r}: check the number")
    out = Preview(name, number)
    subject: tuple[str, Mapping[str, Any]] | None = None
    kwargs: dict[str, Any] = {}
    if event.subject:
        subjects = getattr(lookup, "subjects", None)
        related = list(subjects(session, order, event.subject)) if callable(subjects) else []
        kind = event.subject.replace("_", " ")
        if related:
            kwargs[event.subject] = related[-1]
            out.notes.append(f"{kind} from the order's latest record")
        else:
            subject = ("sample", sample_context(event)[event.subject])
            out.notes.append(f"order {number} has no {kind} yet: sample data used")
    if event.step_templates:
        out.notes.append("a reminder step: planned as its sequence's first step would be")
    text = source if source is not None else tpl.load(session, name).source
    planned = plan_preview(event, order, session, kwargs, Draft(text, subject))
    if not any(m.status == Status.QUEUED for m in planned):
        out.notes.append(f"order {number}: nobody would be texted")
    for m in planned:
        if m.status == Status.QUEUED:
            where = f"{m.channel} {m.address}" + (f" ({m.reason})" if m.reason else "")
            out.lines.append(
                PreviewLine(m.contact_name, where, m.body, m.encoding or "", m.segments or 0)
            )
        elif m.status == Status.FAILED and m.channel:  # the template failed for this contact
            out.lines.append(
                PreviewLine(m.contact_name, f"{m.channel} {m.address}", error=m.reason)
            )
        else:
            out.lines.append(PreviewLine(m.contact_name, f"{m.status}: {m.reason}"))
    return out


def text_contact(session: Session, contact: str, text: str, *, by: str) -> list[str]:
    """A one-off text to one contact, planned and logged like any other (SMSUPDATE, the
    opt-out list, the route, the template checks, the organization's number). Refused
    (``InputError``, nothing queued) when the text does not render or is too long;
    otherwise the lines say what became of it."""
    from .notifier import text_contact as queue_one

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
    from .notifier import retry as plan_again
    from .sequences import retry_step

    if not ids:
        raise InputError("name the texts to retry")

    def step_again(s: Session, msg: Message, order: Any, kwargs: Mapping[str, Any]) -> str:
        return retry_step(s, msg, order, kwargs, by=by)

    return [line for _m, line in plan_again(session, list(ids), by=by, step_retry=step_again)]


# -- carrier gateways -------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayContact:
    """A contact whose Email 2 is a carrier gateway with a sunset date, and what to do."""

    key: str
    name: str
    opted_in: bool
    gateway: str
    carrier: Carrier
    todo: str


def gateway_contacts(session: Session, today: dt.date | None = None) -> list[GatewayContact]:
    """Contacts on shut-down or sunsetting gateways (the lookup's ``gateway_contacts``;
    ``InputError`` naming that method when the host has none)."""
    from .sendwindow import now

    today = today or now().date()
    region = get_settings().default_region
    active, _phone = rule_records.twilio_routing(session)
    lookup = default_lookup()
    out = []
    for c in lookup_method(lookup, "gateway_contacts", "list contacts on gateways")(session):
        try:
            addr = classify(c.address, region)
        except AddressError:
            continue
        carrier = addr.carrier
        if addr.kind != GATEWAY or carrier is None or carrier.sunset is None:
            continue
        if active:
            todo = (
                f"texts already go through Twilio to {addr.e164}; you may replace Email 2 "
                f"with {addr.e164}"
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
    session: Session, contact: str, opted_in: bool, *, by: str, source: str, note: str | None
) -> list[str]:
    """Opt a contact in or out (SMSUPDATE, the opt-out list, the consent trail); an
    opt-out cancels their texts not sent yet. Lines to show."""
    change = consent.opt_in if opted_in else consent.opt_out
    done = change(session, contact_key=contact, source=source, detail=note, actor=by)
    view = done.contacts[0]
    number = f" ({done.number})" if done.number else ""
    if not done.changed:
        state = "opted in" if opted_in else "opted out"
        return [f"contact {view.key} {view.name}{number} was already {state}; nothing changed"]
    state = "opted in (SMSUPDATE added)" if opted_in else "opted out (SMSUPDATE removed)"
    out = [f"contact {view.key} {view.name}{number}: {state}; consent recorded"]
    canceled = getattr(done, "canceled", ())
    if canceled:
        ids = ", ".join(f"#{i}" for i in canceled)
        out.append(f"{len(canceled)} queued or held text(s) canceled: {ids}")
    return out
