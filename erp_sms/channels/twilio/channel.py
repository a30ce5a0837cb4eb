"""The Twilio channel: the real ``twilio`` client, pointed at ``ERP_SMS_TWILIO_API_URL``,
with a timeout on every request. Error codes are mapped by the policy table in
``rules/twilio_errors.toml``."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from sqlalchemy.orm import Session
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from ... import rule_records
from ...addresses import mask
from ...catalog import twilio_error_policies
from ...config import Settings
from ...errors import (
    ChannelConfigurationError,
    ConfigurationError,
    DeliveryError,
    OptedOutError,
    PermanentError,
    TransientError,
)
from ...outbox import Claimed
from ...rule_records import TwilioRule
from ..base import Channel, SendResult

log = logging.getLogger(__name__)


def error_for(
    code: int | None, http_status: int | None, text: str, retry_after: float | None = None
) -> DeliveryError | ChannelConfigurationError:
    """The typed error for a Twilio error code / HTTP status (policy as data)."""
    policy = twilio_error_policies().get(code) if code is not None else None
    if policy is not None:
        limit = policy.max_attempts
        if policy.action == "config":
            fix = policy.fix or "update it with `erp-sms rules set TWILIO --sid … --auth-code …`"
            return ChannelConfigurationError(
                f"TWILIO rule: {policy.reason}; {fix}", code=code, provider="twilio"
            )
        if policy.action == "retry":
            return TransientError(
                policy.reason,
                code=code,
                provider="twilio",
                max_attempts=limit,
                maybe_sent=http_status is not None and http_status >= 500,
                throttled=http_status == 429,
                retry_after=retry_after,
            )
        kinds: dict[str, type[DeliveryError]] = {
            "opt_out": OptedOutError,
            "permanent": PermanentError,
        }
        kind = kinds.get(policy.action, PermanentError)
        return kind(policy.reason, code=code, provider="twilio", max_attempts=limit)
    if http_status == 429 or (http_status is not None and http_status >= 500):
        # A 429 proves nothing was created; a 5xx does not (a gateway timeout in front of
        # Twilio, say), so Twilio is asked before the text is sent again.
        return TransientError(
            f"Twilio answered HTTP {http_status}: {text}",
            code=code,
            provider="twilio",
            maybe_sent=http_status != 429,
            throttled=http_status == 429,
            retry_after=retry_after,
        )
    if http_status == 401:
        return ChannelConfigurationError(
            "TWILIO rule: Twilio rejected the credentials (HTTP 401); update them with "
            "`erp-sms rules set TWILIO --sid … --auth-code …`",
            code=code,
            provider="twilio",
        )
    return PermanentError(
        f"Twilio error {code or http_status}: {text} (code not in rules/twilio_errors.toml; "
        "not retried)",
        code=code,
        provider="twilio",
    )


class Pacer:
    """At most ``rate`` segments per second per sender (0: no pacing). Thread-safe."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, segments: int = 1) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + max(segments, 1) / self.rate
        if start > now:
            self._sleep(start - now)


