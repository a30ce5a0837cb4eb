"""The Twilio channel: the real ``twilio`` client, pointed at ``ERP_SMS_TWILIO_API_URL``,
with a timeout on every request. Error codes are mapped by the policy table in
``rules/twilio_errors.toml``."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from ..addresses import mask
from ..catalog import twilio_error_policies
from ..config import Settings
from ..errors import (
    ChannelConfigurationError,
    DeliveryError,
    OptedOutError,
    PermanentError,
    TransientError,
)
from ..outbox import Claimed
from ..rule_records import TwilioRule
from .base import SendResult

log = logging.getLogger(__name__)


def error_for(code: int | None, http_status: int | None, text: str) -> DeliveryError:
    """The typed error for a Twilio error code / HTTP status (policy as data)."""
    policy = twilio_error_policies().get(code) if code is not None else None
    if policy is not None:
        limit = policy.max_attempts
        if policy.action == "config":
            return ChannelConfigurationError(
                f"TWILIO rule: {policy.reason}; update it with "  # noqa: S608 - not SQL
                "`erp-sms rules set TWILIO --sid … --auth-code …`",
                code=code,
                provider="twilio",
            )
        kinds: dict[str, type[DeliveryError]] = {
            "retry": TransientError,
            "opt_out": OptedOutError,
            "permanent": PermanentError,
        }
        kind = kinds.get(policy.action, PermanentError)
        return kind(policy.reason, code=code, provider="twilio", max_attempts=limit)
    if http_status == 429 or (http_status is not None and http_status >= 500):
        return TransientError(
            f"Twilio answered HTTP {http_status}: {text}", code=code, provider="twilio"
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


class TwilioChannel:
    name = "twilio"

    def __init__(self, rule: TwilioRule, settings: Settings, pacer: Pacer | None = None) -> None:
        self.from_ = rule.phone_number
        self.pacer = pacer or Pacer(settings.dispatch.rate_per_second)
        http = TwilioHttpClient(timeout=settings.dispatch.http_timeout_seconds)
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

    def send(self, message: Claimed) -> SendResult:
        assert message.address is not None
        self.pacer.wait(max(message.segments or 1, 1))
        kwargs = {"status_callback": self.status_callback} if self.status_callback else {}
        try:
            m = self.client.messages.create(
                to=message.address, from_=self.from_, body=message.body, **kwargs
            )
        except TwilioRestException as exc:
            raise error_for(exc.code, exc.status, exc.msg) from None
        except TwilioException as exc:  # TwilioServiceException is not a TwilioRestException
            code = getattr(exc, "code", None)
            raise error_for(code, getattr(exc, "status", None), str(exc)) from None
        except requests.Timeout:
            raise TransientError("Twilio did not answer in time", provider="twilio") from None
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot reach Twilio: {type(exc).__name__}", provider="twilio"
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
        if not message.may_have_been_sent or message.address is None:
            return None
        first = message.created_at or message.reclaimed_after or message.claimed_at
        since = first - dt.timedelta(minutes=1)  # clock skew between us and Twilio
        try:
            # No DateSent filter: Twilio leaves date_sent null while a message is still
            # queued, and such a message is exactly the one we must not send twice. The
            # newest come first; the client follows next_page_uri up to the limit.
            found = self.client.messages.list(
                to=message.address, from_=self.from_, limit=200, page_size=200
            )
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
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot check Twilio for an earlier send before retrying: {exc}",
                provider="twilio",
            ) from None
        for m in found:
            created = m.date_created
            if m.body == message.body and (created is None or created >= since):
                return _result(m)
        return None

    def close(self) -> None:
        pass


def _result(m: object) -> SendResult:
    segments = getattr(m, "num_segments", None)
    price = getattr(m, "price", None)
    return SendResult(
        provider_id=getattr(m, "sid", None),
        provider_status=getattr(m, "status", None),
        segments=int(segments) if segments not in (None, "") else None,
        price=str(price) if price not in (None, "") else None,
        price_unit=getattr(m, "price_unit", None),
    )
