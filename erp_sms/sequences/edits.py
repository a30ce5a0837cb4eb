"""Staff's changes to a sequence: its steps, its switch per organization, what goes out
next, organizations found by name."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .. import templates
from ..db import utcnow
from ..errors import InputError
from ..models import (
    Message,
    SequenceRun,
    SequenceStep,
    SequenceSteps,
    SequenceSwitch,
    Status,
)
from ..recipients import FindsOrganizations, default_lookup
from .replan import replan
from .run import Sequence, Step

log = logging.getLogger(__name__)


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
    lookup = default_lookup()
    if isinstance(lookup, FindsOrganizations):
        found = lookup.find_organization(session, text)
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