_pacers: dict[tuple[str, float], Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(sender: str, rate: float) -> Pacer:
    """The one pacer of a sending number in this process: the rate limit is the
    number's, whichever thread or batch sends."""
    with _pacers_lock:
        pacer = _pacers.get((sender, rate))
        if pacer is None:
            pacer = _pacers[(sender, rate)] = Pacer(rate)
        return pacer


#: Segments per second a US sender may send (DESIGN.md "Throughput").
TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")


VALIDITY_MAX = 36000  # seconds: Twilio's most (and its default), 10 hours


def validity_period(valid_until: dt.datetime, now: dt.datetime) -> int:
    """Twilio's ValidityPeriod (1-36,000 seconds) for a text worth sending until
    ``valid_until``: Twilio drops it from its queue after that, as erp-sms would."""
    left = int((valid_until - now).total_seconds())
    return min(max(left, 1), VALIDITY_MAX)


def sender_rate(rule: TwilioRule, settings: Settings) -> float:
    """The pace of the TWILIO record's sender: ``rate_per_second`` when set; with
    ``pace_by_sender``, the carrier rate of the number's kind (short code 100/s,
    toll-free 3/s, long code 1/s); otherwise 0 (unpaced: Twilio queues). A Messaging
    Service spreads over its pool, which Twilio paces itself."""
    d = settings.dispatch
    if d.rate_per_second > 0:
        return d.rate_per_second
    if not d.pace_by_sender or rule.messaging_service_sid:
        return 0.0
    number = rule.phone_number
    digits = number.lstrip("+")
    if digits.isdigit() and 5 <= len(digits) <= 6:
        return 100.0  # a short code
    if number.startswith(TOLL_FREE_PREFIXES):
        return 3.0
    return 1.0


HELD_CREDENTIALS = (
    "Twilio rejected the TWILIO credentials (20003); update them with "
    "`erp-sms rules set TWILIO --auth-code …` and held texts are released"
)


class TwilioChannel(Channel):
    """Texts through the Twilio Messages API, from the TWILIO rule record's number."""

    name = "twilio"

    def __init__(self, rule: TwilioRule, settings: Settings, pacer: Pacer | None = None) -> None:
        self.from_ = rule.phone_number
        self.record = rule.name
        # A Messaging Service sends from its pool of numbers (Twilio's way past one
        # number's rate); the From is then Twilio's choice.
        self.service = rule.messaging_service_sid
        self.concurrency = max(1, settings.dispatch.concurrency)
        self.rate_per_second = sender_rate(rule, settings)
        self.pacer = pacer or Pacer(self.rate_per_second)
        http = _HttpClient(timeout=settings.dispatch.http_timeout_seconds)
        self.http = http
        # A non-empty environment: an empty dict would fall back to os.environ, whose
        # TWILIO_REGION / TWILIO_EDGE would rewrite the host.
        self.client = Client(
            rule.sid,
            rule.auth_code,
            http_client=http,
            environment={"TWILIO_REGION": "", "TWILIO_EDGE": ""},
        )
        self.client.api.base_url = settings.twilio_api_url.rstrip("/")
        self.status_callback = (
            settings.public_url.rstrip("/") + "/twilio/status" if settings.public_url else None
        )

    @classmethod
    def senders(cls, session: Session) -> list[str | None]:
        """``TWILIO`` and each site's record (``TWILIO:WEST``)."""
        return list(rule_records.senders(session)) or [rule_records.TWILIO]

    @classmethod
    def configure(
        cls, session: Session, settings: Settings, sender: str | None = None
    ) -> Callable[[], TwilioChannel] | None:
        """A TWILIO rule record (``sender``; None: TWILIO): off when inactive; held when
        its AuthCode cannot be read or Twilio rejected it."""
        name = sender or rule_records.TWILIO
        active, _phone = rule_records.twilio_routing(session, name)
        if not active:
            return None
        rule = rule_records.twilio_rule(session, name)  # ConfigurationError: cannot decrypt
        if rule is None:
            return None
        if rule.rejected_reason is not None:
            raise ConfigurationError(_held_reason(rule.rejected_reason))
        sender = rule.messaging_service_sid or rule.phone_number
        pacer = pacer_for(sender, sender_rate(rule, settings))
        return lambda: cls(rule, settings, pacer)

    def rejected(self, session: Session, error: ChannelConfigurationError) -> str:
        rule_records.flag_rejected(session, self.record, error.message)
        return _held_reason(error.message)

    def send(self, message: Claimed) -> SendResult:
        assert message.address is not None
        self.pacer.wait(max(message.segments or 1, 1))
        kwargs: dict[str, Any] = (
            {"status_callback": self.status_callback} if self.status_callback else {}
        )
        if self.service:
            kwargs["messaging_service_sid"] = self.service
        else:
            kwargs["from_"] = self.from_
        if message.valid_until is not None:
            # Against the wall clock: it is what Twilio's queue counts in.
            kwargs["validity_period"] = validity_period(
                message.valid_until, dt.datetime.now(dt.UTC)
            )
        try:
            m = self.client.messages.create(to=message.address, body=message.body, **kwargs)
        except TwilioRestException as exc:
            raise error_for(exc.code, exc.status, exc.msg, self.http.retry_after) from None
        except TwilioException as exc:  # TwilioServiceException is not a TwilioRestException
            code = getattr(exc, "code", None)
            status = getattr(exc, "status", None)
            raise error_for(code, status, str(exc), self.http.retry_after) from None
        except requests.Timeout:
            raise TransientError(
                "Twilio did not answer in time", provider="twilio", maybe_sent=True
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot reach Twilio: {type(exc).__name__}",
                provider="twilio",
                maybe_sent=_may_have_arrived(exc),
            ) from None
        except ValueError:
            # A 2xx whose body is not Twilio's JSON (a proxy's or captive portal's page):
            # the request went somewhere, so it may have been created.
            raise TransientError(
                "the Twilio URL answered with something that is not the Twilio API "
                "(check ERP_SMS_TWILIO_API_URL and any proxy in between)",
                provider="twilio",
                maybe_sent=True,
            ) from None
        log.info(
            "twilio: message %s to %s accepted (%s)",
            m.sid,
            mask(message.address),
            m.status,
            extra={"message_id": message.id, "provider_id": m.sid},
        )
        return _result(m)

    def find_previous_send(self, message: Claimed) -> SendResult | None:
        """Twilio has no idempotency key: look for our earlier send (same To, From and
        body, created since the message was queued) before sending again."""
        if message.address is None:
            return None
        first = message.created_at or message.reclaimed_after or message.claimed_at
        since = first - dt.timedelta(minutes=1)  # clock skew between us and Twilio
        try:
            # No DateSent filter: Twilio leaves date_sent null while a message is still
            # queued, and such a message is exactly the one we must not send twice. The
            # newest come first: page (next_page_uri) until the messages are older than
            # the text itself.
            # Through a Messaging Service the From is any number of its pool.
            from_ = None if self.service else self.from_
            for m in self.client.messages.stream(
                to=message.address, from_=from_, page_size=LOOKUP_PAGE_SIZE
            ):
                created = m.date_created
                if created is not None and created < since:
                    break
                if m.body == message.body:
                    return _result(m)
        except TwilioException as exc:
            # A list page that fails is a plain TwilioException("Unable to fetch page",
            # response): a 401 there is the credentials, not a passing fault.
            response = exc.args[1] if len(exc.args) > 1 else None
            status = getattr(exc, "status", None) or getattr(response, "status_code", None)
            if status == 401 or getattr(exc, "code", None) == 20003:
                raise error_for(20003, 401, "credentials rejected") from None
            raise TransientError(
                f"cannot check Twilio for an earlier send before retrying: HTTP {status}",
                provider="twilio",
                maybe_sent=True,
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot check Twilio for an earlier send before retrying: {type(exc).__name__}",
                provider="twilio",
                maybe_sent=True,
            ) from None
        except ValueError:
            raise TransientError(
                "cannot check Twilio for an earlier send before retrying: the answer is "
                "not the Twilio API's",
                provider="twilio",
                maybe_sent=True,
            ) from None
        return None


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The twilio client's HTTP client, keeping the last answer's Retry-After (the
    client's exceptions do not carry headers)."""

    retry_after: float | None = None

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.retry_after = None
        response = super().request(*args, **kwargs)
        headers = getattr(response, "headers", None) or {}
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
        if value is not None:
            try:
                self.retry_after = min(max(float(value), 0.0), 3600.0)
            except ValueError:
                self.retry_after = None  # an HTTP date: rare from Twilio; backoff applies
        return response


def _held_reason(rejected: str) -> str:
    """What held texts say: the credentials (the usual case), or what else Twilio
    refused in the record (a Messaging Service, say)."""
    if "MessagingServiceSid" in rejected:
        return (
            f"{rejected}; held until the TWILIO record is fixed "
            "(`erp-sms rules set TWILIO --messaging-service-sid …`, or '' to send from "
            "PhoneNumber), then released"
        )
    if "(20003)" in rejected or "HTTP 401" in rejected:
        return HELD_CREDENTIALS
    return rejected  # a sender Twilio refuses: the reason already says what to change


#: Messages per page when looking for an earlier send (Twilio allows up to 1,000).
LOOKUP_PAGE_SIZE = 200


def _may_have_arrived(exc: requests.RequestException) -> bool:
    """False only when the connection was never made: then nothing reached Twilio."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, NewConnectionError)


def _result(m: object) -> SendResult:
    segments = getattr(m, "num_segments", None)
    price = getattr(m, "price", None)
    return SendResult(
        provider_id=getattr(m, "sid", None),
        provider_status=getattr(m, "status", None),
        segments=int(segments) if segments not in (None, "") else None,
        price=str(price) if price not in (None, "") else None,
        price_unit=getattr(m, "price_unit", None),
        callbacks=True,
    )
