"""What the operator's tools agree on: when a worker was last seen and how long the
oldest due text has waited — read the same way by ``erp-sms doctor``, ``/metrics`` and
the dashboard (one rule, one place)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Message, Status, Worker

#: A worker that has not said it is alive for this long is taken as gone. It beats every
#: ``BEAT_SECONDS`` while it runs (dispatch/heartbeat.py), and between its polls.
GONE_AFTER = dt.timedelta(seconds=90)


@dataclass(frozen=True)
class Pulse:
    """The dispatch side of the house at ``now``."""

    now: dt.datetime
    worker_seen: dt.datetime | None  # the newest heartbeat of a worker not stopped
    workers_alive: int  # seen within GONE_AFTER and not stopped
    oldest_due: dt.datetime | None  # the oldest queued text's due time, if it is due

    @property
    def worker_age(self) -> float | None:
        """Seconds since a worker was last seen (None: never)."""
        if self.worker_seen is None:
            return None
        return max((self.now - self.worker_seen).total_seconds(), 0.0)

    @property
    def due_age(self) -> float:
        """Seconds the oldest due text has waited (0: none waits)."""
        if self.oldest_due is None:
            return 0.0
        return max((self.now - self.oldest_due).total_seconds(), 0.0)


def pulse(session: Session, now: dt.datetime) -> Pulse:
    """Two reads, each bounded by a key or an index (the worker table has a row per
    worker name; the due text by ``status, next_attempt_at``)."""
    seen = session.scalar(select(func.max(Worker.seen_at)).where(Worker.stopped_at.is_(None)))
    alive = session.scalar(
        select(func.count()).where(Worker.stopped_at.is_(None), Worker.seen_at >= now - GONE_AFTER)
    )
    oldest = session.scalar(
        select(func.min(Message.next_attempt_at)).where(
            Message.status == Status.QUEUED, Message.next_attempt_at <= now
        )
    )
    return Pulse(now, _aware(seen), int(alive or 0), _aware(oldest))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # func.max/min come back as the driver gives them (naive on SQLite): UTC, as stored.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def duration(seconds: float) -> str:
    """How long, in words: "4 s", "3 min", "2 h", "5 days"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def ago(seconds: float | None) -> str:
    """When, in words: "4 s ago", "3 min ago", or "never"."""
    return "never" if seconds is None else f"{duration(seconds)} ago"


def due_count(session: Session, now: dt.datetime) -> int:
    """How many queued texts are due at ``now`` (the claim's own index)."""
    return int(
        session.scalar(
            select(func.count()).where(
                Message.status == Status.QUEUED, Message.next_attempt_at <= now
            )
        )
        or 0
    )
