"""A Twilio-compatible Messages API on loopback: accounts and Messaging Services,
create, fetch and list as the real API answers them (checked against Twilio's OpenAPI
spec in the tests), STOP'd numbers, programmable faults, delivery callbacks."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import re
import secrets
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..segments import analyse
from .twilio_data import Fault, StoredMessage
from .twilio_http import TwilioHttp, _pause, post_signed


@dataclass
class TwilioServer(TwilioHttp):
    """A Twilio-compatible Messages API on 127.0.0.1 (``url`` once started)."""

    accounts: dict[str, str] = field(default_factory=dict)  # sid -> auth token
    latency: float = 0.0
    transient_rate: float = 0.0  # share of creates answered 500 or 429 at random
    slow_rate: float = 0.0  # share of creates answered ``slow_seconds`` late (created first)
    slow_seconds: float = 0.0
    seed: int | None = None
    #: Requests in flight the account allows (0: no limit); beyond it Twilio answers at
    #: once with HTTP 429 / 20429, as for an account's API concurrency limit.
    concurrency_limit: int = 0
    #: Called with each message once it is created and before the API answers: a soak
    #: posts its status callback from here, racing the sender's own record of the send.
    on_create: Callable[[StoredMessage], None] | None = None
    port: int = 0  # 0: a free one

    def __post_init__(self) -> None:
        self.messages: list[StoredMessage] = []
        self.faults: deque[Fault] = deque()
        self.unsubscribed: set[str] = set()  # numbers that replied STOP at "Twilio"
        self.services: dict[tuple[str, str], Iterator[str]] = {}  # Messaging Services
        self.requests = 0
        self.creates = 0
        self.transient_faults = 0
        self.slow_answers = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.over_limit = 0  # 429s for going past ``concurrency_limit``
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rand = random.Random(self.seed)
        self._httpd: ThreadingHTTPServer | None = None
        self.url = ""

    # -- control --------------------------------------------------------------------------

    def add_account(self, sid: str, token: str) -> None:
        self.accounts[sid] = token

    def add_messaging_service(self, account: str, sid: str, numbers: list[str]) -> None:
        """A Messaging Service of ``account`` sending from ``numbers`` in turn."""
        self.services[(account, sid)] = itertools.cycle(numbers)

    def unsubscribe(self, number: str) -> None:
        """The number replied STOP: every later send to it is refused with 21610, as
        Twilio does."""
        self.unsubscribed.add(number)

    def fail_next(self, n: int = 1, **fault: Any) -> None:
        """Program the next ``n`` creates: an error (``status``, ``code``, ``message``),
        a non-JSON ``body``, or (status < 400) a success answered late: after ``delay``
        seconds or once ``hold`` is set — the message is created first, as when Twilio
        took it but the answer was slow."""
        for _ in range(n):
            self.faults.append(Fault(**fault))

    def wait_for(self, predicate: Callable[[TwilioServer], bool], timeout: float = 30.0) -> None:
        """Block until ``predicate(self)`` holds (checked after each request and
        creation); AssertionError after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout):
                raise AssertionError("the Twilio server did not reach the expected state")

    def deliver(
        self,
        sid: str,
        status: str = "delivered",
        error_code: int | None = None,
        url: str | None = None,
    ) -> int:
        """Move a message to ``status`` and post the signed StatusCallback; returns the
        HTTP status the callback got (0 when the message has no callback URL)."""
        msg = next(m for m in self.messages if m.sid == sid)
        msg.status = status
        if status in ("sent", "delivered", "undelivered", "read") and msg.date_sent is None:
            msg.date_sent = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if status in ("sent", "delivered", "undelivered", "read") and msg.price is None:
            msg.price = f"-{0.0079 * msg.num_segments:.5f}"  # US long code, per segment
        target = url or msg.status_callback
        if not target:
            return 0
        params = {
            "MessageSid": msg.sid,
            "SmsSid": msg.sid,
            "AccountSid": msg.account_sid,
            "From": msg.from_,
            "To": msg.to,
            "MessageStatus": status,
            "SmsStatus": status,
            "ApiVersion": "2010-04-01",
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return post_signed(target, params, self.accounts[msg.account_sid])

    # -- request handling -----------------------------------------------------------------

    def _next_fault(self, to: str) -> Fault | None:
        with self._lock:
            for f in list(self.faults):
                if f.to is None or f.to == to:
                    self.faults.remove(f)
                    return f
            if self.transient_rate and self._rand.random() < self.transient_rate:
                self.transient_faults += 1
                if self._rand.random() < 0.5:
                    return Fault(status=500, message="Internal Server Error")
                return Fault(status=429, code=20429, message="Too Many Requests", retry_after=0)
            if self.slow_rate and self._rand.random() < self.slow_rate:
                self.slow_answers += 1
                return Fault(status=200, delay=self.slow_seconds)
        return None

    def _create(self, h: BaseHTTPRequestHandler, account: str, form: dict[str, str]) -> None:
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        service = form.get("MessagingServiceSid")
        if service and not from_:
            if not re.fullmatch(r"MG[0-9a-fA-F]{32}", service):
                return self._error(h, 400, 21705, "The Messaging Service Sid is invalid")
            with self._lock:
                pool = self.services.get((account, service))
                if pool is None:
                    return self._error(
                        h, 400, 21701, f"The Messaging Service {service} does not exist"
                    )
                from_ = next(pool)  # Twilio picks a number of the pool
        fault = self._next_fault(to)
        if fault is None and to in self.unsubscribed:
            fault = Fault(
                status=400, code=21610, message="Attempt to send to unsubscribed recipient"
            )
        late: Fault | None = None
        if fault is not None:
            if fault.body is not None:
                return self._raw(h, fault.status if fault.status < 400 else 200, fault.body)
            if fault.status < 400:
                late = fault  # created first, answered late
            else:
                _pause(fault)
                return self._fault(h, fault)
        invalid = self._invalid(account, to, from_, body, form)
        if invalid is not None:
            return self._error(h, 400, *invalid)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        msg = StoredMessage(
            sid="SM" + secrets.token_hex(16),
            account_sid=account,
            to=to,
            from_=from_,
            body=body,
            status="queued",
            date_created=now,
            date_sent=None,  # real Twilio sets it once the message has left
            status_callback=form.get("StatusCallback"),
            num_segments=max(analyse(body).segments, 1),
            validity_period=int(form["ValidityPeriod"]) if "ValidityPeriod" in form else None,
        )
        with self._lock:
            self.messages.append(msg)
            self.creates += 1
            self._changed.notify_all()
        if self.on_create is not None:
            self.on_create(msg)
        if late is not None:
            _pause(late)
        self._send(h, 201, msg.json())

    @staticmethod
    def _invalid(
        account: str, to: str, from_: str, body: str, form: dict[str, str]
    ) -> tuple[int, str] | None:
        """Twilio's checks of a create, with its codes (HTTP 400)."""
        import phonenumbers

        if not to:
            return 21604, "A 'To' phone number is required."
        if not from_ and not form.get("MessagingServiceSid"):
            return 21603, "A 'From' phone number is required."
        if not body and not form.get("MediaUrl"):
            return 21602, "Message body is required."
        for code, number, what in ((21211, to, "To"), (21212, from_, "From")):
            try:
                ok = phonenumbers.is_possible_number(phonenumbers.parse(number, None))
            except phonenumbers.NumberParseException:
                ok = False
            if not ok:
                return code, f"Invalid '{what}' Phone Number: {number}"
        if len(body.encode("utf-16-le")) // 2 > 1600:  # Twilio counts UTF-16 units
            return 21617, "The concatenated message body exceeds the 1600 character limit."
        validity = form.get("ValidityPeriod")
        if validity is not None and not (validity.isdigit() and 1 <= int(validity) <= 36000):
            return 21624, "Validity period can only be set to integers between 1 and 36,000."
        return None

    def _list(self, h: BaseHTTPRequestHandler, account: str, q: dict[str, str]) -> None:
        size_text = q.get("PageSize", "50")
        page_text = q.get("Page", "0")
        if not (size_text.isdigit() and 1 <= int(size_text) <= 1000) or not page_text.isdigit():
            return self._error(h, 400, 20001, "PageSize must be between 1 and 1000")
        size, page = int(size_text), int(page_text)
        with self._lock:
            found = [m for m in self.messages if m.account_sid == account]
        if "To" in q:
            found = [m for m in found if m.to == q["To"]]
        if "From" in q:
            found = [m for m in found if m.from_ == q["From"]]
        for key, op in (("DateSent>", "ge"), ("DateSent<", "le"), ("DateSent", "eq")):
            if key in q:
                when = _parse_when(q[key])
                # a message not sent yet (date_sent null) matches no DateSent filter
                if op == "ge":
                    found = [m for m in found if m.date_sent and m.date_sent >= when]
                elif op == "le":
                    found = [m for m in found if m.date_sent and m.date_sent <= when]
                else:
                    found = [m for m in found if m.date_sent and m.date_sent.date() == when.date()]
        # newest first; Python's sort is stable, so equal seconds keep creation order reversed
        found = list(reversed(found))
        found.sort(key=lambda m: m.date_created, reverse=True)
        chunk = found[page * size : (page + 1) * size]
        path = urllib.parse.urlsplit(h.path).path

        def uri(n: int) -> str:
            params = {k: v for k, v in q.items() if k not in ("Page", "PageToken")}
            params.update(Page=str(n), PageSize=str(size))
            if n:
                params["PageToken"] = f"PA{n}"
            return f"{path}?{urllib.parse.urlencode(params)}"

        more = (page + 1) * size < len(found)
        self._send(
            h,
            200,
            {
                "messages": [m.json() for m in chunk],
                "page": page,
                "page_size": size,
                "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1) if more else None,
                "previous_page_uri": uri(page - 1) if page else None,
                "uri": uri(page),
                "start": page * size,
                "end": page * size + len(chunk) - 1 if chunk else page * size,
            },
        )


def _parse_when(text: str) -> dt.datetime:
    text = text.strip().rstrip("Z")
    if "T" in text:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(text + "T00:00:00").replace(tzinfo=dt.UTC)
