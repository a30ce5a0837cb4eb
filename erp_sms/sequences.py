"""Reminder sequences (SMS dunning): steps ``(days, template)`` from an anchor date.

``Sequence.start`` plans who is texted once — the same planning as an order event
(contacts, SMSUPDATE, routing, opt-outs) — and queues one text per contact and step, each
due on anchor + days at the send window's opening in the recipient's local time. The run
keeps what was planned (the template contexts and each contact's route), so when staff
change the steps or switch an organization off, the steps not yet sent are planned again
from it (``replan``) without the host. ``Sequence.stop`` cancels what has not gone out,
in the host's transaction.

Every step is its own row in the email log (idempotency key per step), and nothing is
dropped silently: a step whose date passed, a step staff turned off, an organization
switched off — each is a ``skipped`` row with the reason, planned again when that changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from . import consent, options, templates, wording
from .db import utcnow
from .errors import InputError, TemplateError
from .events import EventType, add_sequence_event, event_for_template
from .models import (
    Message,
    SequenceRun,
    SequenceStep,
    SequenceSteps,
    SequenceSwitch,
    Status,
    sequence_run_table,
)
from .notifier import (
    _COLUMNS,
    CONTACT_FIELDS,
    Draft,
    PlanInfo,
    _begin_sqlite_transaction,
    _plan,
    _row,
    guarded,
    idempotency_key,
    retried,
)
from .outbox import apply_plan, insert_new, insert_or_ignore_run, replace_plan, set_status
from .recipients import RecipientLookup, default_lookup
from .sendwindow import Policy, start_of_day
from .sendwindow import now as clock_now

log = logging.getLogger(__name__)

NO_SUBJECT = "-"


@dataclass(frozen=True)
class Step:
    """One step: a text ``days`` after the anchor (negative: before it)."""

    id: int
    days: int
    template: str
    sms: bool = True  # staff can turn a step's text off without removing it

    def describe(self) -> str:
        off = "" if self.sms else ", SMS off"
        return f"step {self.id} ({self.days:+d} days, {self.template}{off})"


class Sequence:
    """A registered reminder sequence (``register_sequence``)."""

    def __init__(self, event: EventType, steps: tuple[Step, ...]) -> None:
        self.event = event
        self.default_steps = steps

    @property
    def name(self) -> str:
        return self.event.name

    @property
    def subject(self) -> str | None:
        return self.event.subject

    def __repr__(self) -> str:
        return f"Sequence({self.name!r}, steps={list(self.default_steps)!r})"

    def steps(self, session: Session) -> list[Step]:
        """The steps as they are now: staff's, once staff edited them; the code's before."""
        if session.get(SequenceSteps, self.name) is None:
            return list(self.default_steps)
        rows = session.scalars(
            select(SequenceStep)
            .where(SequenceStep.sequence == self.name)
            .order_by(SequenceStep.step)
        )
        return [Step(r.step, r.days, r.template, r.sms) for r in rows]

    # -- the host's calls ------------------------------------------------------------------

    def start(
        self, order: Any, *, session: Session | None = None, anchor: dt.date, **subject: Any
    ) -> list[Message]:
        """Queue every step for the subject (``invoice=...``) in the host's transaction;
        never raises. Starting again for the same subject adds nothing. Returns the rows
        written (unattached)."""
        return guarded(self.event, order, session, {**subject, "anchor": anchor}, self._start)

    def stop(
        self, order: Any, *, session: Session | None = None, reason: str = "stopped", **subject: Any
    ) -> list[Message]:
        """Cancel every step not sent yet (status ``canceled`` with the reason), in the
        host's transaction; never raises. Returns the canceled rows."""
        return guarded(self.event, order, session, {**subject, "reason": reason}, self._stop)

    # -- planning --------------------------------------------------------------------------

    def _start(
        self, event: EventType, order: Any, session: Session, kwargs: Mapping[str, Any]
    ) -> list[Message]:
        anchor = kwargs["anchor"]
        if isinstance(anchor, dt.datetime):
            anchor = anchor.date()
        if session.new or session.dirty or session.deleted:
            session.flush()
        _begin_sqlite_transaction(session)
        with session.begin_nested():
            steps = self.steps(session)
            first = steps[0].template if steps else event.template
            info = PlanInfo(collect=True)
            planned = _plan(
                dataclasses.replace(event, template=first), order, session, kwargs, info
            )
            view = info.view
            if view is None or not isinstance(anchor, dt.date):
                if not isinstance(anchor, dt.date):
                    reason = (
                        f"{self.name} was started with anchor={anchor!r}: pass the date the "
                        "steps count from, e.g. anchor=invoice.due_date"
                    )
                    for m in planned:
                        m.status, m.reason, m.next_attempt_at = Status.FAILED, reason, None
                rows = [_row(m) for m in planned]
                insert_new(session, rows)  # the failed entry says what was missing
                return planned
            subject_ref = info.subject_ref or NO_SUBJECT
            plan = _json_safe({"context": info.context, "contacts": info.contacts})
            run = {
                "sequence": self.name,
                "order_ref": view.key,
                "subject_ref": subject_ref,
                "order_number": view.number,
                "organization_ref": view.organization_key,
                "organization_name": view.organization_name,
                "anchor": anchor,
                "started_at": utcnow(),
                "plan": json.dumps(plan),
            }
            if not insert_or_ignore_run(session, run):
                log.info(
                    "erp-sms: %s already started for order %s (%s): nothing added",
                    self.name,
                    view.number,
                    subject_ref,
                )
                return []
            planner = _Planner(self, session, clock_now())
            rows = [
                planner.row(run, plan, step, entry) for step in steps for entry in plan["contacts"]
            ]
            insert_new(session, rows)
        log.info(
            "erp-sms: %s started for order %s: %d text(s) planned",
            self.name,
            view.number,
            len(rows),
            extra={"event": self.name, "count": len(rows)},
        )
        return [Message(**r) for r in rows]

    def _stop(
        self, event: EventType, order: Any, session: Session, kwargs: Mapping[str, Any]
    ) -> list[Message]:
        lookup: RecipientLookup = event.lookup or default_lookup()
        view = lookup.order(session, order)
        subject_ref = NO_SUBJECT
        if event.subject and kwargs.get(event.subject) is not None:
            subject_ref = lookup.subject(event.subject, kwargs[event.subject])[0]
        reason = f"{self.name} stopped: {kwargs.get('reason') or 'stopped'}"
        if session.new or session.dirty or session.deleted:
            session.flush()
        _begin_sqlite_transaction(session)
        with session.begin_nested():
            now = utcnow()
            session.execute(
                update(sequence_run_table)
                .where(
                    sequence_run_table.c.sequence == self.name,
                    sequence_run_table.c.order_ref == view.key,
                    sequence_run_table.c.subject_ref == subject_ref,
                    sequence_run_table.c.stopped_at.is_(None),
                )
                .values(stopped_at=now, stop_reason=reason)
            )
            rows = list(
                session.scalars(
                    _messages_of(self.name, view.key, subject_ref).where(
                        Message.status.in_([Status.QUEUED, Status.HELD])
                    )
                )
            )
            for msg in rows:
                set_status(session, msg, Status.CANCELED, source="host", reason=reason)
                msg.next_attempt_at = None
            session.flush()
        return rows


