"""Dispatch: claim due messages, send them outside any transaction, record the outcome.

``Dispatcher.run_once()`` delivers what is due and returns a summary (``erp-sms
dispatch``); ``Dispatcher.run_forever()`` keeps going until asked to stop (``erp-sms
worker``, SIGTERM/SIGINT), finishing the message in hand and handing back the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session

from . import outbox, rule_records
from .addresses import classify, mask, route
from .channels.base import Channel, SendResult
from .channels.email_gateway import EmailGatewayChannel
from .channels.twilio import Pacer, TwilioChannel
from .config import Settings, get_settings
from .db import Database, utcnow
from .errors import (
    AddressError,
    ChannelConfigurationError,
    ConfigurationError,
    DeliveryError,
    InputError,
    OptedOutError,
    PermanentError,
    TransientError,
)
from .models import Channel as ChannelName
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
    """Delivers due messages from the outbox in ``db``."""

    def __init__(
        self,
        db: Database,
        settings: Settings | None = None,
        *,
        worker_id: str | None = None,
        retry: RetryPolicy | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        from .host import load_host_module

        self.db = db
        self.settings = settings or get_settings()
        load_host_module(self.settings)  # 21610 opt-outs go through the host's lookup
        self.worker_id = worker_id or default_worker_id()
        self.retry = retry or RetryPolicy.from_settings(self.settings)
        self.stop = stop or threading.Event()
        self._pacer = Pacer(self.settings.dispatch.rate_per_second)
        self._local = threading.local()
        self._twilio_fingerprint: tuple[str, str, str] | None = None
        # Numbers that opted out (21610) during this worker's life: other texts to them,
        # already claimed in the same batch, are canceled instead of sent.
        self._opted_out: set[str] = set()

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
                lease_seconds=self.settings.dispatch.lease_seconds,
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
        pacing lets out within half a lease (the rest would be reclaimed mid-batch)."""
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
            except Exception:
                # The database went away, say. Claimed rows come back after their lease;
                # the worker keeps going rather than dying.
                log.exception("worker %s: dispatch failed; trying again", self.worker_id)
                self.stop.wait(max(self.settings.dispatch.poll_seconds, 1.0))
                continue
            if summary.handled and on_batch:
                on_batch(summary)
            if not summary.handled:
                self.stop.wait(self.settings.dispatch.poll_seconds)
        log.info("worker %s stopped", self.worker_id)

    # -- one batch ------------------------------------------------------------------------

    def _deliver_batch(self, claimed: list[Claimed], summary: Summary) -> None:
        held_reason: str | None = None
        twilio: rule_records.TwilioRule | None = None
        with self.db.session() as s:
            twilio_active, _phone = rule_records.twilio_routing(s)
            if twilio_active:
                try:
                    twilio = rule_records.twilio_rule(s)
                except ConfigurationError as exc:  # e.g. the AuthCode cannot be decrypted
                    held_reason = exc.message
        if twilio is not None and twilio.rejected_reason is not None:
            held_reason = _HELD_CREDENTIALS

        sendable: dict[str, list[Claimed]] = {ChannelName.TWILIO: [], ChannelName.EMAIL_GATEWAY: []}
        for msg in claimed:
            decided = self._reroute(msg, twilio_active, held_reason, summary)
            if decided is not None:
                sendable[decided.channel or ""].append(decided)

        smtp_jobs = sendable[ChannelName.EMAIL_GATEWAY]
        twilio_jobs = sendable[ChannelName.TWILIO]
        threads: list[threading.Thread] = []
        if smtp_jobs:
            t = threading.Thread(target=self._send_smtp, args=(smtp_jobs, summary), daemon=True)
            t.start()
            threads.append(t)
        if twilio_jobs:
            assert twilio is not None  # otherwise held_reason is set and nothing is sendable
            self._send_twilio(twilio_jobs, twilio, summary)
        for t in threads:
            t.join()

    def _reroute(
        self, msg: Claimed, twilio_active: bool, held_reason: str | None, summary: Summary
    ) -> Claimed | None:
        """Route the claimed message again with today's rules: the TWILIO record may have
        been switched on or off, a carrier may have shut its gateway meanwhile."""
        try:
            address = classify(msg.raw_address, self.settings.default_region)
        except AddressError as exc:
            self._finish(msg, Outcome(Status.FAILED, reason=exc.message), summary, "failed")
            return None
        r = route(address, twilio_active)
        if r.channel is None:
            if msg.channel == ChannelName.TWILIO:
                reason = (
                    "the TWILIO rule is inactive and this contact has no working "
                    f"gateway address ({r.reason}); it goes out when TWILIO is active again "
                    "(`erp-sms rules set TWILIO --active`), or cancel it"
                )
                self._finish(msg, Outcome(Status.HELD, reason=reason), summary, "held")
            else:
                self._finish(msg, Outcome(Status.SKIPPED, reason=r.reason), summary, "skipped")
            return None
        if r.channel == ChannelName.TWILIO and held_reason is not None:
            self._finish(msg, Outcome(Status.HELD, reason=held_reason), summary, "held")
            return None
        if (r.channel, r.address) != (msg.channel, msg.address):
            summary.add("rerouted")
            log.info(
                "message %s rerouted %s -> %s",
                msg.id,
                msg.channel,
                r.channel,
                extra={"message_id": msg.id},
            )
            return replace(msg, channel=r.channel, address=r.address)
        return msg

    # -- sending --------------------------------------------------------------------------

    def _send_smtp(self, jobs: list[Claimed], summary: Summary) -> None:
        try:
            channel: Channel = EmailGatewayChannel(self.settings)
        except ConfigurationError as exc:
            for msg in jobs:
                self._finish(msg, Outcome(Status.HELD, reason=exc.message), summary, "held")
            return
        try:
            for i, msg in enumerate(jobs):
                if self.stop.is_set():
                    self._release(jobs[i:], summary)
                    return
                self._send_one(channel, msg, summary)
        finally:
            channel.close()

    def _twilio_channel(self, rule: rule_records.TwilioRule) -> TwilioChannel:
        fp = (rule.sid, rule.auth_code, rule.phone_number)
        ch: TwilioChannel | None = getattr(self._local, "twilio", None)
        if ch is None or getattr(self._local, "fp", None) != fp:
            ch = TwilioChannel(rule, self.settings, self._pacer)
            self._local.twilio, self._local.fp = ch, fp
        return ch

    def _send_twilio(
        self, jobs: list[Claimed], rule: rule_records.TwilioRule, summary: Summary
    ) -> None:
        rejected = threading.Event()

        def work(msg: Claimed) -> None:
            if self.stop.is_set() or rejected.is_set():
                if rejected.is_set():
                    self._finish(
                        msg, Outcome(Status.HELD, reason=_HELD_CREDENTIALS), summary, "held"
                    )
                else:
                    self._release([msg], summary)
                return
            if self._send_one(self._twilio_channel(rule), msg, summary) == "config":
                rejected.set()

        workers = max(1, self.settings.dispatch.concurrency)
        if workers == 1 or len(jobs) == 1:
            for msg in jobs:
                work(msg)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="erp-sms-twilio") as pool:
            list(pool.map(work, jobs))

    def _send_one(self, channel: Channel, msg: Claimed, summary: Summary) -> str:
        if msg.recipient is not None and msg.recipient in self._opted_out:
            reason = f"canceled: {msg.recipient} opted out (twilio_21610) before it was sent"
            self._finish(msg, Outcome(Status.CANCELED, reason=reason), summary, "canceled")
            return "canceled"
        try:
            previous = channel.find_previous_send(msg) if msg.may_have_been_sent else None
            if previous is not None:
                log.warning(
                    "message %s: the earlier attempt reached the provider (%s); not sending again",
                    msg.id,
                    previous.provider_id,
                    extra={"message_id": msg.id},
                )
                self._record_sent(
                    msg,
                    previous,
                    summary,
                    detail="found the earlier send at the provider; not sent again",
                )
                return "sent"
            result = channel.send(msg)
        except ChannelConfigurationError as exc:
            self._on_config_error(msg, exc, summary)
            return "config"
        except OptedOutError as exc:
            self._finish(msg, self._failed(exc), summary, "failed")
            self._opt_out(msg, exc)
            return "failed"
        except TransientError as exc:
            if self.retry.allows(exc, msg.attempts):
                when = utcnow() + dt.timedelta(seconds=self.retry.delay(msg.attempts))
                outcome = Outcome(
                    Status.QUEUED,
                    reason=f"attempt {msg.attempts} failed, will retry: {exc.message}",
                    next_attempt_at=when,
                    error_code=exc.code,
                    channel=msg.channel,
                    address=msg.address,
                )
                self._finish(msg, outcome, summary, "retrying")
                return "retrying"
            reason = f"gave up after {msg.attempts} attempt(s): {exc.message}"
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
            return "failed"
        except PermanentError as exc:
            self._finish(msg, self._failed(exc, msg), summary, "failed")
            return "failed"
        except DeliveryError as exc:  # any other channel error: never retried blindly
            self._finish(msg, self._failed(exc, msg), summary, "failed")
            return "failed"
        self._record_sent(msg, result, summary)
        return "sent"

    @staticmethod
    def _failed(exc: DeliveryError, msg: Claimed | None = None) -> Outcome:
        return Outcome(
            Status.FAILED,
            reason=exc.message,
            error_code=exc.code,
            channel=msg.channel if msg else None,
            address=msg.address if msg else None,
        )

    def _record_sent(
        self, msg: Claimed, result: SendResult, summary: Summary, detail: str | None = None
    ) -> None:
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
            detail=detail or f"accepted by {msg.channel} ({result.provider_status or 'ok'})",
        )
        self._finish(msg, outcome, summary, "sent")

    def _finish(self, msg: Claimed, outcome: Outcome, summary: Summary, what: str) -> None:
        outbox.finish(self.db, msg, outcome)
        summary.add(what)

    def _release(self, msgs: list[Claimed], summary: Summary) -> None:
        for msg in msgs:
            outcome = Outcome(
                Status.QUEUED,
                reason=None,
                detail="handed back at worker shutdown",
                next_attempt_at=utcnow(),
                released=True,
            )
            self._finish(msg, outcome, summary, "released")

    def _on_config_error(
        self, msg: Claimed, exc: ChannelConfigurationError, summary: Summary
    ) -> None:
        log.error("message %s held: %s", msg.id, exc.message, extra={"message_id": msg.id})
        if msg.channel == ChannelName.TWILIO:
            with self.db.session() as s:
                rule_records.flag_rejected(s, rule_records.TWILIO, exc.message)
            self._finish(
                msg,
                Outcome(Status.HELD, reason=_HELD_CREDENTIALS, error_code=exc.code),
                summary,
                "held",
            )
        else:
            self._finish(
                msg,
                Outcome(Status.HELD, reason=exc.message, error_code=exc.code),
                summary,
                "held",
            )

    def _opt_out(self, msg: Claimed, exc: DeliveryError) -> None:
        """21610: the recipient replied STOP at Twilio — record the opt-out here too (the
        number, its contacts, and their other texts still queued or held)."""
        from . import consent

        number = msg.recipient or (msg.address if msg.channel == ChannelName.TWILIO else None)
        if number:
            self._opted_out.add(number)
        with self.db.session() as s:
            try:
                consent.opt_out(
                    s,
                    contact_key=msg.contact_ref,
                    number=number,
                    source="twilio_21610",
                    detail=exc.message,
                )
            except InputError:  # the contact is gone: the number is still opted out
                consent.opt_out(s, number=number, source="twilio_21610", detail=exc.message)
        log.info(
            "contact %s opted out (Twilio 21610) for %s",
            msg.contact_ref,
            mask(msg.address),
            extra={"message_id": msg.id},
        )


