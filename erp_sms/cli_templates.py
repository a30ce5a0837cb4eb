"""``erp-sms templates …``: list, show, set, preview, reset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import options as options_mod
from . import rule_records
from . import templates as tpl
from .addresses import classify, route
from .cli_common import _user, staff_session
from .config import get_settings
from .errors import AddressError, InputError, TemplateError
from .events import EventType, event_for_template
from .models import TemplateOverride
from .recipients import ErpLookup, default_lookup, lookup_method, select_recipients

SAMPLE_SENDER = {"phone_number": "(312) 555-0100", "e164": "+13125550100"}


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
    return ctx


def _check_name(session: Any, name: str) -> str:
    return tpl.canonical_name(session, name)


@click.group("templates")
def group() -> None:
    """Text-message templates (SMS S2P, SMS PWOCOMP, SMS SESHIP, SMS SEDEL, …).

    \b
    Example:
      erp-sms templates list
      erp-sms templates preview "SMS SESHIP" --order SO-104233
    """


@group.command("list")
def templates_list() -> None:
    """Every template: where it comes from, its encoding and segments with sample data,
    and warnings.

    \b
    Example:
      erp-sms templates list
    """
    with staff_session(readonly=True) as s:
        click.echo(f"{'name':<14} {'source':<10} {'encoding':<8} {'segments':>8}  warnings")
        for name in tpl.known_names(s):
            src = tpl.load(s, name)
            try:
                r = tpl.check(src.source, sample_context(event_for_template(name)), name)
                warns = tpl.warnings_for(r.body)
                line = f"{name:<14} {src.origin:<10} {r.encoding:<8} {r.segments:>8}  "
                click.echo(line + ("; ".join(warns) or "none"))
            except TemplateError as exc:
                click.echo(f"{name:<14} {src.origin:<10} {'-':<8} {'-':>8}  ERROR: {exc.message}")


@group.command("show")
@click.argument("name")
def templates_show(name: str) -> None:
    """Show a template's source and how it renders with sample data.

    \b
    Example:
      erp-sms templates show "SMS S2P"
    """
    with staff_session(readonly=True) as s:
        name = _check_name(s, name)
        src = tpl.load(s, name)
    click.echo(f"# {name} ({src.origin})")
    click.echo(src.source)
    try:
        r = tpl.check(src.source, sample_context(event_for_template(name)), name)
        click.echo(f"\n# with sample data: {r.encoding}, {r.segments} segment(s)\n{r.body}")
        for w in tpl.warnings_for(r.body):
            click.echo(f"warning: {w}")
    except TemplateError as exc:
        click.echo(f"\nERROR: {exc.message}")


@group.command("set")
@click.argument("name")
@click.option(
    "--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def templates_set(name: str, path: Path) -> None:
    """Replace a template with the text of FILE, after checking it (syntax with line
    numbers, unknown variables, sandbox).

    \b
    Example:
      erp-sms templates set "SMS S2P" --file s2p.txt
    """
    try:
        body = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}; save it as UTF-8 text") from None
    with staff_session() as s:
        name = _check_name(s, name)
        r = tpl.check(body, sample_context(event_for_template(name)), name)
        row = s.get(TemplateOverride, name)
        if row is None:
            s.add(TemplateOverride(name=name, body=body, updated_by=_user()))
        else:
            row.body = body
            row.updated_by = _user()
    click.echo(f"{name} saved: {r.encoding}, {r.segments} segment(s) with sample data")
    for w in tpl.warnings_for(r.body):
        click.echo(f"warning: {w}")


@group.command("reset")
@click.argument("name")
def templates_reset(name: str) -> None:
    """Drop the staff override; the shipped default applies again.

    \b
    Example:
      erp-sms templates reset "SMS S2P"
    """
    with staff_session() as s:
        name = _check_name(s, name)
        row = s.get(TemplateOverride, name)
        if row is None:
            raise InputError(f"{name} has no override; it already uses the default")
        if tpl.default_source(name) is None:
            raise InputError(f"{name} has no shipped default to go back to")
        s.delete(row)
    click.echo(f"{name} reset to the default")


@group.command("preview")
@click.argument("name")
@click.option("--order", "number", required=True, help="Sales order number.")
def templates_preview(name: str, number: str) -> None:
    """Render a template for each recipient of a real order, with segment counts.

    \b
    Example:
      erp-sms templates preview "SMS S2P" --order SO-104233
    """
    with staff_session(readonly=True) as s:
        name = _check_name(s, name)
        event = event_for_template(name)
        lookup = (event.lookup if event else None) or default_lookup()
        order = lookup_method(lookup, "find_order", "preview templates against real orders")(
            s, number
        )
        if order is None:
            raise InputError(f"no order {number!r}: check the number")
        view = lookup.order(s, order)
        only_one = options_mod.get_bool(s, "SMSONLYONE")
        decisions = select_recipients(
            view, lookup.contacts(s, order, listed_only=only_one), only_listed=only_one
        )
        active, phone = rule_records.twilio_routing(s)
        src = tpl.load(s, name)
        base = sample_context(event)
        base["order"] = view.context
        if phone:
            from .notifier import _sender_context

            base["sender"] = _sender_context(phone)
        if event is not None and event.subject:
            subjects = getattr(lookup, "subjects", None)
            related = list(subjects(s, order, event.subject)) if callable(subjects) else []
            if related:
                base[event.subject] = lookup.subject(event.subject, related[-1])[1]
                click.echo(f"# {event.subject.replace('_', ' ')} from the order's latest record")
            else:
                click.echo(
                    f"# order {number} has no {event.subject.replace('_', ' ')} yet: sample data used"
                )
        if not decisions:
            click.echo(f"order {number}: nobody would be texted")
        for d in decisions:
            if d.contact is None:
                click.echo(f"- (order) skipped: {d.skip_reason}")
                continue
            c = d.contact
            try:
                addr = classify(c.address, get_settings().default_region)
                r_ = route(addr, active)
                where = f"{r_.channel} {r_.address}" if r_.channel else f"skipped: {r_.reason}"
            except AddressError as exc:
                where = f"skipped: {exc.message}"
            if d.skip_reason:
                where = f"skipped: {d.skip_reason}"
            try:
                r = tpl.render(src.source, {**base, "contact": c.context}, name)
                click.echo(
                    f"- {c.name} → {where}\n  [{r.encoding}, {r.segments} segment(s)] {r.body}"
                )
            except TemplateError as exc:
                click.echo(f"- {c.name} → {where}\n  ERROR: {exc.message}")
