"""The email-to-SMS gateway channel: plain-text mail over SMTP, one connection reused
across a batch. An SMTP 250 is not a delivery receipt: gateways give none."""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl
from binascii import b2a_base64
from collections.abc import Callable
from email import quoprimime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from io import BytesIO

from sqlalchemy.orm import Session

from ..addresses import mask
from ..config import Settings
from ..errors import ChannelConfigurationError, ConfigurationError, PermanentError, TransientError
from ..outbox import Claimed
from .base import Channel, SendResult

log = logging.getLogger(__name__)


def _smtp_error(code: int, reply: bytes | str, what: str) -> TransientError | PermanentError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    message = f"SMTP server refused {what}: {code} {text}".strip()
    if 400 <= code < 500:
        return TransientError(message, code=code, provider="smtp")
    return PermanentError(message, code=code, provider="smtp")


class EmailGatewayChannel(Channel):
    """Plain-text mail to the contact's carrier gateway, over one SMTP connection per
    instance. It cannot tell whether an earlier attempt went out (``find_previous_send``
    is the base's None): see README "Delivery guarantees"."""

    name = "email_gateway"

    @classmethod
    def configure(
        cls, session: Session, settings: Settings, sender: str | None = None
    ) -> Callable[[], EmailGatewayChannel] | None:
        cls(settings)  # ConfigurationError now (texts held), not in the sending thread
        return lambda: cls(settings)

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_from:
            raise ConfigurationError(
                "ERP_SMS_SMTP_FROM is not set: set it to the address gateway texts come from"
            )
        self.settings = settings
        self.sender = settings.smtp_from
        self.concurrency = max(1, settings.dispatch.smtp_connections)
        self._smtp: smtplib.SMTP | None = None
        self._message_ids: dict[int, str] = {}
        self._head: bytes | None = None  # the From header, encoded once

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        timeout = s.dispatch.smtp_timeout_seconds
        smtp: smtplib.SMTP | None = None
        try:
            if s.smtp_security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=timeout)
                if s.smtp_security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if smtp.sock is not None:
                # The final "." goes out as its own write, after the barrier: with Nagle
                # on it would wait for the ACK of the text (a 40 ms delayed ACK).
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password or "")
        except smtplib.SMTPAuthenticationError as exc:
            _close_quietly(smtp)
            raise ChannelConfigurationError(
                f"SMTP login refused ({exc.smtp_code}): check ERP_SMS_SMTP_USER and "
                "ERP_SMS_SMTP_PASSWORD",
                code=exc.smtp_code,
                provider="smtp",
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            _close_quietly(smtp)
            raise TransientError(
                f"cannot connect to SMTP {s.smtp_host}:{s.smtp_port}: {exc}", provider="smtp"
            ) from None
        return smtp

    def _build(self, message: Claimed) -> EmailMessage:
        assert message.address is not None
        em = EmailMessage()
        em["From"] = self.sender
        em["To"] = message.address
        em["Subject"] = ""  # gateways prepend the subject to the text: keep it empty
        em["Date"] = formatdate(localtime=False)
        em["Message-ID"] = self._new_message_id(message)
        em.set_content(message.body)
        return em

    def _new_message_id(self, message: Claimed) -> str:
        domain = self.sender.rpartition("@")[2] or None
        self._message_ids[message.id] = make_msgid(idstring=f"erp-sms.{message.id}", domain=domain)
        return self._message_ids[message.id]

    def _data_bytes(self, message: Claimed) -> bytes:
        """The DATA bytes of ``message``. Plain-ASCII texts (nearly all) are assembled
        from a header block built once per instance, the body encoded as ``EmailMessage``
        would encode it (7bit, or quoted-printable past 78 characters a line); anything
        else goes through ``EmailMessage``. Building and flattening a message object
        per text was half the cost of a gateway send."""
        assert message.address is not None
        body = message.body
        if not _PLAIN.fullmatch(body) or len(message.address) > _MAX_TO:
            return _wire(self._build(message))
        if self._head is None:
            em = EmailMessage()
            em["From"] = self.sender
            self._head = _flatten(em).rstrip(b"\r\n") + b"\r\n"
        lines = body.splitlines()
        text = "\n".join(lines) + "\n"
        if max((len(x) for x in lines), default=0) <= _MAX_LINE:
            cte = "7bit"
        else:
            sniff = "\n".join(lines[:10]) + "\n"  # EmailMessage's choice, made the same way
            if len(quoprimime.body_encode(sniff, _MAX_LINE)) > len(b2a_base64(sniff.encode())):
                return _wire(self._build(message))  # base64 (a text full of "=")
            cte, text = "quoted-printable", quoprimime.body_encode(text, _MAX_LINE)
        parts = [
            self._head,
            b"To: ",
            message.address.encode(),
            b"\r\nSubject:\r\nDate: ",
            formatdate(localtime=False).encode(),
            b"\r\nMessage-ID: ",
            self._new_message_id(message).encode(),
            b'\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: ',
            cte.encode(),
            b"\r\nMIME-Version: 1.0\r\n\r\n",
            _DOT.sub(b"..", text.replace("\n", "\r\n").encode("ascii")),
            _END,
        ]
        return b"".join(parts)

    def send(self, message: Claimed) -> SendResult:
        data = self._data_bytes(message)
        for attempt in (1, 2):
            if self._smtp is None:
                self._smtp = self._connect()
            try:
                self._envelope(self._smtp, message)
            except smtplib.SMTPServerDisconnected:
                self._drop()
                if attempt == 2:
                    raise TransientError(
                        "SMTP server closed the connection", provider="smtp"
                    ) from None
                continue  # the connection went stale between messages: reconnect once
            except OSError as exc:
                self._drop()
                raise TransientError(f"SMTP connection failed: {exc}", provider="smtp") from None
            return self._data(self._smtp, message, data)
        raise AssertionError("unreachable")

    def _envelope(self, smtp: smtplib.SMTP, message: Claimed) -> None:
        """MAIL FROM and RCPT TO: a refusal here is before any data went out."""
        assert message.address is not None
        smtp.ehlo_or_helo_if_needed()
        code, reply = smtp.mail(self.sender)
        if code != 250:
            self._reset(smtp, code)
            raise _smtp_error(code, reply, f"sender {self.sender}")
        code, reply = smtp.rcpt(message.address)
        if code not in (250, 251):
            self._reset(smtp, code)
            raise _smtp_error(code, reply, f"recipient {mask(message.address)}")

    def _data(self, smtp: smtplib.SMTP, message: Claimed, data: bytes) -> SendResult:
        """DATA, the text, and the server's answer. Once the whole text is written, a
        missing or late answer is never a reason to send it again: gateways give no
        receipts anyway, and a second copy is worse than an unconfirmed first."""
        try:
            code, reply = smtp.docmd("data")
            if code != 354:
                self._reset(smtp, code)
                raise _smtp_error(code, reply, "the message")
            smtp.send(data[: -len(_END)])
            self.before_handover()
            smtp.send(_END)
        except TransientError:
            self._drop()  # without the final "." the server discards the text
            raise
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            # The text was not completely written: without the final "." the server
            # discards it, so sending again is safe.
            self._drop()
            raise TransientError(f"SMTP connection failed: {exc}", provider="smtp") from None
        try:
            code, reply = smtp.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            why = "no answer in time" if isinstance(exc, TimeoutError) else f"{exc}"
            log.warning(
                "email gateway: message %s to %s handed over, not confirmed (%s)",
                message.id,
                mask(message.address or ""),
                why,
                extra={"message_id": message.id},
            )
            return SendResult(
                provider_id=self._message_id(message),
                provider_status="not confirmed",
                detail=(
                    f"sent, not confirmed by the mail server ({why}); not sent again — "
                    "gateways give no delivery receipt"
                ),
            )
        if code == 421:
            self._drop()
        if code != 250:
            raise _smtp_error(code, reply, "the message")
        log.info(
            "email gateway: message %s to %s accepted",
            message.id,
            mask(message.address or ""),
            extra={"message_id": message.id},
        )
        return SendResult(provider_id=self._message_id(message), provider_status="accepted")

    def _reset(self, smtp: smtplib.SMTP, code: int) -> None:
        if code == 421:  # the server is closing the connection
            self._drop()
            return
        try:
            smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def _message_id(self, message: Claimed) -> str | None:
        return self._message_ids.pop(message.id, None)

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        _close_quietly(smtp)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()


_END = b".\r\n"  # the end of DATA: the point after which the server may keep the text


def _wire(em: EmailMessage) -> bytes:
    """The message as DATA carries it: CRLF lines, leading dots doubled, the final dot."""
    data = _DOT.sub(b"..", _flatten(em))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + _END


def _flatten(em: EmailMessage) -> bytes:
    buf = BytesIO()
    BytesGenerator(buf).flatten(em, linesep="\r\n")
    return buf.getvalue()


_DOT = re.compile(rb"(?m)^\.")
_PLAIN = re.compile(r"[ -~\n]*")  # printable ASCII and newlines: the fast path's texts
_MAX_LINE = 78  # the email policy's line length: longer lines are quoted-printable
_MAX_TO = 70  # a To header longer than a line would be folded: the slow path does it


def _close_quietly(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        with contextlib.suppress(Exception):  # already broken; nothing to report
            smtp.close()
