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

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from . import channels, outbox
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
        # Numbers that opted out (21610) during this worker's life: other texts to them,
        # already claimed in the same batch, are canceled instead of sent.
        self._opted_out: set[str] = set()

    @property
    def lease_seconds(self) -> float:
        return self.settings.dispatch.lease_seconds

    # -- the loop -------------------------------------------------------------------------

    def run_once(self, *, max_batches: int | None = None) -> Summary:
        """Deliver everything that is due now (batch by batch), then return."""
        summary = Summary()
        started = time.monotonic()
        batches = 0
        while not self.stop.is_set():
            claimed = outbox.claim_due(
                self.db,
                self.worker_id,
                limit=self.batch_limit(),
                lease_seconds=self.lease_seconds,
                now=self.clock(),
            )
            if not claimed:
                break
            self._deliver_batch(claimed, summary)
            batches += 1
            if max_batches is not None and batches >= max_batches:
                break
        summary.seconds = time.monotonic() - started
        return summary

    def batch_limit(self) -> int:
        """How many messages to claim at once: the batch size, but never more than
        pacing lets out within half a lease (the rest would wait on the heartbeat)."""
        d = self.settings.dispatch
        if d.rate_per_second <= 0:
            return d.batch_size
        return max(1, min(d.batch_size, int(d.lease_seconds * d.rate_per_second / 2)))

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
        try:
            held = outbox.renew_leases(
                self.db, claims, lease_seconds=self.lease_seconds, now=self.clock()
            )
        except SQLAlchemyError as exc:
            log.warning("worker %s: cannot renew leases: %s", self.worker_id, one_line(exc))
            return 0
        lost = [c.id for c in claims if c.id not in held]
        if lost:
            log.warning("worker %s: lost the claim on %s (its lease ran out)", self.worker_id, lost)
        return len(held)

    def _heartbeat(self, done: threading.Event) -> None:
        interval = max(self.lease_seconds / 3, 0.05)
        while not done.wait(interval):
            self.renew_leases()

    # -- one batch ------------------------------------------------------------------------

    def _deliver_batch(self, claimed: list[Claimed], summary: Summary) -> None:
        with self._in_hand_lock:
            self._in_hand.update((c.id, c) for c in claimed)
        done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(done,), daemon=True, name="erp-sms-heartbeat"
        )
        beat.start()
        try:
            with self.db.session() as s:
                lanes = channels.prepare(s, self.settings)
            jobs: dict[str, list[Claimed]] = {}
            for msg in claimed:
                decided = lanes.decide(msg)
                if isinstance(decided, Outcome):
                    self._finish(msg, decided, summary, decided.status)
                    continue
                if decided is not msg:
                    summary.add("rerouted")
                    log.info(
                        "message %s rerouted %s -> %s",
                        msg.id,
                        msg.channel,
                        decided.channel,
                        extra={"message_id": msg.id},
                    )
                jobs.setdefault(decided.channel or "", []).append(decided)
            lane_threads = [
                threading.Thread(
                    target=self._run_lane,
                    args=(lanes.factories[name], lane_jobs, summary),
                    daemon=True,
                    name=f"erp-sms-{name}",
                )
                for name, lane_jobs in jobs.items()
            ]
            for t in lane_threads:
                t.start()
            for t in lane_threads:
                t.join()
        finally:
            done.set()
            beat.join()
            with self._in_hand_lock:
                for c in claimed:
                    self._in_hand.pop(c.id, None)

    def _run_lane(
        self, factory: Callable[[], Channel], jobs: list[Claimed], summary: Summary
    ) -> None:
        """Send one channel's texts with as many instances as the channel allows."""
        pending: queue.SimpleQueue[Claimed] = queue.SimpleQueue()
        for msg in jobs:
            pending.put(msg)
        lane = _Lane()
        first: Channel | None
        try:
            first = factory()
        except Exception as exc:  # each sender tries again; texts are held or released
            log.error("cannot set up a channel: %s", one_line(exc))
            first = None
        count = max(1, min(first.concurrency if first else 1, len(jobs)))
        workers = [
            threading.Thread(
                target=self._lane_worker,
                args=(first if i == 0 else None, factory, pending, lane, summary),
                daemon=True,
            )
            for i in range(count)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join()

    def _lane_worker(
        self,
        channel: Channel | None,
        factory: Callable[[], Channel],
        pending: queue.SimpleQueue[Claimed],
        lane: _Lane,
        summary: Summary,
    ) -> None:
        try:
            channel = channel or factory()
            channel.open()
        except ConfigurationError as exc:
            lane.reject(exc.message)
            channel = None
        except Exception as exc:  # a channel that cannot even start: its texts wait
            log.error("cannot open a channel: %s", one_line(exc))
            channel = None
        try:
            while True:
                try:
                    msg = pending.get_nowait()
                except queue.Empty:
                    return
                if lane.rejected is not None:
                    self._finish(msg, Outcome(Status.HELD, reason=lane.rejected), summary, "held")
                elif self.stop.is_set() or channel is None:
                    self._release([msg], summary)
                else:
                    try:
                        self._send_one(channel, msg, summary, lane)
                    except Exception as exc:  # a bug of ours: the row comes back after its lease
                        log.error(
                            "message %s: unexpected error (%s); it is retried after its lease",
                            msg.id,
                            one_line(exc),
                            extra={"message_id": msg.id},
                        )
                        summary.add("deferred")
        finally:
            if channel is not None:
                with contextlib.suppress(Exception):
                    channel.close()

    # -- one text -------------------------------------------------------------------------

    def _send_one(self, channel: Channel, msg: Claimed, summary: Summary, lane: _Lane) -> None:
        if msg.recipient is not None and msg.recipient in self._opted_out:
            reason = f"canceled: {msg.recipient} opted out (twilio_21610) before it was sent"
            self._finish(msg, Outcome(Status.CANCELED, reason=reason), summary, "canceled")
            return
        if not self._still_mine(msg, summary):
            return
        try:
            result = self._deliver(channel, msg)
        except ChannelConfigurationError as exc:
            log.error("message %s held: %s", msg.id, exc.message, extra={"message_id": msg.id})
            error = exc
            flagged = self._with_db(
                self._in_session(lambda s: channel.rejected(s, error)),
                f"flag the {channel.name} record",
            )
            lane.reject(flagged or exc.message)
            self._finish(
                msg,
                Outcome(Status.HELD, reason=lane.rejected, error_code=exc.code),
                summary,
                "held",
            )
            return
        except OptedOutError as exc:
            self._finish(msg, self._failed(exc, msg), summary, "failed")
            self._opt_out(msg, exc)
            return
        except TransientError as exc:
            self._on_transient(channel, msg, exc, summary)
            return
        except DeliveryError as exc:  # permanent, or any other channel error: not retried
            self._finish(msg, self._failed(exc, msg), summary, "failed")
            return
        self._record_sent(msg, result, summary)

    def _still_mine(self, msg: Claimed, summary: Summary) -> bool:
        """The claim check right before a send: a worker that lost its claim (a lease
        that ran out while the database was away) must not send what another now has."""
        try:
            mine = outbox.confirm_claim(
                self.db, msg, lease_seconds=self.lease_seconds, now=self.clock()
            )
        except SQLAlchemyError as exc:
            log.warning(
                "message %s not sent: cannot confirm the claim (%s); it is retried after its lease",
                msg.id,
                one_line(exc),
                extra={"message_id": msg.id},
            )
            summary.add("deferred")
            return False
        if not mine:
            log.warning(
                "message %s not sent: another worker claimed it after this one's lease ran out",
                msg.id,
                extra={"message_id": msg.id},
            )
            summary.add("lost")
        return mine

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
        try:
            return channel.send(msg)
        except (DeliveryError, ConfigurationError):
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
        self, channel: Channel, msg: Claimed, exc: TransientError, summary: Summary
    ) -> None:
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
            self._finish(msg, outcome, summary, "throttled")
            return
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
            self._finish(msg, outcome, summary, "retrying")
            return
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
                self._record_sent(msg, replace(previous, detail=detail), summary)
                return
        self._finish(
            msg,
            Outcome(
                Status.FAILED,
                reason=reason,
                error_code=exc.code,
                channel=msg.channel,
                address=msg.address,
            ),
            summary,
            "failed",
        )

    @staticmethod
    def _failed(exc: DeliveryError, msg: Claimed | None = None) -> Outcome:
        return Outcome(
            Status.FAILED,
            reason=exc.message,
            error_code=exc.code,
            channel=msg.channel if msg else None,
            address=msg.address if msg else None,
        )

    def _record_sent(self, msg: Claimed, result: SendResult, summary: Summary) -> None:
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
            detail=result.detail or f"accepted by {msg.channel} ({result.provider_status or 'ok'})",
        )
        self._finish(msg, outcome, summary, "sent")

    # -- recording ------------------------------------------------------------------------

    def _finish(self, msg: Claimed, outcome: Outcome, summary: Summary, what: str) -> None:
        """Record ``outcome``, trying again (with backoff) while the database is away:
        after the provider accepted a text, losing its outcome means sending it twice."""
        recorded = self._with_db(
            lambda: outbox.finish(self.db, msg, outcome, now=self.clock()),
            f"record message {msg.id} as {outcome.status}",
        )
        with self._in_hand_lock:
            self._in_hand.pop(msg.id, None)
        if recorded is None:
            summary.add("unrecorded")
        elif not recorded:
            summary.add("lost")
        else:
            summary.add(what)

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

    def _release(self, msgs: list[Claimed], summary: Summary) -> None:
        for msg in msgs:
            outcome = Outcome(
                Status.QUEUED,
                reason=None,
                detail="handed back at worker shutdown",
                next_attempt_at=self.clock(),
                released=True,
                maybe_sent=msg.maybe_sent,
            )
            self._finish(msg, outcome, summary, "released")

    def _opt_out(self, msg: Claimed, exc: DeliveryError) -> None:
        """The provider says the recipient opted out (Twilio 21610: they replied STOP
        there) — record it here too: the number, its contacts, and their other texts still
        queued or held."""
        from . import consent

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


