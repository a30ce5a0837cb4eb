"""Steps planned again from what a run kept: after staff changed the steps or a switch,
or for one step staff retried."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import consent
from ..codes import Program
from ..errors import InputError
from ..models import (
    Message,
    SequenceRun,
    Status,
    sequence_run_table,
)
from ..notifier import (
    Draft,
    PlanInfo,
    _plan,
    retried,
)
from ..outbox import apply_plan, insert_new, replace_plan, set_status
from ..sendwindow import now as clock_now
from .registry import get_sequence
from .run import NO_SUBJECT, Sequence, _messages_of, _Planner

log = logging.getLogger(__name__)


REPLANNABLE = (Status.QUEUED, Status.HELD, Status.SKIPPED)


def replan(session: Session, seq: Sequence, *, by: str, organization_ref: str | None = None) -> int:
    """Plan again, from each open run's stored plan, every step of ``seq`` not sent yet —
    after staff changed the steps or a switch. Adds steps that are new, cancels steps
    that were removed; the number of texts changed."""
    steps = {s.id: s for s in seq.steps(session)}
    q = select(SequenceRun).where(
        SequenceRun.sequence == seq.name, SequenceRun.stopped_at.is_(None)
    )
    if organization_ref is not None:
        q = q.where(SequenceRun.organization_ref == organization_ref)
    runs = list(session.scalars(q.order_by(SequenceRun.id)))
    planner = _Planner(seq, session, clock_now())
    plans = {r.id: json.loads(r.plan) for r in runs}
    numbers = [c.get("recipient") for p in plans.values() for c in p["contacts"]]
    planner.blocked = consent.opted_out(session, [n for n in numbers if n], seq.event.program)
    changed = 0
    for run in runs:
        plan = plans[run.id]
        have = {
            m.idempotency_key: m
            for m in session.scalars(_messages_of(seq.name, run.order_ref, run.subject_ref))
        }
        wanted = {}
        fields = {c.name: getattr(run, c.name) for c in sequence_run_table.columns}
        for step in steps.values():
            for entry in plan["contacts"]:
                row = planner.row(fields, plan, step, entry)
                wanted[row["idempotency_key"]] = row
        new = [r for k, r in wanted.items() if k not in have]
        insert_new(session, new)
        changed += len(new)
        for key, msg in have.items():
            if msg.status not in REPLANNABLE or msg.attempts > 0:
                continue
            planned = wanted.get(key)
            if planned is None:
                if msg.status != Status.SKIPPED:
                    why = f"step {msg.step} was removed from {seq.name} by {by}"
                    set_status(session, msg, Status.CANCELED, source=by, reason=why)
                    changed += 1
                continue
            if msg.status == Status.HELD and planned["status"] == Status.QUEUED:
                planned = {**planned, "status": Status.HELD, "reason": msg.reason}
            if apply_plan(session, msg, planned, by=by):
                changed += 1
    session.flush()
    return changed


def retry_step(
    session: Session, msg: Message, order: Any, kwargs: Mapping[str, Any], *, by: str
) -> str:
    """``erp-sms messages retry`` for a reminder step: the step planned again for that
    contact with today's data (the contact's route and consent as the lookup says now,
    today's options, steps and templates) — a step whose day has passed stays skipped,
    never sent late. A sentence on what became of it. ``InputError`` when the step or
    the run is gone."""
    seq = get_sequence(msg.event)
    step = next((s for s in seq.steps(session) if s.id == msg.step), None)
    run = session.scalar(
        select(SequenceRun).where(
            SequenceRun.sequence == seq.name,
            SequenceRun.order_ref == msg.order_ref,
            SequenceRun.subject_ref == (msg.subject_ref or NO_SUBJECT),
        )
    )
    if step is None or run is None:
        gone = f"step {msg.step} is no longer part of {seq.name}" if run else "its run is gone"
        raise InputError(f"cannot retry #{msg.id}: {gone}; nothing was changed")
    stored = json.loads(run.plan)
    subject = (msg.subject_ref or NO_SUBJECT, stored["context"].get(seq.event.subject or "", {}))
    info = PlanInfo(collect=True)
    event = dataclasses.replace(seq.event, template=step.template)
    _plan(event, order, session, kwargs, info, draft=Draft(subject=subject))
    entry = next((c for c in info.contacts if c.get("contact_ref") == msg.contact_ref), None)
    if entry is None:
        gone = (
            f"on retry by {by}: {msg.contact_name} is no longer among the order's recipients "
            "(opted out, unlinked or not listed)"
        )
        replace_plan(session, msg, msg, by=by, reason=gone)
        return f"#{msg.id} still {msg.status}: {msg.reason}"
    planner = _Planner(seq, session, clock_now())
    planner.blocked = consent.opted_out(session, [entry.get("recipient") or ""], Program.REMINDERS)
    fields = {c.name: getattr(run, c.name) for c in sequence_run_table.columns}
    plan = {"context": stored["context"], "contacts": info.contacts}
    row = planner.row(fields, plan, step, entry)
    return retried(msg, replace_plan(session, msg, Message(**row), by=by))
