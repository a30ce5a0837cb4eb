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
import datetime as dt
import json
import random
import secrets
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
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
    seed: int | None = None

    def __post_init__(self) -> None:
        self.messages: list[StoredMessage] = []
        self.faults: deque[Fault] = deque()
        self.unsubscribed: set[str] = set()  # numbers that replied STOP at "Twilio"
        self.requests = 0
        self.creates = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._rand = random.Random(self.seed)
        self._httpd: ThreadingHTTPServer | None = None
        self.url = ""

    # -- control --------------------------------------------------------------------------

    def add_account(self, sid: str, token: str) -> None:
        self.accounts[sid] = token

    def unsubscribe(self, number: str) -> None:
        """The number replied STOP: every later send to it is refused with 21610, as
        Twilio does."""
        self.unsubscribed.add(number)

    def fail_next(self, n: int = 1, **fault: Any) -> None:
        for _ in range(n):
            self.faults.append(Fault(**fault))

    def start(self) -> TwilioServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._route(h, method)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, killed worker): as with Twilio, done is done
        finally:
            with self._lock:
                self.in_flight -= 1

    def _route(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if self.latency:
            time.sleep(self.latency)
        parsed = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(h.rfile.read(length).decode()) if length else {}
        query = urllib.parse.parse_qs(parsed.query)
        if not parsed.path.startswith(API):
            return self._send(h, 404, {"code": 20404, "message": "not found", "status": 404})
        rest = parsed.path[len(API) :]
        account, _, tail = rest.partition("/")
        if not tail and account.endswith(".json"):  # the account resource itself
            account, tail = account[: -len(".json")], ".json"
        if not self._authorised(h, account):
            return self._send(
                h,
                401,
                {
                    "code": 20003,
                    "message": "Authenticate",
                    "status": 401,
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                },
            )
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
            return self._send(h, 404, {"code": 20404, "message": "not found", "status": 404})
        return self._send(h, 405, {"code": 20004, "message": "method not allowed", "status": 405})

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
                if self._rand.random() < 0.5:
                    return Fault(status=500, message="Internal Server Error")
                return Fault(status=429, code=20429, message="Too Many Requests")
        return None

    def _create(self, h: BaseHTTPRequestHandler, account: str, form: dict[str, str]) -> None:
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        fault = self._next_fault(to)
        if fault is None and to in self.unsubscribed:
            fault = Fault(
                status=400, code=21610, message="Attempt to send to unsubscribed recipient"
            )
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status < 400:
                fault = None  # a delay only
            elif fault.rfc9457:
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
            else:
                payload: dict[str, Any] = {"message": fault.message, "status": fault.status}
                if fault.code is not None:
                    payload["code"] = fault.code
                return self._send(h, fault.status, payload)
        if not to or not from_ or not body:
            return self._send(
                h,
                400,
                {
                    "code": 21604 if not to else 21602,
                    "message": "A 'To' phone number and a Body are required.",
                    "status": 400,
                },
            )
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
        self._send(h, 201, msg.json())

    def _list(self, h: BaseHTTPRequestHandler, account: str, q: dict[str, str]) -> None:
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
        size = int(q.get("PageSize", "50"))
        found = sorted(found, key=lambda m: m.date_created, reverse=True)[:size]
        self._send(
            h,
            200,
            {
                "messages": [m.json() for m in found],
                "page": 0,
                "page_size": size,
                "first_page_uri": h.path,
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": h.path,
                "start": 0,
                "end": len(found),
            },
        )

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


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

    ``mode``: "accept" (250), "refuse" (550 for every recipient), "flaky" (451 for the
    first ``flaky_failures`` messages, then 250), "drop" (closes the connection after
    ``drop_after`` messages, once). ``tls``: "starttls" (required) or "ssl" (implicit TLS)
    with ``certfile``/``keyfile``; ``credentials``: (user, password) required to send.
    """

    def __init__(
        self,
        mode: str = "accept",
        *,
        flaky_failures: int = 1,
        drop_after: int = 2,
        delay_after_store: float = 0.0,
        tls: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the SMTP sink needs aiosmtpd: pip install 'erp-sms[demo]' (or the test extra)"
            ) from exc
        self.mode = mode
        self.delay_after_store = delay_after_store  # store, then wait before answering 250
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
        self._controller = Controller(self, hostname=self.host, port=self.port, **kwargs)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.mode == "refuse":
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.mode == "flaky" and self.flaky_failures > 0:
            self.flaky_failures -= 1
            return "451 4.3.0 try again later"
        if self.mode == "drop" and not self._dropped and len(self.received) >= self.drop_after:
            self._dropped = True
            server.transport.close()
            return "421 closing"
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        if self.delay_after_store:
            import asyncio

            await asyncio.sleep(self.delay_after_store)
        return "250 OK queued"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
