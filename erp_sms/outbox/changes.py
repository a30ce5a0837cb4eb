"""Changes by staff and the planner: release, cancel (also for an opt-out, waiting for
handovers already cleared), retry (a text the provider took is sent again as a new
one), a reminder step planned again."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from .. import feedback
from ..db import utcnow
from ..errors import InputError
from ..models import (
    PLANNED,
    Message,
    Rule,
    Status,
    message_event_table,
    message_table,
)
from ..signals import ORDER_EVENTS
from .values import _history_row, add_event, set_status, told_of
from .write import add_planned, find

log = logging.getLogger(__name__)


def require(
    session: Session, ids: Sequence[int], statuses: Sequence[str], action: str
) -> list[Message]:
    """The messages ``ids`` for a staff ``action``: ``InputError`` (and nothing changed)
    when one is unknown or not in one of ``statuses``."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    rows = find(session, None, wanted)
    known = {m.id: m for m in rows}
    unknown = [str(i) for i in wanted if i not in known]
    if unknown:
        raise InputError(
            f"unknown message id(s) {', '.join(unknown)}: nothing was changed "
            "(`erp-sms report` lists the ids)"
        )
    wrong = [f"#{m.id} is {m.status}" for m in rows if m.status not in statuses]
    if wrong:
        raise InputError(
            f"cannot {action}: {'; '.join(wrong)} (only {' or '.join(statuses)} texts); "
            "nothing was changed"
        )
    return [known[i] for i in wanted]


def release(
    session: Session, ids: Sequence[int] | None = None, *, by: str = "staff"
) -> list[Message]:
    """Held messages (all held ones, or these ids) go back to the queue. An order text
    named by its id that waits for the order's later events (SMSDIGESTMINUTES) goes out
    now, with what it carries; the claim still keeps to the send window and the cap."""
    rows = (
        find(session, Status.HELD)
        if ids is None
        else require(session, ids, [Status.HELD, Status.QUEUED], "release")
    )
    wrong = [
        f"#{m.id} is a queued {m.event} text"
        for m in rows
        if m.status == Status.QUEUED and m.event not in ORDER_EVENTS
    ]
    if wrong:
        raise InputError(
            f"cannot release: {'; '.join(wrong)} (only held texts, and order texts waiting "
            "for the order's later updates); nothing was changed"
        )
    now = utcnow()
    for msg in rows:
        if msg.status == Status.QUEUED:
            msg.next_attempt_at = min(msg.next_attempt_at or now, now)
            msg.reason = None
            add_event(session, msg, kind="note", source=by, detail="released: goes out now")
            continue
        # A reminder step paused until its day keeps it (``pause``); others go now.
        msg.next_attempt_at = max(msg.next_attempt_at or now, now)
        set_status(session, msg, Status.QUEUED, source=by, reason=None)
        msg.reason = None
    return rows


# The reason's first word on texts a customer's "paid" reply held: only staff release them.
PAUSED = "paused"


def pause(
    session: Session, event: str, order_ref: str, subject_ref: str | None, *, reason: str, by: str
) -> list[Message]:
    """Hold the texts still queued of one subject (an invoice's reminder steps), each
    keeping its day, with ``reason`` (which starts with "paused:"); staff resume them
    with ``release``, never the worker (``release_ready``)."""
    rows = list(
        session.scalars(
            select(Message)
            .where(
                Message.event == event,
                Message.order_ref == order_ref,
                Message.subject_ref == subject_ref,
                Message.status == Status.QUEUED,
            )
            .order_by(Message.id)
        )
    )
    for msg in rows:
        set_status(session, msg, Status.HELD, source=by, reason=f"{PAUSED}: {reason}")
    return rows


def release_channel(session: Session, channel: str, *, by: str) -> list[Message]:
    """Release the held messages of one channel (e.g. after TWILIO credentials are fixed)."""
    ids = [m.id for m in find(session, Status.HELD) if m.channel == channel]
    return release(session, ids, by=by) if ids else []


