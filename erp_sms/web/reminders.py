"""Reminder sequences: steps, per-organization switches, senders per site."""

from __future__ import annotations

import logging

from flask import (
    render_template,
    request,
    url_for,
)
from flask_login import (
    login_required,
)
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WResponse

from .. import rule_records, sequences, templates
from ..errors import InputError
from .base import act, blueprint, database, who

log = logging.getLogger(__name__)

# -- reminders --------------------------------------------------------------------------------


@blueprint.get("/reminders")
@login_required  # type: ignore[untyped-decorator]
def reminders() -> str:
    from .. import options
    from ..sendwindow import zones_for

    with database().read_session() as s:
        zone = options.get(s, "SMSTIMEZONE")
        seqs = []
        for seq in sequences.all_sequences():
            upcoming = []
            for m in sequences.upcoming(s, seq):
                local_zone = zones_for(m.recipient, zone)[0]
                assert m.next_attempt_at is not None
                upcoming.append(
                    (
                        m,
                        f"{m.next_attempt_at.astimezone(local_zone):%Y-%m-%d %H:%M} {local_zone.key}",
                    )
                )
            seqs.append(
                {
                    "seq": seq,
                    "steps": seq.steps(s),
                    "switches": sequences.switches(s, seq),
                    "upcoming": upcoming,
                }
            )
        window = options.get(s, "SMSSENDWINDOW")
        records = rule_records.senders(s)
        mapping = rule_records.sender_map(s)
        names = templates.known_names(s)
    return render_template(
        "erp_sms/reminders.html",
        seqs=seqs,
        window=window,
        zone=zone,
        records=records,
        mapping=mapping,
        templates=names,
    )


def _int(name: str) -> int | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name} {raw!r} is not a whole number of days") from None


@blueprint.post("/reminders/step")
@login_required  # type: ignore[untyped-decorator]
def reminders_step() -> WResponse:
    def save(s: Session) -> str:
        seq = sequences.get_sequence(request.form.get("sequence", ""))
        step = _int("step")
        days = _int("days")
        template = request.form.get("template") or None
        sms = request.form.get("sms")
        if request.form.get("remove"):
            if step is None:
                raise InputError("which step?")
            n = sequences.remove_step(s, seq, step, by=who())
            return f"{seq.name} step {step} removed; {n} text(s) canceled"
        saved, n = sequences.set_step(
            s,
            seq,
            step,
            days=days,
            template=template,
            sms=None if sms is None else sms == "on",
            by=who(),
        )
        verb = "added" if step is None else "saved"
        return f"{seq.name} {saved.describe()} {verb}; {n} text(s) not sent yet planned again"

    return act(save, url_for(".reminders"))


@blueprint.post("/reminders/switch")
@login_required  # type: ignore[untyped-decorator]
def reminders_switch() -> WResponse:
    def save(s: Session) -> str:
        seq = sequences.get_sequence(request.form.get("sequence", ""))
        enabled = request.form.get("state") == "on"
        key, name = sequences.find_organization(s, request.form.get("organization", ""))
        n = sequences.switch(s, seq, key, name, enabled, by=who())
        return f"{seq.name} is {'on' if enabled else 'off'} for {name or key}; {n} text(s) changed"

    return act(save, url_for(".reminders"))


@blueprint.post("/reminders/sender")
@login_required  # type: ignore[untyped-decorator]
def reminders_sender() -> WResponse:
    def save(s: Session) -> str:
        key, name = sequences.find_organization(s, request.form.get("organization", ""))
        full = rule_records.map_sender(s, key, name, request.form.get("record", ""), by=who())
        return f"{name or key}: texts go out from {full} from now on"

    return act(save, url_for(".reminders"))
