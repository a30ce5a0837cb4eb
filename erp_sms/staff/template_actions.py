"""Templates: checked with sample data as a Twilio text would go out, previewed for an
order's recipients (planned by the host path's own code), saved and reset."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session

from .. import options as options_mod
from .. import templates as tpl
from .. import wording
from ..errors import InputError, TemplateError
from ..events import EventType, event_for_template
from ..models import Channel, Status, TemplateOverride
from ..notifier import Draft, folded_sample, lists_for
from ..notifier import preview as plan_preview
from ..recipients import ErpLookup, FindsOrders, HasSamples, default_lookup, optional
from ..segments import UCS2, analyse
from .versions import _check_template_version

# -- templates ------------------------------------------------------------------------------


# The sender in sample texts, and in one-off texts' checks.
SAMPLE_SENDER = {"phone_number": "(312) 555-0100", "e164": "+13125550100", "name": "Your Company"}


def sample_context(event: EventType | None) -> dict[str, Any]:
    """Sample data for template checks: the variables the event's lookup provides (its
    ``samples()``; the reference schema's otherwise), the sender, and the subject."""
    lookup = (event.lookup if event else None) or default_lookup()
    given = dict((lookup if isinstance(lookup, HasSamples) else ErpLookup()).samples())
    ctx: dict[str, Any] = {"sender": SAMPLE_SENDER, **given}
    ctx.setdefault("order", ErpLookup().samples()["order"])
    ctx.setdefault("contact", ErpLookup().samples()["contact"])
    if event is not None and event.subject and event.subject not in ctx:
        ctx[event.subject] = dict(event.sample_subject or {})
    if event is not None:  # an order's text may name several (SMSDIGESTMINUTES)
        for name, value in lists_for(event.name, ctx.get(event.subject or "")).items():
            ctx.setdefault(name, value)
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
    # The text when several of the order's events fold into one (SMSDIGESTMINUTES).
    folded: str = ""


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
    folded = _folded(name, source, ctx, rules, keep, warnings)
    return TemplateCheck(
        name,
        finished[Channel.TWILIO].body,
        info.encoding,
        info.segments,
        info.units,
        info.non_gsm,
        tuple(warnings),
        folded=folded,
    )


def _folded(
    name: str,
    source: str,
    ctx: Mapping[str, Any],
    rules: wording.Rules,
    keep: list[str],
    warnings: list[str],
) -> str:
    """The sample text carrying several work orders or shipments, as Twilio would get
    it; a template that cannot say them is a warning (each then goes out on its own)."""
    event = event_for_template(name)
    more = folded_sample(event.name) if event is not None else None
    if more is None:
        return ""
    try:
        r = tpl.render(source, {**ctx, **more}, name)
        return wording.finish(r.body, Channel.TWILIO, rules, keep).body
    except TemplateError as exc:
        reason = exc.message
    except wording.NotSendable as exc:
        reason = exc.reason
    warnings.append(f"when an order's updates fold into one text: {reason}; each goes out alone")
    return ""


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

    name = tpl.canonical_name(session, name)
    event = event_for_template(name)
    if event is None:
        raise InputError(f"{name} belongs to no event: nothing would send it to an order")
    lookup = event.lookup or default_lookup()
    order = optional(lookup, FindsOrders, "preview templates against real orders").find_order(
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
