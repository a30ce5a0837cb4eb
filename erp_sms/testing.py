"""Loopback servers for the demo, the tests — and a host's own tests: a
Twilio-compatible Messages API and an SMTP sink. Both bind to 127.0.0.1 only.

A host tests its integration against them like this (the SMTP sink needs the ``demo``
extra, ``pip install 'erp-sms[demo]'``)::

    from erp_sms.testing import SmtpSink, TwilioServer

    with TwilioServer() as twilio, SmtpSink() as smtp:
        twilio.add_account("AC…", "auth token")
        # ERP_SMS_TWILIO_API_URL=twilio.url, ERP_SMS_SMTP_HOST/PORT=smtp.host/smtp.port
        ...
        assert [m.to for m in twilio.messages] == ["+13125550101"]

``TwilioServer`` speaks enough of the 2010-04-01 Messages API for the real ``twilio``
client: create, fetch and list (To/From/DateSent filters), HTTP basic auth checked
against the account's token, and programmable faults: error bodies by code, HTTP 500,
slow answers, added latency, random transient failures. It can also post signed status
callbacks, as Twilio does.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import json
import random
import re
import secrets
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .segments import analyse

API = "/2010-04-01/Accounts/"


@dataclass
class Fault:
    """One programmed answer: an error (HTTP status + Twilio code) and/or a delay."""

    status: int = 400
    code: int | None = None
    message: str = "error"
    delay: float = 0.0
    to: str | None = None  # only for this recipient
    rfc9457: bool = False  # answer in the newer problem-details format
    hold: threading.Event | None = None  # wait for it before answering (no sleeping)
    body: bytes | None = None  # answer these bytes (text/html), not Twilio's JSON
    retry_after: int | None = None  # a Retry-After header (seconds), as on Twilio's 429s


@dataclass
class StoredMessage:
    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    status: str
    date_created: dt.datetime
    date_sent: dt.datetime | None  # None while queued, as Twilio leaves it
    status_callback: str | None
    num_segments: int
    price: str | None = None  # Twilio fills it in after sending
    arrived: float = field(default_factory=time.monotonic)  # when the create came in

    def json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "num_segments": str(self.num_segments),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": self.price,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": format_datetime(self.date_created, usegmt=True),
            "date_updated": format_datetime(self.date_created, usegmt=True),
            "date_sent": format_datetime(self.date_sent, usegmt=True) if self.date_sent else None,
            "messaging_service_sid": None,
            "uri": f"{API}{self.account_sid}/Messages/{self.sid}.json",
            "subresource_uris": {},
        }


@dataclass
class TwilioServer:
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

    def start(self) -> TwilioServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle on, the body waits for
            # the client's delayed ACK (40 ms on Linux) on a kept-alive connection —
            # latency no real API adds.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> TwilioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- status callbacks, as Twilio posts them ------------------------------------------

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

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self.requests += 1
            self._changed.notify_all()
            over = bool(self.concurrency_limit) and self.in_flight >= self.concurrency_limit
            if over:
                self.over_limit += 1
            else:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if over:
            h.rfile.read(int(h.headers.get("Content-Length") or 0))
            with contextlib.suppress(OSError):
                self._fault(h, Fault(status=429, code=20429, message="Too Many Requests"))
            return
        try:
            self._route(h, method)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, killed worker): as with Twilio, done is done
        except Exception as exc:  # a bad parameter gets an answer, never a dropped connection
            with contextlib.suppress(OSError):
                self._error(h, 400, 20001, f"invalid request: {exc}")
        finally:
            with self._lock:
                self.in_flight -= 1
                self._changed.notify_all()

    def _route(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if self.latency:
            time.sleep(self.latency)
        parsed = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(h.rfile.read(length).decode()) if length else {}
        query = urllib.parse.parse_qs(parsed.query)
        if not parsed.path.startswith(API):
            return self._error(h, 404, 20404, "The requested resource was not found")
        rest = parsed.path[len(API) :]
        account, _, tail = rest.partition("/")
        if not tail and account.endswith(".json"):  # the account resource itself
            account, tail = account[: -len(".json")], ".json"
        if not self._authorised(h, account):
            return self._error(h, 401, 20003, "Authenticate")
        if method == "GET" and tail == ".json":
            return self._send(
                h,
                200,
                {
                    "sid": account,
                    "friendly_name": "erp-sms local account",
                    "status": "active",
                    "type": "Full",
                },
            )
        if method == "POST" and tail == "Messages.json":
            return self._create(h, account, {k: v[0] for k, v in form.items()})
        if method == "GET" and tail == "Messages.json":
            return self._list(h, account, {k: v[0] for k, v in query.items()})
        if method == "GET" and tail.startswith("Messages/") and tail.endswith(".json"):
            sid = tail[len("Messages/") : -len(".json")]
            for m in self.messages:
                if m.sid == sid and m.account_sid == account:
                    return self._send(h, 200, m.json())
            return self._error(h, 404, 20404, "The requested resource was not found")
        return self._error(h, 405, 20004, "Method not allowed")

    def _authorised(self, h: BaseHTTPRequestHandler, account: str) -> bool:
        header = h.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        token = self.accounts.get(account)
        return user == account and token is not None and secrets.compare_digest(password, token)

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

    def _fault(self, h: BaseHTTPRequestHandler, fault: Fault) -> None:
        if fault.rfc9457:
            return self._send(
                h,
                fault.status,
                {
                    "type": f"https://www.twilio.com/docs/errors/{fault.code}",
                    "title": fault.message,
                    "status": fault.status,
                    "code": fault.code,
                    "detail": fault.message,
                },
            )
        payload: dict[str, Any] = {"message": fault.message, "status": fault.status}
        if fault.code is not None:
            payload["code"] = fault.code
            payload["more_info"] = f"https://www.twilio.com/docs/errors/{fault.code}"
        extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        return self._send(h, fault.status, payload, extra)

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

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: int, message: str) -> None:
        self._send(
            h,
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
        )

    @staticmethod
    def _raw(h: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "text/html; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def _pause(fault: Fault) -> None:
    if fault.hold is not None:
        fault.hold.wait()
    elif fault.delay:
        time.sleep(fault.delay)  # the server is slow: this is the simulation, not a wait


def _parse_when(text: str) -> dt.datetime:
    text = text.strip().rstrip("Z")
    if "T" in text:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(text + "T00:00:00").replace(tzinfo=dt.UTC)


def post_signed(url: str, params: dict[str, str], token: str) -> int:
    """POST a form to ``url`` with an ``X-Twilio-Signature`` made with ``token``."""
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(token).compute_signature(url, params)
    data = urllib.parse.urlencode(params).encode()
    req = urllib.request.Request(  # noqa: S310 - loopback URL chosen by the caller
        url,
        data=data,
        method="POST",
        headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# -- SMTP sink ---------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """An SMTP server on 127.0.0.1 that keeps what it receives (aiosmtpd).

    Like Postfix where it matters: a message refused at the end of DATA leaves its
    transaction open, and the next MAIL FROM gets ``503 5.5.1 Error: nested MAIL
    command`` until the client sends RSET (aiosmtpd alone forgives this).

    ``mode``: "accept" (250), "refuse" (550 for every recipient), "flaky" (451 for the
    first ``flaky_failures`` messages, then 250), "reject_data" (554 at the end of DATA
    for the first ``flaky_failures`` messages, then 250: a policy service's verdict),
    "relay_denied" (554 5.7.1 Relay access denied at RCPT: a relay that wants a login),
    "drop" (after ``drop_after`` messages
    the idle connection goes stale: the next MAIL FROM finds it closed, once), "vanish"
    (stores each mail, then closes the connection instead of answering), "down" (421 to
    every MAIL FROM: an outage). ``hold``: an event the server waits for after storing a
    mail and before answering 250 (a slow relay, without sleeping). ``tls``: "starttls"
    (required) or "ssl" (implicit TLS) with ``certfile``/``keyfile``; ``credentials``:
    (user, password) required to send. ``slow_rate``: the share of mails answered
    ``slow_seconds`` late. ``eight_bit``: whether EHLO offers 8BITMIME; ``smtputf8``:
    whether it offers SMTPUTF8. ``wait_for(n)`` waits until ``n`` mails arrived.
    """

    def __init__(
        self,
        mode: str = "accept",
        *,
        flaky_failures: int = 1,
        drop_after: int = 2,
        hold: threading.Event | None = None,
        slow_rate: float = 0.0,
        slow_seconds: float = 0.0,
        seed: int | None = None,
        tls: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        credentials: tuple[str, str] | None = None,
        eight_bit: bool = True,
        smtputf8: bool = False,
    ) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the SMTP sink needs aiosmtpd: pip install 'erp-sms[demo]' (or the test extra)"
            ) from exc
        self.mode = mode
        self.hold = hold
        self.slow_rate, self.slow_seconds = slow_rate, slow_seconds
        self.slow_answers = 0
        self._rand = random.Random(seed)
        self._arrived = threading.Condition()
        self.flaky_failures = flaky_failures
        self.drop_after = drop_after
        self.received: list[tuple[str, list[str], bytes]] = []
        self.sessions = 0
        self._dropped = False
        self.host = "127.0.0.1"
        self.port = _free_port()
        kwargs: dict[str, Any] = {}
        if tls is not None:
            import ssl

            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(certfile or "", keyfile)
            if tls == "ssl":
                kwargs["ssl_context"] = ctx
            else:
                kwargs.update(tls_context=ctx, require_starttls=True)
        if credentials is not None:
            from aiosmtpd.smtp import AuthResult

            def authenticator(
                server: Any, session: Any, envelope: Any, mechanism: str, data: Any
            ) -> Any:
                ok = (data.login.decode(), data.password.decode()) == credentials
                self.logins.append((data.login.decode(), ok))
                return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535

            # With implicit TLS aiosmtpd cannot see that the session is encrypted, and
            # warns (in its own thread) when AUTH is required without TLS: there AUTH is
            # offered and checked, not required.
            kwargs.update(
                authenticator=authenticator,
                auth_required=tls != "ssl",
                auth_require_tls=tls == "starttls",
            )
        self.logins: list[tuple[str, bool]] = []
        self.eight_bit = eight_bit
        self.nested: list[str] = []
        self.mail_options: list[
            list[str]
        ] = []  # each received mail's MAIL FROM options  # MAIL FROMs refused as nested (no RSET after a refusal)
        kwargs["enable_SMTPUTF8"] = smtputf8
        self._controller = Controller(self, hostname=self.host, port=self.port, **kwargs)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        if not self.eight_bit:
            responses = [r for r in responses if "8BITMIME" not in r]
        return responses

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        session.erp_sms_open = False
        return "250 2.0.0 Ok"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any
    ) -> str:
        if self.mode == "down":
            return "421 4.3.2 service not available"
        if getattr(session, "erp_sms_open", False):  # Postfix: the refused one is still open
            self.nested.append(address)
            return "503 5.5.1 Error: nested MAIL command"
        if self.mode == "drop" and not self._dropped and len(self.received) >= self.drop_after:
            self._dropped = True
            server.transport.close()
            return "421 closing"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.mode == "refuse":
            return "550 5.1.1 mailbox unavailable"
        if self.mode == "relay_denied":
            return f"554 5.7.1 <{address}>: Relay access denied"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.mode in ("flaky", "reject_data") and self.flaky_failures > 0:
            self.flaky_failures -= 1
            session.erp_sms_open = True  # until RSET, as Postfix keeps it
            if self.mode == "flaky":
                return "451 4.3.0 try again later"
            return "554 5.7.1 message rejected by policy"
        with self._arrived:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            self.mail_options.append(list(envelope.mail_options))
            self._arrived.notify_all()
        if self.mode == "vanish":
            server.transport.close()
            return "250 OK (never heard)"
        if self.hold is not None:
            import asyncio

            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait)
        elif self.slow_rate and self._rand.random() < self.slow_rate:
            import asyncio

            self.slow_answers += 1
            await asyncio.sleep(self.slow_seconds)  # a slow relay (simulated, server side)
        return "250 OK queued"

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Block until ``count`` mails have arrived (AssertionError after ``timeout``)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} of {count} mails arrived")

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()  # a held answer must not keep the server from stopping
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def queue_texts(
    engine: Any,
    n: int,
    *,
    gateway: bool = True,
    prefix: str = "k",
    start: int = 0,
    body: str = "order {order} is in production",
) -> None:
    """``n`` queued texts written as the notifier writes them, straight into the outbox of
    ``engine`` (tests, soaks and benchmarks that need a backlog without the host path).
    Numbers are 312-555-0000 upwards; ``body`` may name ``{order}``."""
    from sqlalchemy import insert

    from .db import utcnow
    from .models import Status, message_table

    now = utcnow()
    rows = []
    for i in range(start, start + n):
        number = f"312{555 + i // 10000:03d}{i % 10000:04d}"
        address = f"{number}@vtext.com" if gateway else f"+1{number}"
        rows.append(
            {
                "idempotency_key": f"{prefix}{i}",
                "event": "sent_to_production",
                "template": "SMS S2P",
                "order_ref": str(i),
                "order_number": f"SO-{i}",
                "status": Status.QUEUED,
                "body": body.format(order=f"SO-{i}"),
                "attempts": 0,
                "maybe_sent": False,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
                "channel": "email_gateway" if gateway else "twilio",
                "address": address,
                "raw_address": address,
                "recipient": f"+1{number}",
            }
        )
    with engine.begin() as conn:
        for first in range(0, len(rows), 5000):
            conn.execute(insert(message_table), rows[first : first + 5000])