class _Lane:
    """Shared state of one channel's senders in a batch: once the provider rejected the
    channel's configuration, the rest of its texts are held, not sent."""

    def __init__(self) -> None:
        self.rejected: str | None = None

    def reject(self, reason: str) -> None:
        self.rejected = self.rejected or reason


# -- inline mode: send right after the host's commit (never inside it) ------------------

_inline_db: dict[str, Database] = {}
_inline_lock = threading.Lock()
_inline_run_lock = threading.Lock()  # one inline delivery at a time per process
_inline_threads: list[threading.Thread] = []


def join_inline(timeout: float | None = None) -> int:
    """Wait for the inline deliveries started so far (a host's tests, a clean shutdown);
    how many there were."""
    with _inline_lock:
        threads = list(_inline_threads)
    for t in threads:
        t.join(timeout)
    with _inline_lock:
        for t in threads:
            if not t.is_alive() and t in _inline_threads:
                _inline_threads.remove(t)
    return len(threads)


def schedule_inline(session: Session, settings: Settings) -> None:
    """Deliver right after ``session`` commits, in a background thread; nothing happens
    on rollback. The worker or ``erp-sms dispatch`` picks up anything left."""
    if session.info.get("erp_sms_inline"):
        return
    session.info["erp_sms_inline"] = True

    from sqlalchemy import event

    def after_commit(sess: Session) -> None:
        sess.info.pop("erp_sms_inline", None)
        t = threading.Thread(
            target=_inline_run, args=(settings,), daemon=True, name="erp-sms-inline"
        )
        with _inline_lock:
            _inline_threads.append(t)
        t.start()

    def after_rollback(sess: Session, _previous: object) -> None:
        sess.info.pop("erp_sms_inline", None)
        if event.contains(sess, "after_commit", after_commit):
            event.remove(sess, "after_commit", after_commit)

    event.listen(session, "after_commit", after_commit, once=True)
    event.listen(session, "after_soft_rollback", after_rollback, once=True)


def _inline_run(settings: Settings) -> None:
    try:
        with _inline_run_lock:
            db = _inline_db.get(settings.database_url)
            if db is None:
                db = _inline_db[settings.database_url] = Database(settings.database_url)
            Dispatcher(db, settings).run_once()
    except Exception:
        log.exception("inline dispatch failed; the worker or `erp-sms dispatch` will retry")