def held_count(session: Session, record: str | None = None) -> int:
    """Texts held: all of them, or those held for one TWILIO record (``TWILIO``,
    ``TWILIO:WEST``: Twilio texts that go out from it). The one definition the CLI, the
    rules page and the dashboard count with."""
    held = _held_for([record]) if record is not None else (message_table.c.status == Status.HELD,)
    return int(session.scalar(select(func.count()).select_from(message_table).where(*held)) or 0)


def _held_for(records: list[str]) -> tuple[Any, ...]:
    """Texts held for these TWILIO records: Twilio texts that go out from them."""
    m = message_table.c
    return (
        m.status == Status.HELD,
        m.channel == "twilio",
        func.coalesce(m.sender, "TWILIO").in_(records),
        func.coalesce(m.reason, "").not_like(f"{PAUSED}:%"),  # a customer's "paid": staff's
    )


def release_ready(session: Session, *, by: str = "dispatch") -> list[Message]:
    """Twilio texts still held though their TWILIO record is active and not flagged go
    back to the queue. Staff's switching the record on releases what is held then; an
    outcome written a moment later (a worker that had routed the text while the record
    was off, its write delayed) would otherwise stay held for good. The worker runs
    this before each run."""
    ready = {
        name
        for name, active, flagged in session.execute(
            select(Rule.rule_type, Rule.active, Rule.rejected_at).where(
                Rule.rule_type.like("TWILIO%")
            )
        )
        if active and flagged is None
    }
    if not ready:
        return []
    m = message_table.c
    ids = list(session.scalars(select(m.id).where(*_held_for(sorted(ready))).order_by(m.id)))
    return release(session, ids, by=by) if ids else []


def cancel(
    session: Session, ids: Sequence[int], *, by: str = "staff", reason: str | None = None
) -> list[Message]:
    """Cancel queued or held messages; sent ones are past canceling."""
    rows = require(session, ids, [Status.QUEUED, Status.HELD], "cancel")
    for msg in rows:
        set_status(session, msg, Status.CANCELED, source=by, reason=reason or f"canceled by {by}")
    return rows


def cancel_for_opt_out(
    session: Session,
    *,
    numbers: Sequence[str],
    contact_refs: Sequence[str],
    reason: str,
    by: str,
    program: str | None = None,
) -> list[int]:
    """An opt-out takes effect at once: cancel the texts still queued or held for these
    numbers or contacts (``program``: of that program only) — and only those. One conditional statement, not a read then
    updates by id: a text a worker claimed in between is ``sending`` and stays so (the
    worker checks the opt-out list again right before it sends; CONTRACT.md "The email
    log tells the truth"). The ids canceled, in order."""
    conds = []
    m = message_table.c
    if numbers:
        conds.append(m.recipient.in_(list(numbers)))
    if contact_refs:
        conds.append(m.contact_ref.in_(list(contact_refs)))
    if not conds:
        return []
    waiting = and_(m.status.in_([Status.QUEUED, Status.HELD]), or_(*conds))
    if program is not None:
        waiting = and_(waiting, m.program == program)
    now = utcnow()
    values = {
        "status": Status.CANCELED,
        "reason": reason,
        "next_attempt_at": None,
        "updated_at": now,
    }
    conn = session.connection(bind_arguments={"mapper": Message})
    before = {}
    if feedback.wanted():  # what the host is told: each text's status before, its order
        cols = (m.id, m.status, m.order_number, m.contact_ref, m.event)
        before = {r.id: r for r in conn.execute(select(*cols).where(waiting))}
    if conn.dialect.update_returning:
        stmt = update(message_table).where(waiting).values(**values).returning(m.id)
        ids = sorted(conn.execute(stmt).scalars())
    else:
        # MariaDB has no UPDATE … RETURNING: lock the rows first. A row a worker is
        # claiming is waited for, then read as it is now (sending) and left alone; the
        # locked rows are then exactly the ones the UPDATE changes.
        ids = list(conn.execute(select(m.id).where(waiting).order_by(m.id).with_for_update()))
        ids = [i for (i,) in ids]
        if ids:
            conn.execute(update(message_table).where(m.id.in_(ids), waiting).values(**values))
    _wait_for_handovers(conn, or_(*conds))
    if not ids:
        return []
    conn.execute(
        insert(message_event_table),
        [_history_row(i, now, Status.CANCELED, reason, source=by) for i in ids],
    )
    for i in ids:
        if i in before:
            feedback.note(session, told_of(before[i], Status.CANCELED, before[i].status, now))
    # The host's session may hold some of these rows: they must not show the old status.
    gone = set(ids)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Message) and obj.id in gone:
            session.expire(obj)
    return ids


