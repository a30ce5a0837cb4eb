"""Dispatch: claim due messages, send them outside any transaction, record the outcome.

``Dispatcher.run_once()`` delivers what is due and returns a summary (``erp-sms
dispatch``); ``Dispatcher.run_forever()`` keeps going until asked to stop (``erp-sms
worker``, SIGTERM/SIGINT), finishing the message in hand and handing back the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from . import channels, consent, outbox
from .addresses import mask
from .channels.base import Channel, SendResult
from .config import Settings, get_settings
from .db import Database, one_line, utcnow
from .errors import (
    ChannelConfigurationError,
    ConfigurationError,
    DeliveryError,
    InputError,
    OptedOutError,
    PermanentError,
    TransientError,
)
from .models import Status
from .outbox import Claimed, Outcome
from .send_guard import OptedOutMeanwhile, SendGuard

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
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, n: int = 1) -> None:
        with self._lock:  # the SMTP thread and the Twilio pool both count
            self.counts[what] += n

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


class Dispatcher:
    """Delivers due messages from the outbox in ``db``.

    ``clock`` (UTC now) and ``wait`` (a pause between tries to record an outcome) are
    injectable for tests; both default to the real ones.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings | None = None,
        *,
        worker_id: str | None = None,
        retry: RetryPolicy | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        wait: Callable[[float], None] = time.sleep,
    ) -> None:
        from .host import load_host_module

        self.db = db
        self.settings = settings or get_settings()
        load_host_module(self.settings)  # 21610 opt-outs go through the host's lookup
        self.worker_id = worker_id or default_worker_id()
        self.retry = retry or RetryPolicy.from_settings(self.settings)
        self.stop = stop or threading.Event()
        self.clock = clock
        self._wait = wait
        self._in_hand: dict[int, Claimed] = {}  # claimed, outcome not recorded yet
        self._in_hand_lock = threading.Lock()
        # When each text in hand was last known ours: claimed, or renewed by the heartbeat.
        self._confirmed: dict[int, dt.datetime] = {}
        self._throttles: dict[int, int] = {}  # 429s per text in hand
        self._recorder: _Recorder
        self._summary = Summary()
        # Numbers that opted out (21610) during this worker's life: other texts to them,
        # already claimed in the same batch, are canceled instead of sent.
        self._opted_out: set[str] = set()
        self._guard: SendGuard | None = None  # the opt-out check around each handover

    @property
    def lease_seconds(self) -> float:
        return self.settings.dispatch.lease_seconds

    # -- the loop -------------------------------------------------------------------------

    def run_once(self, *, max_batches: int | None = None) -> Summary:
        """Deliver everything that is due now, then return.

        Texts are claimed batch by batch, but sending is continuous: each channel's
        senders (and their clients and connection pools) live for the whole run and the
        next batch is claimed while the last one is still going out, so the provider
        always has ``concurrency`` requests in flight. Outcomes are written by one
        recorder thread, in groups."""
        summary = Summary()
        started = time.monotonic()
        self._release_ready()
        recorder = _Recorder(self)
        lanes = _LaneSet(self)
        beat_done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(beat_done,), daemon=True, name="erp-sms-heartbeat"
        )
        self._recorder, self._summary = recorder, summary
        beat.start()
        batches = 0
        try:
            while not self.stop.is_set():
                seen = recorder.submitted
                now = self.clock()
                claimed = outbox.claim_due(
                    self.db,
                    self.worker_id,
                    limit=self.batch_limit(),
                    lease_seconds=self.lease_seconds,
                    now=now,
                )
                if not claimed:
                    if lanes.idle and recorder.idle:
                        if recorder.submitted != seen:
                            # An outcome written after `now` was read (a retry due at
                            # once): claim again with a fresh clock before stopping.
                            continue
                        break
                    # What is still going out may come back due now (a retry without
                    # backoff, a text handed back): claim again once it is recorded.
                    lanes.wait_until_fewer_than(1)
                    recorder.flush()
                    continue
                self._route_batch(claimed, lanes, now)
                batches += 1
                if max_batches is not None and batches >= max_batches:
                    break
                # Claim the next batch while this one's tail is still going out.
                lanes.wait_until_fewer_than(max(1, self.batch_limit() // 2))
        finally:
            lanes.close()
            recorder.close()
            beat_done.set()
            beat.join()
            if self._guard is not None:
                self._guard.close()
                self._guard = None
            self._adopt_kept_reports()
        summary.seconds = time.monotonic() - started
        return summary

    def _release_ready(self) -> None:
        try:
            with self.db.session() as s:
                released = outbox.release_ready(s, by=f"worker {self.worker_id}")
        except SQLAlchemyError as exc:
            log.warning("cannot release texts held for TWILIO (%s); next run", one_line(exc))
            return
        if released:
            log.info(
                "released %d text(s) held for a TWILIO record that is active again",
                len(released),
            )

    def _adopt_kept_reports(self) -> None:
        """Status reports kept because they came before their send's outcome are
        attached by whichever of the two commits last; should both have failed to (the
        database went away right after a commit), the end of each run attaches them."""
        try:
            outbox.adopt_callbacks(self.db, None)
        except SQLAlchemyError as exc:
            log.warning("cannot attach kept status reports (%s); next run", one_line(exc))

    def batch_limit(self) -> int:
        """How many messages to claim at once: the batch size, but never more than
        pacing lets out within half a lease (the rest would wait on the heartbeat)."""
        d = self.settings.dispatch
        rate = d.rate_per_second or (1.0 if d.pace_by_sender else 0.0)  # the slowest sender
        if rate <= 0:
            return d.batch_size
        return max(1, min(d.batch_size, int(d.lease_seconds * rate / 2)))

    def run_forever(self, on_batch: Callable[[Summary], None] | None = None) -> None:
        """Keep delivering until ``self.stop`` is set."""
        log.info("worker %s started", self.worker_id)
        while not self.stop.is_set():
            try:
                summary = self.run_once()
            except Exception as exc:
                # The database went away, say. Claimed rows come back after their lease;
                # the worker keeps going rather than dying.
                log.error(
                    "worker %s: dispatch failed (%s); trying again",
                    self.worker_id,
                    one_line(exc),
                )
                self.stop.wait(max(self.settings.dispatch.poll_seconds, 1.0))
                continue
            if summary.handled and on_batch:
                on_batch(summary)
            if not summary.handled:
                self.stop.wait(self.settings.dispatch.poll_seconds)
        log.info("worker %s stopped", self.worker_id)

    # -- leases ---------------------------------------------------------------------------

    def renew_leases(self) -> int:
        """The heartbeat: extend the lease of every text this worker holds and has not
        finished; the number renewed. A text whose claim was lost is dropped from the
        hand (its new owner decides)."""
        with self._in_hand_lock:
            claims = list(self._in_hand.values())
        if not claims:
            return 0
        now = self.clock()
        try:
            held, taken = outbox.renew_leases(self.db, claims, lease_seconds=self.lease_seconds)
        except SQLAlchemyError as exc:
            log.warning("worker %s: cannot renew leases: %s", self.worker_id, one_line(exc))
            return 0
        with self._in_hand_lock:
            for mid in held:
                if mid in self._in_hand:
                    self._confirmed[mid] = now
        if taken:
            log.warning(
                "worker %s: lost the claim on %s (its lease ran out and another worker took it)",
                self.worker_id,
                sorted(taken),
            )
        return len(held)

    def _heartbeat(self, done: threading.Event) -> None:
        interval = max(self.lease_seconds / 3, 0.05)
        while not done.wait(interval):
            self.renew_leases()

    # -- one batch ------------------------------------------------------------------------

    def _route_batch(self, claimed: list[Claimed], lanes: _LaneSet, at: dt.datetime) -> None:
        """Route each claimed text with today's rules and hand it to its channel's lane
        (or record the outcome that replaces sending it). ``at``: by this worker's clock,
        a moment before the claim."""
        with self._in_hand_lock:
            for c in claimed:
                self._in_hand[c.id] = c
                self._confirmed[c.id] = at
        with self.db.session() as s:
            prepared = channels.prepare(s, self.settings)
        for msg in claimed:
            decided = prepared.decide(msg)
            if isinstance(decided, Outcome):
                self._finish(msg, decided, decided.status)
                continue
            if decided is not msg:
                self._summary.add("rerouted")
                log.info(
                    "message %s rerouted %s -> %s",
                    msg.id,
                    msg.channel,
                    decided.channel,
                    extra={"message_id": msg.id},
                )
            name = prepared.lane_for(decided)
            lanes.submit(name, prepared.factories[name], decided)

    def _lane_worker(self, channel: Channel | None, lane: _Lane) -> None:
        """One sender of a lane: takes texts until the lane closes."""
        try:
            channel = channel or lane.factory()
            channel.open()
        except ConfigurationError as exc:
            lane.reject(exc.message)
            channel = None
        except Exception as exc:  # a channel that cannot even start: its texts wait
            log.error("cannot open a channel: %s", one_line(exc))
            channel = None
        previous: list[_Record] = []  # this sender's last outcome, for the barrier
        if channel is not None:
            channel.handover_barrier = lambda: self._barrier(previous)
        try:
            while True:
                msg = lane.pending.get()
                if msg is None:
                    return
                try:
                    if lane.rejected is not None:
                        outcome = Outcome(Status.HELD, reason=lane.rejected)
                        previous[:] = [self._finish(msg, outcome, "held")]
                    elif self.stop.is_set() or channel is None:
                        previous[:] = [self._release(msg)]
                    else:
                        record = self._send_one(channel, msg, lane)
                        if record is not None:
                            previous[:] = [record]
                except Exception as exc:  # a bug of ours: the row comes back after its lease
                    log.error(
                        "message %s: unexpected error (%s); it is retried after its lease",
                        msg.id,
                        one_line(exc),
                        extra={"message_id": msg.id},
                    )
                    self._summary.add("deferred")
                finally:
                    lane.owner.done_one()
        finally:
            if channel is not None:
                with contextlib.suppress(Exception):
                    channel.close()

    def _barrier(self, previous: list[_Record]) -> None:
        if previous and previous[0].wait() is None:
            raise TransientError(
                "the outcome of the text before could not be recorded; not sending more "
                "until the database takes it",
                provider="erp-sms",
            )

    # -- one text -------------------------------------------------------------------------

    def _send_one(self, channel: Channel, msg: Claimed, lane: _Lane) -> _Record | None:
        if msg.recipient is not None and msg.recipient in self._opted_out:
            reason = f"canceled: {msg.recipient} opted out (twilio_21610) before it was sent"
            return self._finish(msg, Outcome(Status.CANCELED, reason=reason), "canceled")
        if not self._still_mine(msg):
            return None
        if self.stop.is_set():
            return self._release(msg)
        try:
            result = self._deliver_in_window(channel, msg, lane.window)
        except OptedOutMeanwhile as stopped:
            outcome = Outcome(Status.CANCELED, reason=stopped.reason)
            return self._finish(msg, outcome, "canceled")
        except ChannelConfigurationError as exc:
            log.error("message %s held: %s", msg.id, exc.message, extra={"message_id": msg.id})
            error = exc
            flagged = self._with_db(
                self._in_session(lambda s: channel.rejected(s, error)),
                f"flag the {channel.name} record",
            )
            lane.reject(flagged or exc.message)
            return self._finish(
                msg,
                Outcome(Status.HELD, reason=lane.rejected, error_code=exc.code),
                "held",
            )
        except OptedOutError as exc:
            record = self._finish(msg, self._failed(exc, msg), "failed")
            self._opt_out(msg, exc)
            return record
        except TransientError as exc:
            return self._on_transient(channel, msg, exc, lane)
        except DeliveryError as exc:  # permanent, or any other channel error: not retried
            return self._finish(msg, self._failed(exc, msg), "failed")
        return self._record_sent(msg, result)

    def _still_mine(self, msg: Claimed) -> bool:
        """The claim check right before a send: a worker that lost its claim (a lease
        that ran out while the database was away) must not send what another now has.

        While this worker's own lease on the text is known good for half a lease more
        (claimed or renewed by the heartbeat less than half a lease ago, by this worker's
        clock: only time elapsed on it counts, so its offset does not matter) nothing is
        asked; otherwise one conditional UPDATE proves the claim. Leases run out by the
        database's clock alone, so no worker's clock lets another take the text early."""
        now = self.clock()
        with self._in_hand_lock:
            confirmed = self._confirmed.get(msg.id, msg.claimed_at)
        if now < confirmed + dt.timedelta(seconds=self.lease_seconds / 2):
            return True
        try:
            mine = outbox.confirm_claim(self.db, msg, lease_seconds=self.lease_seconds)
        except SQLAlchemyError as exc:
            log.warning(
                "message %s not sent: cannot confirm the claim (%s); it is retried after its lease",
                msg.id,
                one_line(exc),
                extra={"message_id": msg.id},
            )
            self._summary.add("deferred")
            return False
        if not mine:
            log.warning(
                "message %s not sent: another worker claimed it after this one's lease ran out",
                msg.id,
                extra={"message_id": msg.id},
            )
            self._summary.add("lost")
        else:
            with self._in_hand_lock:
                self._confirmed[msg.id] = now
        return mine

    def _deliver_in_window(self, channel: Channel, msg: Claimed, window: Window) -> SendResult:
        """``_deliver`` inside the lane's adaptive window (see ``Window``)."""
        generation = window.acquire(self.stop)
        throttled: TransientError | None = None
        try:
            return self._deliver(channel, msg)
        except TransientError as exc:
            throttled = exc if exc.throttled else None
            raise
        finally:
            window.release(
                generation,
                throttled=throttled is not None,
                retry_after=throttled.retry_after if throttled else None,
            )

    def _deliver(self, channel: Channel, msg: Claimed) -> SendResult:
        """Send ``msg``, unless the provider already has an earlier attempt or the text
        has been tried too often (a worker died with it in hand, again and again)."""
        if msg.may_have_been_sent:
            previous = channel.find_previous_send(msg)
            if previous is not None:
                log.warning(
                    "message %s: the earlier attempt reached the provider (%s); not sending again",
                    msg.id,
                    previous.provider_id,
                    extra={"message_id": msg.id},
                )
                return replace(
                    previous, detail="found the earlier send at the provider; not sent again"
                )
        if msg.attempts > self.retry.max_attempts:
            raise PermanentError(
                f"gave up after {msg.attempts - 1} attempt(s): the worker sending it stopped "
                "answering each time"
            )
        if self._guard is None:
            with self._in_hand_lock:
                if self._guard is None:
                    self._guard = SendGuard(self.db, self.settings)
        try:
            # The previous text's outcome first (SMTP's barrier; it then passes at once
            # before the final dot): a sender holding the guard's lock while it waits for
            # the recorder would close a circle with an opt-out that holds that text's row
            # and waits for this lock.
            if channel.uses_handover_barrier:
                channel.before_handover()
            with self._guard.clear_to_send(msg):
                return channel.send(msg)
        except (DeliveryError, ConfigurationError, OptedOutMeanwhile):
            raise
        except Exception as exc:  # a channel bug must not kill the sending thread
            log.error(
                "message %s: %s failed unexpectedly: %s",
                msg.id,
                channel.name,
                one_line(exc),
                extra={"message_id": msg.id},
            )
            raise TransientError(
                f"{channel.name} failed unexpectedly ({type(exc).__name__})", maybe_sent=True
            ) from exc

    def _on_transient(
        self, channel: Channel, msg: Claimed, exc: TransientError, lane: _Lane
    ) -> _Record | None:
        if (
            exc.throttled
            and (exc.retry_after or 0.0) <= Window.MAX_PAUSE
            and self._throttled_in_hand(msg) <= THROTTLED_IN_HAND
        ):
            # We sent too fast: the window has shrunk and paused for Retry-After; the text
            # stays in hand (its lease renewed) and goes again — no write, no attempt used.
            lane.requeue(msg)
            return None
        if exc.throttled:
            # The provider asked us to slow down: our doing, not the text's — the attempt
            # does not count, and the text waits as long as the provider said.
            wait = exc.retry_after if exc.retry_after is not None else self.retry.delay(1)
            outcome = Outcome(
                Status.QUEUED,
                reason=f"throttled by the provider, will retry: {exc.message}",
                next_attempt_at=self.clock() + dt.timedelta(seconds=wait),
                error_code=exc.code,
                channel=msg.channel,
                address=msg.address,
                released=True,
                maybe_sent=msg.may_have_been_sent,
            )
            return self._finish(msg, outcome, "throttled")
        if self.retry.allows(exc, msg.attempts):
            when = self.clock() + dt.timedelta(seconds=self.retry.delay(msg.attempts))
            outcome = Outcome(
                Status.QUEUED,
                reason=f"attempt {msg.attempts} failed, will retry: {exc.message}",
                next_attempt_at=when,
                error_code=exc.code,
                channel=msg.channel,
                address=msg.address,
                maybe_sent=exc.maybe_sent or msg.may_have_been_sent,
            )
            return self._finish(msg, outcome, "retrying")
        reason = f"gave up after {msg.attempts} attempt(s): {exc.message}"
        if exc.maybe_sent:
            # "No answer" is not "not sent": ask the provider before calling it failed.
            try:
                previous = channel.find_previous_send(msg)
            except (DeliveryError, ConfigurationError) as lookup:
                previous = None
                reason += f"; could not check the provider for it ({lookup.message})"
            if previous is not None:
                detail = "the last attempt got no answer, but the provider has it: sent"
                return self._record_sent(msg, replace(previous, detail=detail))
        return self._finish(
            msg,
            Outcome(
                Status.FAILED,
                reason=reason,
                error_code=exc.code,
                channel=msg.channel,
                address=msg.address,
            ),
            "failed",
        )

    def _throttled_in_hand(self, msg: Claimed) -> int:
        with self._in_hand_lock:
            self._throttles[msg.id] = self._throttles.get(msg.id, 0) + 1
            return self._throttles[msg.id]

    @staticmethod
    def _failed(exc: DeliveryError, msg: Claimed | None = None) -> Outcome:
        return Outcome(
            Status.FAILED,
            reason=exc.message,
            error_code=exc.code,
            channel=msg.channel if msg else None,
            address=msg.address if msg else None,
        )

    def _record_sent(self, msg: Claimed, result: SendResult) -> _Record:
        outcome = Outcome(
            Status.SENT,
            provider_id=result.provider_id,
            provider_status=result.provider_status,
            segments=result.segments,
            price=result.price,
            price_unit=result.price_unit,
            channel=msg.channel,
            address=msg.address,
            raw=result.raw,
            callbacks=result.callbacks,
            detail=result.detail or f"accepted by {msg.channel} ({result.provider_status or 'ok'})",
        )
        return self._finish(msg, outcome, "sent")

    # -- recording ------------------------------------------------------------------------

    def _finish(self, msg: Claimed, outcome: Outcome, what: str) -> _Record:
        """Hand ``outcome`` to the recorder, which writes it with others in one
        transaction (trying again while the database is away: after the provider
        accepted a text, losing its outcome means sending it twice)."""
        return self._recorder.submit(msg, outcome, what)

    def _write(self, records: list[_Record]) -> None:
        """The recorder's work: one transaction for a group of outcomes."""
        items = [(r.msg, r.outcome) for r in records]
        what = (
            f"record message {records[0].msg.id} as {records[0].outcome.status}"
            if len(records) == 1
            else f"record {len(records)} outcomes"
        )
        done = self._with_db(lambda: self._recorder.write(items, self.clock()), what)
        with self._in_hand_lock:
            for r in records:
                self._in_hand.pop(r.msg.id, None)
                self._confirmed.pop(r.msg.id, None)
                self._throttles.pop(r.msg.id, None)
        for r in records:
            recorded = None if done is None else r.msg.id in done
            if recorded is None:
                self._summary.add("unrecorded")
            elif not recorded:
                self._summary.add("lost")
            else:
                self._summary.add(r.what)
            r.settle(recorded)

    def _in_session(self, work: Callable[[Session], _T]) -> Callable[[], _T]:
        """``work`` in a session of its own, committed."""

        def run() -> _T:
            with self.db.session() as s:
                return work(s)

        return run

    def _with_db(self, work: Callable[[], _T], what: str) -> _T | None:
        """Run ``work`` until the database takes it: backoff from 50 ms to 5 s, for up to
        ``record_patience`` seconds; None if it never did (logged as an error). Never
        raises a database error."""
        delay, waited, tries = 0.05, 0.0, 0
        while True:
            tries += 1
            try:
                return work()
            except SQLAlchemyError as exc:
                if waited >= self.record_patience:
                    log.error(
                        "worker %s: could not %s after %d tries: %s",
                        self.worker_id,
                        what,
                        tries,
                        one_line(exc),
                    )
                    return None
                log.warning(
                    "worker %s: could not %s (%s); trying again",
                    self.worker_id,
                    what,
                    one_line(exc),
                )
                self._wait(delay)
                waited += delay
                delay = min(delay * 2, 5.0)

    @property
    def record_patience(self) -> float:
        """How long to keep trying to record an outcome: as long as a lease lasts."""
        return max(self.lease_seconds, 1.0)

    def _release(self, msg: Claimed) -> _Record:
        outcome = Outcome(
            Status.QUEUED,
            reason=None,
            detail="handed back at worker shutdown",
            next_attempt_at=self.clock(),
            released=True,
            maybe_sent=msg.maybe_sent,
        )
        return self._finish(msg, outcome, "released")

    def _opt_out(self, msg: Claimed, exc: DeliveryError) -> None:
        """The provider says the recipient opted out (Twilio 21610: they replied STOP
        there) — record it here too: the number, its contacts, and their other texts still
        queued or held."""
        number = msg.recipient or msg.address
        if number:
            self._opted_out.add(number)

        def record(s: Session) -> None:
            try:
                with s.begin_nested():
                    consent.opt_out(
                        s,
                        contact_key=msg.contact_ref,
                        number=number,
                        source=source,
                        detail=exc.message,
                    )
            except InputError:  # the contact is gone: the number is still opted out
                consent.opt_out(s, number=number, source=source, detail=exc.message)

        source = f"{exc.provider}_{exc.code}" if exc.code else exc.provider
        self._with_db(self._in_session(record), f"record the opt-out of {mask(number or '')}")
        log.info(
            "contact %s opted out (%s) for %s",
            msg.contact_ref,
            exc.code,
            mask(msg.address),
            extra={"message_id": msg.id},
        )


_T = TypeVar("_T")


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

    def __init__(self, dispatcher: Dispatcher) -> None:
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
            if engine.dialect.name == "postgresql" and not any(o.callbacks for _c, o in items):
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

    def __init__(self, dispatcher: Dispatcher) -> None:
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
