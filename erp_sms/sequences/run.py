"""A sequence and its steps; a run started for one subject (an invoice): every step
planned for the order's contacts, kept so that it can be planned again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import consent, links, options, templates, wording
from ..config import get_settings
from ..db import utcnow
from ..errors import TemplateError
from ..events import EventType
from ..models import (
    Message,
    SequenceStep,
    SequenceSteps,
    SequenceSwitch,
    Status,
    sequence_run_table,
)
from ..notifier import (
    _COLUMNS,
    CONTACT_FIELDS,
    PlanInfo,
    _begin_sqlite_transaction,
    _plan,
    _row,
    guarded,
    idempotency_key,
)
from ..outbox import insert_new, insert_or_ignore_run, set_status
from ..recipients import RecipientLookup, default_lookup
from ..sendwindow import Policy, start_of_day
from ..sendwindow import now as clock_now

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
            "program": self.seq.event.program,
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
            body, urls = links.shorten(get_settings(), rendered.body)
            done = wording.finish(
                body, entry.get("channel"), self.rules, wording.keep_from(context)
            )
        except TemplateError as exc:
            return Status.FAILED, exc.message, None
        except wording.NotSendable as exc:
            return exc.status, exc.reason, None
        body, mine = links.fill(get_settings(), done.body, entry.get("recipient"))
        body, code = links.fill_code(get_settings(), body, row["idempotency_key"])
        row |= {"body": body, "encoding": done.encoding, "segments": done.segments}
        row |= {
            "link_token": mine,
            "link_code": code,
            "link_urls": json.dumps(urls) if urls else None,
        }
        due = max(start_of_day(day, zones), self.now)
        deferred = self.policy.deferral(entry.get("recipient"), due)
        if deferred is None:
            return Status.QUEUED, None, due
        at, reason = deferred
        # Every text that waits says why (CONTRACT.md: `scheduled_for` and the reason), also
        # a step waiting for the opening on its own day.
        return Status.QUEUED, reason, at


# Texts of a run that were never handed to a provider: staff changes plan them again.
