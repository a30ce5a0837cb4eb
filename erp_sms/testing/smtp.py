"""An SMTP sink on loopback (aiosmtpd) that behaves like Postfix where it matters: a
refused transaction stays open until RSET, 8BITMIME and SMTPUTF8 only when offered."""

from __future__ import annotations

import random
import threading
from typing import Any

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
        port: int = 0,
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
        self.port = port or _free_port()
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
