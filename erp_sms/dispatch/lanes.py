"""Lanes: one per channel, each with its own threads and window; a text handed to a
lane is in flight until its outcome is handed to the recorder."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from ..channels.base import Channel
from ..db import one_line
from ..outbox import Claimed
from .policy import Window

log = logging.getLogger(__name__)


class _Owner(Protocol):
    """What a lane needs of the dispatcher: the loop that sends a lane's texts."""

    def _lane_worker(self, channel: Channel | None, lane: _Lane) -> None: ...


class _Lane:
    """One channel's senders for a run: a queue of texts, ``concurrency`` threads each
    with its own channel instance, and — once the provider rejected the channel's
    configuration — the reason the rest of its texts are held, not sent."""

    def __init__(self, owner: _LaneSet, factory: Callable[[], Channel]) -> None:
        self.owner = owner
        self.factory = factory
        self.pending: queue.SimpleQueue[Claimed | None] = queue.SimpleQueue()
        self.rejected: str | None = None
        first: Channel | None
        try:
            first = factory()
        except Exception as exc:  # each sender tries again; texts are held or released
            log.error("cannot set up a channel: %s", one_line(exc))
            first = None
        self.window = Window(first.concurrency if first else 1)
        self.threads = [
            threading.Thread(
                target=owner.dispatcher._lane_worker,
                args=(first if i == 0 else None, self),
                daemon=True,
                name="erp-sms-sender",
            )
            for i in range(max(1, first.concurrency if first else 1))
        ]
        for t in self.threads:
            t.start()

    def reject(self, reason: str) -> None:
        self.rejected = self.rejected or reason

    def requeue(self, msg: Claimed) -> None:
        """Back into the queue (throttled): still in hand, its lease renewed."""
        self.owner.add_outstanding()
        self.pending.put(msg)

    def close(self) -> None:
        for _ in self.threads:
            self.pending.put(None)
        for t in self.threads:
            t.join()


class _LaneSet:
    """The lanes of one run, created on a channel's first text, and the count of texts
    handed to them and not yet through."""

    def __init__(self, dispatcher: _Owner) -> None:
        self.dispatcher = dispatcher
        self.lanes: dict[str, _Lane] = {}
        self._outstanding = 0
        self._cond = threading.Condition()

    def submit(self, name: str, factory: Callable[[], Channel], msg: Claimed) -> None:
        lane = self.lanes.get(name)
        if lane is None:
            lane = self.lanes[name] = _Lane(self, factory)
        self.add_outstanding()
        lane.pending.put(msg)

    def add_outstanding(self) -> None:
        with self._cond:
            self._outstanding += 1

    def done_one(self) -> None:
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    @property
    def idle(self) -> bool:
        with self._cond:
            return self._outstanding == 0

    def wait_until_fewer_than(self, n: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._outstanding < n)

    def close(self) -> None:
        """Let every text handed in go through (a throttled one comes back into its
        queue), then stop the senders."""
        self.wait_until_fewer_than(1)
        for lane in self.lanes.values():
            lane.close()
