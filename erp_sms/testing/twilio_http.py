"""The loopback Twilio's HTTP plumbing: a threaded server on 127.0.0.1, basic auth,
routing to the API's handlers, latency and the concurrency limit, faults and error
bodies, JSON answers; and signed callbacks posted as Twilio posts them."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from .twilio_data import API, Fault, StoredMessage


class TwilioHttp:
    """The HTTP side of ``TwilioServer`` (a mixin): what it needs of the API side is
    declared here."""

    accounts: dict[str, str]
    latency: float
    concurrency_limit: int
    messages: list[StoredMessage]
    requests: int
    in_flight: int
    max_in_flight: int
    over_limit: int
    url: str
    _lock: threading.Lock
    _changed: threading.Condition
    _httpd: ThreadingHTTPServer | None

    def _create(self, h: BaseHTTPRequestHandler, account: str, form: dict[str, str]) -> None:
        raise NotImplementedError

    def _list(self, h: BaseHTTPRequestHandler, account: str, q: dict[str, str]) -> None:
        raise NotImplementedError

    def start(self) -> Self:
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

        # A fixed port when given (``python -m erp_sms.testing``), else a free one.
        self._httpd = ThreadingHTTPServer(("127.0.0.1", getattr(self, "port", 0)), Handler)
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- status callbacks, as Twilio posts them ------------------------------------------

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