def _messages_of(sequence: str, order_ref: str, subject_ref: str) -> Any:
    return (
        select(Message)
        .where(
            Message.order_ref == order_ref,
            Message.event == sequence,
            Message.subject_ref == (None if subject_ref == NO_SUBJECT else subject_ref),
        )
        .order_by(Message.id)
    )


def _json_safe(value: Any) -> Any:
    """The plan as JSON stores it (dates and decimals as text): what is rendered at start
    and what staff changes render later are then the same."""
    return json.loads(json.dumps(value, default=str))


class _Planner:
    """Works out one step's row for one contact of a run, with today's settings."""

    def __init__(self, seq: Sequence, session: Session, now: dt.datetime) -> None:
        self.seq, self.session, self.now = seq, session, now
        self.policy = Policy.from_options(
            options.get(session, "SMSSENDWINDOW"), options.get(session, "SMSTIMEZONE")
        )
        self.rules = wording.Rules.read(session)
        self._sources: dict[str, templates.TemplateSource | str] = {}
        self._switches: dict[str | None, bool] = {}
        self.blocked: dict[str, Any] = {}

    def source(self, name: str) -> templates.TemplateSource | str:
        if name not in self._sources:
            try:
                self._sources[name] = templates.load(self.session, name)
            except TemplateError as exc:
                self._sources[name] = exc.message
        return self._sources[name]

    def switched_on(self, organization_ref: str | None) -> bool:
        if organization_ref not in self._switches:
            row = (
                self.session.get(SequenceSwitch, (self.seq.name, organization_ref))
                if organization_ref is not None
                else None
            )
            self._switches[organization_ref] = row is None or row.enabled
        return self._switches[organization_ref]

    def row(
        self, run: Mapping[str, Any], plan: Mapping[str, Any], step: Step, entry: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The message row of ``step`` for the contact ``entry`` (a planned route or why
        there is none)."""
        contact_ref = entry.get("contact_ref")
        subject_ref = run["subject_ref"]
        key = idempotency_key(
            f"{self.seq.name}#{step.id}",
            run["order_ref"],
            None if subject_ref == NO_SUBJECT else subject_ref,
            contact_ref,
        )
        row: dict[str, Any] = dict.fromkeys(_COLUMNS)
        row |= {k: entry.get(k) for k in CONTACT_FIELDS}
        row |= {
            "idempotency_key": key,
            "event": self.seq.name,
            "template": step.template,
            "order_ref": run["order_ref"],
            "order_number": run["order_number"],
            "organization_name": run["organization_name"],
            "subject_ref": None if subject_ref == NO_SUBJECT else subject_ref,
            "step": step.id,
            "send_window": True,
            "body": "",
            "attempts": 0,
            "maybe_sent": False,
            "created_at": self.now,
            "updated_at": self.now,
        }
        status, reason, when = self._decide(run, plan, step, entry, row)
        row |= {"status": status, "reason": reason, "next_attempt_at": when}
        return row

    def _decide(
        self,
        run: Mapping[str, Any],
        plan: Mapping[str, Any],
        step: Step,
        entry: Mapping[str, Any],
        row: dict[str, Any],
    ) -> tuple[str, str | None, dt.datetime | None]:
        if entry.get("status") != Status.QUEUED:
            return entry["status"], entry.get("reason"), None
        if entry.get("recipient") in self.blocked:
            return Status.SKIPPED, consent.describe(self.blocked[entry["recipient"]]), None
        if not step.sms:
            return Status.SKIPPED, f"{step.describe()} is turned off by staff", None
        if not self.switched_on(run["organization_ref"]):
            return (
                Status.SKIPPED,
                f"{self.seq.name} is switched off for {run['organization_name']} (`erp-sms "
                f"sequences switch {self.seq.name} ORGANIZATION on` plans it again)",
                None,
            )
        anchor = run["anchor"]
        if isinstance(anchor, str):
            anchor = dt.date.fromisoformat(anchor)
        day = anchor + dt.timedelta(days=step.days)
        zones = self.policy.zones(entry.get("recipient"))
        today = self.now.astimezone(zones[0]).date()
        if day < today:
            return (
                Status.SKIPPED,
                f"{step.describe()} was due on {day} ({anchor} {step.days:+d} days), before "
                "the sequence started or the step was changed: not sent late",
                None,
            )
        source = self.source(step.template)
        if isinstance(source, str):
            return Status.FAILED, source, None
        context = {
            **plan["context"],
            "contact": entry.get("context") or {},
            "sequence": {
                "name": self.seq.name,
                "step": step.id,
                "days": step.days,
                "date": day.isoformat(),
                "anchor": anchor.isoformat(),
            },
        }
        try:
            rendered = templates.render(source.source, context, step.template)
            done = wording.finish(
                rendered.body, entry.get("channel"), self.rules, wording.keep_from(context)
            )
        except TemplateError as exc:
            return Status.FAILED, exc.message, None
        except wording.NotSendable as exc:
            return exc.status, exc.reason, None
        row |= {"body": done.body, "encoding": done.encoding, "segments": done.segments}
        due = max(start_of_day(day, zones), self.now)
        deferred = self.policy.deferral(entry.get("recipient"), due)
        if deferred is None:
            return Status.QUEUED, None, due
        at, reason = deferred
        # Waiting for the opening on the step's own day is the plan, not a deferral.
        on_the_day = at.astimezone(zones[0]).date() <= day
        return Status.QUEUED, None if on_the_day else reason, at


# Texts of a run that were never handed to a provider: staff changes plan them again.
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
    planner.blocked = consent.opted_out(session, [n for n in numbers if n])
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
                    msg.next_attempt_at = None
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
        msg.reason = (
            f"on retry by {by}: {msg.contact_name} is no longer among the order's recipients "
            "(opted out, unlinked or not listed)"
        )
        replace_plan(session, msg, msg, by=by)
        return f"#{msg.id} still {msg.status}: {msg.reason}"
    planner = _Planner(seq, session, clock_now())
    planner.blocked = consent.opted_out(session, [entry.get("recipient") or ""])
    fields = {c.name: getattr(run, c.name) for c in sequence_run_table.columns}
    plan = {"context": stored["context"], "contacts": info.contacts}
    row = planner.row(fields, plan, step, entry)
    return retried(msg, replace_plan(session, msg, Message(**row), by=by))


# -- registry -------------------------------------------------------------------------------

_sequences: dict[str, Sequence] = {}


def register_sequence(
    name: str,
    *,
    subject: str | None,
    steps: Seq[tuple[int, str]],
    default_templates: Mapping[str, str] | None = None,
    lookup: RecipientLookup | None = None,
    sample_subject: Mapping[str, Any] | None = None,
) -> Sequence:
    """Register a reminder sequence: ``steps`` are ``(days, template)`` from an anchor
    date (negative = before it); ``default_templates`` the text of each template until
    staff change it. Registering the same name again with the same steps returns it."""
    from .events import _NAME

    if not _NAME.match(name):
        raise InputError(f"sequence name {name!r}: use lower-case letters, digits and _ (max 64)")
    parsed = []
    for i, item in enumerate(steps, start=1):
        try:
            days, template = item
            parsed.append(Step(i, int(days), str(template)))
        except (TypeError, ValueError):
            raise InputError(
                f"sequence {name}: step {i} must be (days, template), not {item!r}"
            ) from None
        if not template or len(template) > 64:
            raise InputError(f"sequence {name}: template names are 1 to 64 characters")
    existing = _sequences.get(name)
    if existing is not None:
        if existing.default_steps != tuple(parsed) or existing.subject != subject:
            raise InputError(f"sequence {name!r} is already registered with other steps")
        return existing
    for template, body in (default_templates or {}).items():
        templates.register_default(template, body)
    event = EventType(
        name=name,
        template=parsed[0].template if parsed else f"SMS {name.upper()}",
        signal=_no_signal(name),
        subject=subject,
        lookup=lookup,
        sample_subject=sample_subject,
        send_window=True,
        step_templates=tuple(dict.fromkeys(s.template for s in parsed)),
    )
    add_sequence_event(event)
    seq = Sequence(event, tuple(parsed))
    _sequences[name] = seq
    return seq


def _no_signal(name: str) -> Any:
    from blinker import NamedSignal

    return NamedSignal(f"erp_sms.sequence.{name}")  # never connected: start() plans


def get_sequence(name: str) -> Sequence:
    try:
        return _sequences[name]
    except KeyError:
        known = ", ".join(sorted(_sequences)) or "none registered (the host module registers them)"
        raise InputError(f"unknown sequence {name!r}; sequences: {known}") from None


def all_sequences() -> list[Sequence]:
    return list(_sequences.values())


def sequence_for_template(template: str) -> Sequence | None:
    event = event_for_template(template)
    return _sequences.get(event.name) if event is not None else None


# -- staff actions (CLI and pages) ----------------------------------------------------------


def _edit(session: Session, seq: Sequence, by: str) -> dict[int, SequenceStep]:
    """The sequence's step rows, created from the code's steps on the first edit."""
    marker = session.get(SequenceSteps, seq.name)
    if marker is None:
        session.add(SequenceSteps(name=seq.name, updated_by=by))
        for s in seq.default_steps:
            session.add(
                SequenceStep(
                    sequence=seq.name, step=s.id, days=s.days, template=s.template, sms=s.sms
                )
            )
        session.flush()
    else:
        marker.updated_by = by
        marker.updated_at = utcnow()
    rows = session.scalars(select(SequenceStep).where(SequenceStep.sequence == seq.name))
    return {r.step: r for r in rows}


def set_step(
    session: Session,
    seq: Sequence,
    step: int | None,
    *,
    days: int | None = None,
    template: str | None = None,
    sms: bool | None = None,
    by: str,
) -> tuple[Step, int]:
    """Change a step (``step=None``: add one); the steps not yet sent follow. Returns the
    step as saved and how many texts changed."""
    rows = _edit(session, seq, by)
    if template is not None:
        template = templates.canonical_name(session, template)
    if step is None:
        if days is None or template is None:
            raise InputError("a new step needs --days N and --template NAME")
        step = max(rows, default=0) + 1
        row = SequenceStep(sequence=seq.name, step=step, days=days, template=template, sms=True)
        session.add(row)
    else:
        found = rows.get(step)
        if found is None:
            raise InputError(
                f"{seq.name} has no step {step}; steps: "
                + (", ".join(str(s) for s in sorted(rows)) or "none")
            )
        row = found
        if days is not None:
            row.days = days
        if template is not None:
            row.template = template
    if sms is not None:
        row.sms = sms
    session.flush()
    changed = replan(session, seq, by=by)
    return Step(row.step, row.days, row.template, row.sms), changed


def remove_step(session: Session, seq: Sequence, step: int, *, by: str) -> int:
    """Remove a step: its texts not sent yet are canceled with the reason."""
    rows = _edit(session, seq, by)
    if step not in rows:
        raise InputError(
            f"{seq.name} has no step {step}; steps: "
            + (", ".join(str(s) for s in sorted(rows)) or "none")
        )
    session.execute(
        delete(SequenceStep).where(SequenceStep.sequence == seq.name, SequenceStep.step == step)
    )
    session.expire_all()
    return replan(session, seq, by=by)


def switch(
    session: Session,
    seq: Sequence,
    organization_ref: str,
    organization_name: str | None,
    enabled: bool,
    *,
    by: str,
) -> int:
    """Switch ``seq`` on or off for one organization: its steps not sent yet are skipped
    with the reason (off) or planned again (on). The number of texts changed."""
    row = session.get(SequenceSwitch, (seq.name, organization_ref))
    if row is None:
        row = SequenceSwitch(sequence=seq.name, organization_ref=organization_ref)
        session.add(row)
    row.organization_name = organization_name
    row.enabled = enabled
    row.updated_by = by
    session.flush()
    return replan(session, seq, by=by, organization_ref=organization_ref)


def switches(session: Session, seq: Sequence) -> list[SequenceSwitch]:
    return list(
        session.scalars(
            select(SequenceSwitch)
            .where(SequenceSwitch.sequence == seq.name)
            .order_by(SequenceSwitch.organization_name)
        )
    )


def upcoming(session: Session, seq: Sequence, limit: int = 10) -> list[Message]:
    """The next texts of ``seq`` to go out, soonest first."""
    return list(
        session.scalars(
            select(Message)
            .where(Message.event == seq.name, Message.status == Status.QUEUED)
            .order_by(Message.next_attempt_at, Message.id)
            .limit(limit)
        )
    )


def find_organization(session: Session, text: str) -> tuple[str, str | None]:
    """(key, name) of the organization staff named (by name or key): through the
    lookup's ``find_organization`` when it has one, else ``text`` is taken as the key
    (its name from the runs, when any)."""
    finder = getattr(default_lookup(), "find_organization", None)
    if callable(finder):
        found = finder(session, text)
        if found is None:
            raise InputError(
                f"no organization {text!r}: give its exact name (in quotes) or its key"
            )
        key, name = found
        return str(key), name
    name = session.scalar(
        select(SequenceRun.organization_name).where(SequenceRun.organization_ref == text).limit(1)
    )
    return text, name