def _wait_for_handovers(conn: Connection, theirs: Any) -> None:
    """Before an opt-out commits: wait until no text of the number is being handed to a
    provider. A sender holds a share lock on its row across the handover and reads the
    opt-out list after taking it (``send_guard.SendGuard``), so a handover either
    finishes before this commits, or starts after and sees the opt-out. Rows in id order,
    as the recorder writes them, so the two never wait on each other in a circle. SQLite
    has no row locks (its sender reads the list right before the send)."""
    if conn.dialect.name == "sqlite":
        return
    m = message_table.c
    conn.execute(
        select(m.id).where(theirs, m.status == Status.SENDING).order_by(m.id).with_for_update()
    ).all()


def replace_plan(
    session: Session, message: Message, planned: Message, *, by: str, reason: str | None = None
) -> Message:
    """Staff retried ``message``: it takes the newly planned status, route and text
    (same idempotency key) and starts its attempts afresh. A text never changed before
    first gets a timeline line saying how it was planned (skipped, and why): the row is
    about to forget it.

    A text the provider took (it has the provider's id: undelivered, or failed at the
    provider) keeps its row as the provider left it — rewriting it would contradict
    what the provider got and orphan its late callbacks. The retry is then a new text,
    once per such row (``planned is message``: nobody to send to, only a line).
    ``reason``: why it stays as it is, when ``planned is message``.
    Returns the message that carries the retry."""
    if reason is not None and planned is message and message.provider_id is None:
        message.reason = reason
    if message.provider_id is not None:
        return _send_again(session, message, planned, by=by, note=reason)
    if not message.history:
        first = add_event(
            session,
            message,
            kind="status",
            status=message.status,
            source=PLANNED,
            detail=message.reason,
        )
        first.at = message.created_at
    for name in (
        "status",
        "reason",
        "body",
        "encoding",
        "segments",
        "channel",
        "address",
        "recipient",
        "raw_address",
        "contact_name",
        "organization_name",
        "next_attempt_at",
    ):
        setattr(message, name, getattr(planned, name))
    message.attempts = 0
    message.error_code = None
    message.provider_id = None
    add_event(
        session,
        message,
        kind="status",
        status=message.status,
        source=by,
        detail=f"retried by {by}" + (f": {message.reason}" if message.reason else ""),
    )
    return message


def _send_again(
    session: Session, message: Message, planned: Message, *, by: str, note: str | None = None
) -> Message:
    if planned is message:
        add_event(
            session,
            message,
            kind="status",
            status=message.status,
            source=by,
            detail=note or f"retried by {by}: {message.reason}",
        )
        return message
    planned.idempotency_key = f"{message.idempotency_key[:200]}:again:{message.id}"
    new = add_planned(session, [planned])
    if not new:  # retried before: the text that carries it
        earlier = session.scalar(
            select(Message).where(Message.idempotency_key == planned.idempotency_key)
        )
        assert earlier is not None
        return earlier
    add_event(
        session,
        message,
        kind="status",
        status=message.status,
        source=by,
        detail=f"retried by {by}: sent again as #{new[0].id}",
    )
    return new[0]


def apply_plan(session: Session, message: Message, row: Mapping[str, Any], *, by: str) -> bool:
    """A text not sent yet takes what its sequence step plans now (staff changed the
    steps or a switch): status, reason, text and time. False when nothing changed."""
    names = ("status", "reason", "body", "encoding", "segments", "template", "next_attempt_at")
    if all(getattr(message, n) == row[n] for n in names):
        return False
    status_changed = message.status != row["status"]
    for n in names:
        setattr(message, n, row[n])
    detail = f"planned again by {by}" + (f": {message.reason}" if message.reason else "")
    if not status_changed and message.next_attempt_at is not None:
        detail += f" (goes out {message.next_attempt_at:%Y-%m-%d %H:%M} UTC)"
    add_event(session, message, kind="status", status=message.status, source=by, detail=detail)
    return True
