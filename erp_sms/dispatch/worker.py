"""The dispatcher: claims due texts batch by batch, hands them to the channels' lanes,
keeps its leases alive, and records outcomes through the recorder."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from .. import channels, options, outbox, retention
from ..channels.base import Channel
from ..config import Settings, get_settings
from ..db import Database, one_line, utcnow
from ..errors import (
    ConfigurationError,
)
from ..host import load_host_module
from ..models import Status
from ..outbox import Claimed, Outcome
from ..send_guard import SendGuard
from . import heartbeat, host_webhook
from .alerts import mail_replies
from .lanes import _Lane, _LaneSet
from .policy import RetryPolicy, Summary, default_worker_id
from .recorder import _Record, _Recorder
from .send import Sending

log = logging.getLogger(__name__)

#: How often a worker looks whether the day's SMSRETENTIONDAYS purge is due.
RETENTION_CHECK = 3600.0


class Dispatcher(Sending):
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
        self._telling: threading.Thread | None = None  # delivering to the host's webhook
        self._beaten: float | None = None  # time.monotonic() of the last heartbeat row
        #: Told of each outcome as it is counted (``erp-sms dispatch``'s progress bar).
        self.progress: Callable[[int], object] | None = None
        self._retention_checked: float | None = None  # ... of the last SMSRETENTIONDAYS look

    def beat(self, *, stopped: bool = False) -> None:
        """Say this worker is alive (``sms_worker``), at most every ``BEAT_SECONDS``
        unless it is leaving."""
        tick = time.monotonic()
        recent = self._beaten is not None and tick - self._beaten < heartbeat.BEAT_SECONDS
        if recent and not stopped:
            return
        self._beaten = tick
        heartbeat.beat(self.db, self.worker_id, self.clock(), stopped=stopped)

    # -- the loop -------------------------------------------------------------------------

    def run_once(self, *, max_batches: int | None = None) -> Summary:
        """Deliver everything that is due now, then return.

        Texts are claimed batch by batch, but sending is continuous: each channel's
        senders (and their clients and connection pools) live for the whole run and the
        next batch is claimed while the last one is still going out, so the provider
        always has ``concurrency`` requests in flight. Outcomes are written by one
        recorder thread, in groups."""
        summary = Summary(progress=self.progress)
        started = time.monotonic()
        self.beat()
        self._release_ready()
        self._mail_replies()
        self.keep_retention()  # also for `erp-sms dispatch` from cron
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
            self._tell_host()
        summary.seconds = time.monotonic() - started
        return summary

    def _tell_host(self) -> None:
        """Deliver what happened to the host's webhook in a thread of its own: a slow or
        failing endpoint never holds the texts up. The run waits a moment for it (a
        one-shot `erp-sms dispatch` delivers what it did); what is left goes on in the
        background, or to the next run (the outbox keeps it)."""
        if not self.settings.host_webhook_url:
            return
        if self._telling is None or not self._telling.is_alive():
            self._telling = threading.Thread(
                target=self._deliver_host_events, daemon=True, name="erp-sms-host-webhook"
            )
            self._telling.start()
        self._telling.join(timeout=2 * host_webhook.TIMEOUT)

    def _deliver_host_events(self) -> None:
        try:
            host_webhook.deliver(self.db, self.settings, now=self.clock())
        except SQLAlchemyError as exc:
            log.warning("cannot deliver to the host's webhook (%s); next run", one_line(exc))

    def _mail_replies(self) -> None:
        """Replies that need a person, mailed to SMSREPLYALERT: never in the texts' way."""
        try:
            mail_replies(self.db, self.settings, now=self.clock())
        except SQLAlchemyError as exc:
            log.warning("cannot mail the replies to SMSREPLYALERT (%s); next run", one_line(exc))

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
        try:
            self._run_until_stopped(on_batch)
        finally:
            self.beat(stopped=True)
        log.info("worker %s stopped", self.worker_id)

    def _run_until_stopped(self, on_batch: Callable[[Summary], None] | None) -> None:
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

    def keep_retention(self) -> None:
        """SMSRETENTIONDAYS: once a day, forget what finished longer ago (``purge``).
        Checked at most every ``RETENTION_CHECK`` by a long-lived worker (each run of a
        one-shot ``dispatch`` checks: one option read); a failure waits for the next."""
        tick = time.monotonic()
        last_look = self._retention_checked
        if last_look is not None and tick - last_look < RETENTION_CHECK:
            return
        self._retention_checked = tick
        now = self.clock()
        try:
            with self.db.read_session() as s:
                days = int(options.get(s, "SMSRETENTIONDAYS") or 0)
                last = retention.last_purge(s) if days else None
            if not days or (last is not None and now - last < dt.timedelta(days=1)):
                return
            done = retention.purge(self.db, days, now=now)
        except SQLAlchemyError as exc:
            log.warning("cannot apply SMSRETENTIONDAYS (%s); next check", one_line(exc))
            return
        log.info("%s (SMSRETENTIONDAYS)", done.line(days))

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
        renewed = time.monotonic()
        while not done.wait(min(interval, heartbeat.BEAT_SECONDS)):
            self.beat()  # a long run still says it is alive
            if interval <= heartbeat.BEAT_SECONDS or time.monotonic() - renewed >= interval:
                renewed = time.monotonic()
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
