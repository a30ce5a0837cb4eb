"""The recorder: outcomes written from one thread, whatever piled up in one transaction
(group commit), so a commit overlaps the next sends instead of following each one."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
from typing import Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from .. import outbox
from ..config import Settings
from ..db import Database, one_line
from ..outbox import Claimed, Outcome

log = logging.getLogger(__name__)


class _Writer(Protocol):
    """What the recorder needs of the dispatcher."""

    db: Database
    settings: Settings

    def _write(self, records: list[_Record]) -> None: ...


#: 429s a text in hand may get before it is written back as queued for its Retry-After.
THROTTLED_IN_HAND = 5


class _Record:
    """One outcome on its way to the database; ``wait`` gives whether it was recorded
    (False: the claim was lost; None: the database never took it)."""

    __slots__ = ("_done", "_result", "msg", "outcome", "what")

    def __init__(self, msg: Claimed, outcome: Outcome, what: str) -> None:
        self.msg, self.outcome, self.what = msg, outcome, what
        self._done = threading.Event()
        self._result: bool | None = None

    def settle(self, result: bool | None) -> None:
        self._result = result
        self._done.set()

    def wait(self) -> bool | None:
        self._done.wait()
        return self._result

    @property
    def done(self) -> bool:
        return self._done.is_set()


class _Recorder:
    """Writes outcomes from one thread: whatever has piled up while the last write was
    going on is written next, in one transaction (group commit) — so a commit overlaps
    the next sends instead of following each one."""

    GROUP = 200  # outcomes per transaction at most

    def __init__(self, dispatcher: _Writer) -> None:
        self._dispatcher = dispatcher
        self._queue: queue.SimpleQueue[_Record | None] = queue.SimpleQueue()
        self._last: _Record | None = None
        self.submitted = 0  # outcomes handed in so far
        self._conn: Connection | None = None
        self._auto: Connection | None = None  # autocommit, for one-statement groups
        self._thread = threading.Thread(target=self._run, daemon=True, name="erp-sms-recorder")
        self._thread.start()

    def submit(self, msg: Claimed, outcome: Outcome, what: str) -> _Record:
        record = _Record(msg, outcome, what)
        self._last = record
        self.submitted += 1
        self._queue.put(record)
        return record

    @property
    def idle(self) -> bool:
        return self._last is None or self._last.done

    def flush(self) -> None:
        """Wait until every outcome handed in so far is written (or given up)."""
        if self._last is not None:
            self._last.wait()

    def close(self) -> None:
        """Write what is left, then stop."""
        self._queue.put(None)
        self._thread.join()
        self._drop()

    def write(self, items: list[tuple[Claimed, Outcome]], now: dt.datetime) -> set[int]:
        """One transaction on the recorder's own connection, kept for the run (no pool
        checkout and liveness ping per group); dropped after any database error, so the
        next try connects afresh."""
        engine = self._dispatcher.db.engine
        try:
            # The one-statement group write has no room for the host's outbox rows, which
            # must be written in the same transaction as the outcomes they tell.
            alone = not self._dispatcher.settings.host_webhook_url
            if (
                alone
                and engine.dialect.name == "postgresql"
                and not any(o.callbacks for _c, o in items)
            ):
                if self._auto is None:
                    self._auto = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                return outbox.finish_many_at_once(self._auto, items, now=now)
            if self._conn is None:
                self._conn = engine.connect()
            return outbox.finish_many(self._conn, items, now=now)
        except SQLAlchemyError:
            self._drop()
            raise

    def _drop(self) -> None:
        for conn in (self._conn, self._auto):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._conn = self._auto = None

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                group.append(more)
            try:
                self._dispatcher._write(group)
            except Exception as exc:  # a bug of ours: the rows come back after their lease
                log.error("cannot record %d outcome(s): %s", len(group), one_line(exc))
                for r in group:
                    r.settle(None)