_HELD_CREDENTIALS = (
    "Twilio rejected the TWILIO credentials (20003); update them with "
    "`erp-sms rules set TWILIO --auth-code …` and held texts are released"
)


# -- inline mode: send right after the host's commit (never inside it) ------------------

_inline_db: dict[str, Database] = {}
_inline_lock = threading.Lock()


def schedule_inline(session: Session, settings: Settings) -> None:
    """Deliver right after ``session`` commits, in a background thread; nothing happens
    on rollback. The worker or ``erp-sms dispatch`` picks up anything left."""
    if session.info.get("erp_sms_inline"):
        return
    session.info["erp_sms_inline"] = True

    from sqlalchemy import event

    def after_commit(sess: Session) -> None:
        sess.info.pop("erp_sms_inline", None)
        threading.Thread(
            target=_inline_run, args=(settings,), daemon=True, name="erp-sms-inline"
        ).start()

    def after_rollback(sess: Session, _previous: object) -> None:
        sess.info.pop("erp_sms_inline", None)
        if event.contains(sess, "after_commit", after_commit):
            event.remove(sess, "after_commit", after_commit)

    event.listen(session, "after_commit", after_commit, once=True)
    event.listen(session, "after_soft_rollback", after_rollback, once=True)


def _inline_run(settings: Settings) -> None:
    try:
        with _inline_lock:
            db = _inline_db.get(settings.database_url)
            if db is None:
                db = _inline_db[settings.database_url] = Database(settings.database_url)
            Dispatcher(db, settings).run_once()
    except Exception:
        log.exception("inline dispatch failed; the worker or `erp-sms dispatch` will retry")
