"""What a claim hands out and an outcome says, and the timeline lines every writer adds."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    insert,
)
from sqlalchemy.orm import Session

from .. import feedback
from ..db import utcnow
from ..models import (
    Message,
    MessageEvent,
    Status,
    message_event_table,
)

log = logging.getLogger(__name__)


def _json(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str)


# -- ORM side (the host's session, staff commands) -------------------------------------


def add_event(
    session: Session,
    message: Message,
    *,
    kind: str,
    source: str,
    status: str | None = None,
    detail: str | None = None,
    raw: Any = None,
) -> MessageEvent:
    ev = MessageEvent(
        kind=kind,
        status=status,
        source=source,
        detail=detail,
        raw=_json(raw),
        provider_id=message.provider_id,
        at=utcnow(),
    )
    message.history.append(ev)
    return ev


def set_status(
    session: Session,
    message: Message,
    status: str,
    *,
    source: str,
    reason: str | None = None,
    raw: Any = None,
) -> None:
    """Change a message's status and append the change to its timeline (a canceled
    text is never due again); the host is told once the session commits."""
    previous = message.status
    message.status = status
    if reason is not None:
        message.reason = reason
    if status == Status.QUEUED:
        message.next_attempt_at = message.next_attempt_at or utcnow()
    elif status == Status.CANCELED:
        message.next_attempt_at = None  # never due again
    add_event(session, message, kind="status", status=status, source=source, detail=reason, raw=raw)
    if previous != status and message.id is not None and feedback.wanted():
        feedback.note(session, told_of(message, status, previous))


def told_of(row: Any, status: str, previous: str | None, at: dt.datetime | None = None) -> Any:
    """What the host is told of ``row`` (a message, or a row with its columns) moving
    from ``previous`` to ``status``."""
    return feedback.status_changed(
        message_id=row.id,
        order_number=row.order_number,
        contact_key=row.contact_ref,
        event=row.event,
        status=status,
        previous_status=previous,
        at=at or utcnow(),
    )


# -- dispatch side (own short transactions) --------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A message claimed for sending: everything the channel needs, detached from any
    session."""

    id: int
    token: str
    channel: str | None
    address: str | None
    raw_address: str | None
    body: str
    attempts: int
    claimed_at: dt.datetime
    contact_ref: str | None
    contact_name: str | None
    order_number: str
    reclaimed_after: dt.datetime | None  # the earlier claim's time, when its lease expired
    event: str = ""
    program: str | None = None  # the consent it needs (checked again before the handover)
    created_at: dt.datetime | None = None
    segments: int | None = None
    recipient: str | None = None  # E.164
    maybe_sent: bool = False  # the previous attempt may have reached the provider
    sender: str | None = None  # the TWILIO record to send from (None: TWILIO)
    # When the text stops being worth sending (an order text's SMSSTALEHOURS): a channel
    # whose provider queues texts tells it, so that a text stuck there expires too.
    valid_until: dt.datetime | None = None

    @property
    def may_have_been_sent(self) -> bool:
        """An earlier attempt may have reached the provider (lease lost, timeout, dropped
        connection, unreadable answer): look before sending again."""
        return self.reclaimed_after is not None or self.maybe_sent


@dataclass(frozen=True)
class Outcome:
    """What happened to a claimed message."""

    status: str
    reason: str | None = None
    provider_id: str | None = None
    provider_status: str | None = None
    error_code: int | None = None
    segments: int | None = None
    price: str | None = None
    price_unit: str | None = None
    next_attempt_at: dt.datetime | None = None
    channel: str | None = None
    address: str | None = None
    raw: Any = None
    detail: str | None = None  # for the timeline, when it differs from reason
    released: bool = False  # handed back unsent (worker shutdown): the attempt does not count
    callbacks: bool = False  # status callbacks may have come in before this outcome
    maybe_sent: bool = False  # for a retry: the provider may have it; ask before re-sending


def new_token(worker_id: str) -> str:
    return f"{worker_id[:48]}:{uuid.uuid4().hex[:12]}"


def _history(
    conn: Any, message_id: int, at: dt.datetime, status: str, detail: str | None, **more: Any
) -> None:
    """One status line of a message's timeline, from the dispatcher's own transaction."""
    conn.execute(
        insert(message_event_table).values(_history_row(message_id, at, status, detail, **more))
    )


def _history_row(
    message_id: int, at: dt.datetime, status: str | None, detail: str | None, **more: Any
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "at": at,
        "kind": "status",
        "status": status,
        "source": more.pop("source", "dispatch"),
        "detail": detail,
        **more,
    }


@contextlib.contextmanager
def _begun(conn: Connection) -> Iterator[Connection]:
    with conn.begin():
        yield conn
