"""What admins set: the TWILIO records, the options and the templates (with the live
preview)."""

from __future__ import annotations

import logging
from typing import Any

from flask import (
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import (
    login_required,
)
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WResponse

from .. import outbox, rule_records, staff, templates
from ..errors import ErpSmsError, InputError
from ..models import Message, RuleAudit
from .base import act, blueprint, database, who

log = logging.getLogger(__name__)

# -- the TWILIO rule record -----------------------------------------------------------------


@blueprint.get("/rules")
@login_required  # type: ignore[untyped-decorator]
def rules() -> str:
    name = request.args.get("name", rule_records.TWILIO)
    try:
        rtype, full = rule_records.record(name)
    except InputError as exc:
        abort(404, exc.message)
    with database().read_session() as s:
        rule = rule_records.get_rule(s, full)
        fields = []
        for f in rtype.fields:
            if f.kind == "logic":
                continue
            value = rule.get(f.name) if rule else None
            changed = rule.changed_at(f.name) if rule else None
            fields.append(
                {
                    "name": f.name,
                    "secret": f.secret,
                    "value": value,
                    "changed": changed,
                    "help": getattr(f, "help", ""),
                }
            )
        audit = list(
            s.scalars(
                select(RuleAudit)
                .where(RuleAudit.rule_type == full)
                .order_by(RuleAudit.id.desc())
                .limit(20)
            )
        )
        records = rule_records.senders(s)
        mapping = rule_records.sender_map(s)
        held = outbox.held_count(s, full)
        version = staff.rule_version(s, full)
    return render_template(
        "erp_sms/rules.html",
        version=version,
        full=full,
        description=rtype.description,
        rule=rule,
        fields=fields,
        audit=audit,
        records=records,
        mapping=mapping,
        held=held,
    )


@blueprint.post("/rules")
@login_required  # type: ignore[untyped-decorator]
def rules_save() -> WResponse:
    full = request.form.get("record", rule_records.TWILIO)
    # A blank field leaves the value as it is (the AuthCode is never shown, so always
    # blank unless replaced); MessagingServiceSid blank stops using one, as in the CLI.
    values = {
        k: request.form[k].strip()
        for k in ("SID", "AuthCode", "PhoneNumber", "MessagingServiceSid", "WebhookKey", "UseCode")
        if k in request.form and (request.form[k].strip() or k == "MessagingServiceSid")
    }
    current = request.form.get("Active")
    active = None if current is None else current == "on"

    def save(s: Session) -> list[str]:
        saved = staff.set_rule(
            s, full, values, active, by=who(), version=request.form.get("version")
        )
        out = saved.lines()
        if saved.stored_unencrypted:
            out.append("warning: " + staff.UNENCRYPTED)
        return out

    return act(save, url_for(".rules", name=full))


@blueprint.post("/rules/test")
@login_required  # type: ignore[untyped-decorator]
def rules_test() -> WResponse:
    full = request.form.get("record", rule_records.TWILIO)
    try:
        with database().session() as s:
            ok, sentence = staff.test_credentials(s, full, by=who())
        flash(sentence, "ok" if ok else "error")
    except ErpSmsError as exc:
        flash(exc.message, "error")
    return redirect(url_for(".rules", name=full))


# -- options ----------------------------------------------------------------------------------


@blueprint.get("/options")
@login_required  # type: ignore[untyped-decorator]
def options_page() -> str:
    with database().read_session() as s:
        rows = staff.option_rows(s)
    return render_template("erp_sms/options.html", rows=rows)


@blueprint.post("/options")
@login_required  # type: ignore[untyped-decorator]
def options_save() -> WResponse:
    name, value = request.form.get("name", ""), request.form.get("value", "")
    version = request.form.get("version")
    return act(
        lambda s: f"{name} = {staff.set_option(s, name, value, by=who(), version=version)}",
        url_for(".options_page"),
    )


# -- templates ------------------------------------------------------------------------------


@blueprint.get("/templates")
@login_required  # type: ignore[untyped-decorator]
def templates_page() -> str:
    with database().read_session() as s:
        rows = staff.template_rows(s)
    return render_template("erp_sms/templates.html", rows=rows)


@blueprint.get("/templates/<name>")
@login_required  # type: ignore[untyped-decorator]
def template_edit(name: str) -> str:
    with database().read_session() as s:
        try:
            name = templates.canonical_name(s, name)
        except InputError as exc:
            abort(404, exc.message)
        src = templates.load(s, name)
        checked = staff.check_template(s, name, src.source)
        version = staff.template_version(s, name)
        recent = s.scalar(
            select(Message.order_number)
            .where(Message.template == name)
            .order_by(Message.id.desc())
            .limit(1)
        )
    return render_template(
        "erp_sms/template_edit.html",
        name=name,
        source=src.source,
        origin=src.origin,
        check=checked,
        variables=staff.variables(name),
        order=request.args.get("order") or recent or "",
        version=version,
    )


@blueprint.post("/templates/<name>")
@login_required  # type: ignore[untyped-decorator]
def template_save(name: str) -> Any:
    source = request.form.get("source", "")
    try:
        with database().session() as s:
            checked = staff.save_template(
                s, name, source, by=who(), version=request.form.get("version")
            )
        flash(f"{checked.name} saved: {checked.encoding}, {checked.segments} segment(s)", "ok")
        return redirect(url_for(".template_edit", name=checked.name))
    except ErpSmsError as exc:
        with database().read_session() as s:
            checked = staff.check_template(s, name, source)
            # The version now: saving again, knowing what changed, is deliberate.
            version = staff.template_version(s, checked.name)
        flash(exc.message, "error")
        return render_template(
            "erp_sms/template_edit.html",
            name=checked.name,
            source=source,
            origin="unsaved",
            check=checked,
            variables=staff.variables(checked.name),
            order=request.form.get("order", ""),
            version=version,
        ), 400


@blueprint.post("/templates/<name>/reset")
@login_required  # type: ignore[untyped-decorator]
def template_reset(name: str) -> WResponse:
    version = request.form.get("version")
    return act(
        lambda s: staff.reset_template(s, name, version=version),
        url_for(".template_edit", name=name),
    )


@blueprint.post("/templates/<name>/preview")
@login_required  # type: ignore[untyped-decorator]
def template_preview(name: str) -> WResponse:
    """The live preview: the check with sample data and, given an order, each recipient."""
    source = request.form.get("source", "")
    number = request.form.get("order", "").strip()
    with database().read_session() as s:
        try:
            checked = staff.check_template(s, name, source)
        except InputError as exc:
            return jsonify({"error": exc.message}), 404  # type: ignore[return-value]
        lines: list[dict[str, Any]] = []
        notes: list[str] = []
        if number and not checked.error:
            try:
                p = staff.preview(s, name, number, source)
                notes = p.notes
                lines = [vars(line) for line in p.lines]
            except ErpSmsError as exc:
                notes = [exc.message]
    return jsonify(
        {
            "body": checked.body,
            "folded": checked.folded,
            "encoding": checked.encoding,
            "segments": checked.segments,
            "units": checked.units,
            "characters": len(checked.body),
            "ucs2": list(checked.ucs2_characters),
            "warnings": list(checked.warnings),
            "error": checked.error,
            "notes": notes,
            "lines": lines,
        }
    )
