"""The send side of the dispatcher: the opt-out guard and the SMTP barrier around each
handover, the channel's answer turned into an outcome, transient faults retried or
handed back, Twilio's opt-outs (21610) recorded."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .. import consent, outbox
from ..addresses import mask
from ..channels.base import Channel, SendResult
from ..config import Settings
from ..db import Database, one_line
from ..errors import (
    ChannelConfigurationError,
    ConfigurationError,
    DeliveryError,
    InputError,
    OptedOutError,
    PermanentError,
    TransientError,
)
from ..models import Status
from ..outbox import Claimed, Outcome
from ..send_guard import OptedOutMeanwhile, SendGuard
from .lanes import _Lane
from .policy import RetryPolicy, Summary, Window
from .recorder import THROTTLED_IN_HAND, _Record, _Recorder

log = logging.getLogger(__name__)


_T = TypeVar("_T")


class Sending:
    """The dispatcher's send side (``Dispatcher`` is one): what it needs of the
    dispatcher is declared here."""

    db: Database
    settings: Settings
    worker_id: str
    retry: RetryPolicy
    stop: threading.Event
    clock: Callable[[], dt.datetime]
    _wait: Callable[[float], None]
    _in_hand: dict[int, Claimed]
    _in_hand_lock: threading.Lock
    _confirmed: dict[int, dt.datetime]
    _throttles: dict[int, int]
    _recorder: _Recorder
    _summary: Summary
    _opted_out: set[str]
    _guard: SendGuard | None

    @property
    def lease_seconds(self) -> float:
        return self.settings.dispatch.lease_seconds

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
