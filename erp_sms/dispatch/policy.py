"""How the dispatcher paces itself: the retry policy, the run's summary, the worker's
name, and each lane's adaptive concurrency window (AIMD)."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Settings
from ..errors import (
    TransientError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again: exponential backoff with jitter, capped, up to max attempts."""

    max_attempts: int = 6
    base_seconds: float = 30.0
    max_seconds: float = 3600.0

    def delay(self, attempt: int) -> float:
        raw = min(self.max_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        return float(raw * (0.5 + random.random() / 2))  # "equal jitter"

    def allows(self, error: TransientError, attempts: int) -> bool:
        limit = self.max_attempts
        if error.max_attempts is not None:
            limit = min(limit, error.max_attempts)
        return attempts < limit

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        d = settings.dispatch
        return cls(d.max_attempts, d.backoff_base_seconds, d.backoff_max_seconds)


@dataclass
class Summary:
    """What a run did, by outcome; ``progress`` hears of each (a progress bar)."""

    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    progress: Callable[[int], object] | None = field(default=None, repr=False)

    def add(self, what: str, n: int = 1) -> None:
        with self._lock:  # the SMTP thread and the Twilio pool both count
            self.counts[what] += n
            if self.progress is not None:
                self.progress(n)

    @property
    def handled(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        order = [
            "sent",
            "retrying",
            "failed",
            "held",
            "skipped",
            "canceled",
            "rerouted",
            "released",
            "throttled",
            "lost",
            "deferred",
            "unrecorded",
        ]
        parts = [
            f"{self.counts.get(k, 0)} {k}"
            for k in order
            if self.counts.get(k, 0) or k in ("sent", "failed")
        ]
        return f"dispatch: {', '.join(parts)} in {self.seconds:.1f} s"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Window:
    """Adaptive concurrency for one lane (AIMD, as TCP does): at most ``limit`` sends in
    flight, ``limit`` starting at the channel's ``concurrency``. A throttled answer (429)
    cuts it to 0.7 of itself — once per congestion event: only a send that started after the last
    cut can cut again — and pauses new sends for the provider's Retry-After; each
    accepted send adds 1/limit back, so a full window of successes adds one."""

    #: A Retry-After up to this pauses the lane and the text stays in hand; a longer one
    #: is the text's to wait, written back as queued until then.
    MAX_PAUSE = 2.0
    #: The cut on a 429: CUBIC's 0.7 rather than Reno's 0.5 — at a hard concurrency limit
    #: of 4 the window then swings between 3 and 5, not 2 and 5 (measured in bench/).
    DECREASE = 0.7

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(self.ceiling)
        self.in_flight = 0
        self.cuts = 0
        self._generation = 0
        self._resume_at = 0.0
        self._clock = clock
        self._cond = threading.Condition()

    def acquire(self, stop: threading.Event | None = None) -> int:
        """Wait for a free slot (and the end of any pause); the generation to hand back
        to ``release``."""
        with self._cond:
            while stop is None or not stop.is_set():
                pause = self._resume_at - self._clock()
                if pause > 0:
                    self._cond.wait(min(pause, 1.0))
                elif self.in_flight < int(self.limit):
                    self.in_flight += 1
                    return self._generation
                else:
                    self._cond.wait(1.0)
            self.in_flight += 1  # stopping: the caller hands its text back
            return self._generation

    def release(
        self, generation: int, *, throttled: bool = False, retry_after: float | None = None
    ) -> None:
        with self._cond:
            self.in_flight -= 1
            if throttled:
                if generation == self._generation:
                    self.limit = max(1.0, self.limit * self.DECREASE)
                    self._generation += 1
                    self.cuts += 1
                if retry_after:
                    until = self._clock() + min(retry_after, self.MAX_PAUSE)
                    self._resume_at = max(self._resume_at, until)
            else:
                self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
            self._cond.notify_all()
