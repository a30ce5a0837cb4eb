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
from email.policy import SMTP, SMTPUTF8, Policy
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from io import BytesIO

from sqlalchemy.orm import Session

from ..addresses import mask
from ..config import Settings
from ..errors import ChannelConfigurationError, ConfigurationError, PermanentError, TransientError
from ..outbox import Claimed
from .base import Channel, SendResult

log = logging.getLogger(__name__)

# Bodies with characters outside ASCII: quoted-printable or base64 unless the server
# offers 8BITMIME (RFC 6152); headers as RFC 2047 words unless SMTPUTF8 (RFC 6531).
_SEVEN_BIT = SMTP.clone(cte_type="7bit")
_EIGHT_BIT = SMTP
_UTF8 = SMTPUTF8


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _smtp_error(
    code: int, reply: bytes | str, what: str
) -> TransientError | PermanentError | ChannelConfigurationError:
    """The error for a refusal: the relay's configuration (every text would meet it:
    texts held), a passing fault (4xx) or this text's (5xx)."""
    text = _text(reply)
    fix = _configuration_fault(code, text)
    if fix is not None:
        return ChannelConfigurationError(
            f"SMTP relay refused {what} ({code} {text}): {fix}".strip(), code=code, provider="smtp"
        )
    message = f"SMTP server refused {what}: {code} {text}".strip()
    if 400 <= code < 500:
        return TransientError(message, code=code, provider="smtp")
    return PermanentError(message, code=code, provider="smtp")


_RELAY_DENIED = (
    "relay access denied",
    "relaying denied",
    "access denied",
    "not permitted to relay",
)


def _configuration_fault(code: int, text: str) -> str | None:
    """What to set when a refusal is the relay's verdict on erp-sms's settings rather
    than on the text (DESIGN.md "SMTP after a refused message"), else None."""
    lowered = text.lower()
    if code == 530 and "starttls" in lowered:
        return "the relay requires TLS: set ERP_SMS_SMTP_SECURITY=starttls"
    if code == 530 or (code in (550, 553, 554) and any(w in lowered for w in _RELAY_DENIED)):
        return (
            "the relay does not let erp-sms send without a login: set ERP_SMS_SMTP_USER and "
            "ERP_SMS_SMTP_PASSWORD (or allow this host on the relay)"
        )
    return None


class _OutOfStep(Exception):
    """503: the server's idea of the session differs from ours (a transaction left
    open) — the session's fault, never the text's: start a new one."""


class EmailGatewayChannel(Channel):
    """Plain-text mail to the contact's carrier gateway, over one SMTP connection per
    instance. It cannot tell whether an earlier attempt went out (``find_previous_send``
    is the base's None): see docs/operations.md "Delivery guarantees"."""

    name = "email_gateway"
    uses_handover_barrier = True  # SMTP cannot be asked whether it has a text

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
        name, address = parseaddr(settings.smtp_from)
        if "@" not in address:
            raise ConfigurationError(
                f"ERP_SMS_SMTP_FROM={settings.smtp_from!r} is not an email address: set it to "
                "the address gateway texts come from (sms@example.com)"
            )
        # A domain with accents goes out in its ASCII (IDNA) form, which every relay
        # takes; accents before the @ need the relay's SMTPUTF8.
        local, _, domain = address.rpartition("@")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ConfigurationError(
                f"ERP_SMS_SMTP_FROM={settings.smtp_from!r}: the domain is not a valid "
                "domain name; set an address the relay accepts"
            ) from None
        self.envelope_from = f"{local}@{domain}"
        self.needs_smtputf8 = not local.isascii()
        self.sender = formataddr((name, self.envelope_from)) if name else self.envelope_from
        self.concurrency = max(1, settings.dispatch.smtp_connections)
        self._smtp: smtplib.SMTP | None = None
        self._message_ids: dict[int, str] = {}
        self._head: bytes | None = None  # the From header, encoded once

    def _connect(self) -> smtplib.SMTP:
        return connect_smtp(self.settings)

    def _build(self, message: Claimed, policy: Policy = _SEVEN_BIT) -> EmailMessage:
        assert message.address is not None
        em = EmailMessage(policy=policy)
        em["From"] = self.sender
        em["To"] = message.address
        em["Subject"] = ""  # gateways prepend the subject to the text: keep it empty
        em["Date"] = formatdate(localtime=False)
        em["Message-ID"] = self._new_message_id(message)
        em.set_content(message.body)
        return em

    def _new_message_id(self, message: Claimed) -> str:
        domain = self.envelope_from.rpartition("@")[2] or None
        self._message_ids[message.id] = make_msgid(idstring=f"erp-sms.{message.id}", domain=domain)
        return self._message_ids[message.id]

    def _prepare(self, smtp: smtplib.SMTP, message: Claimed) -> tuple[bytes, list[str]]:
        """The DATA bytes and MAIL FROM options for this server: a text with characters
        outside ASCII goes 8-bit with ``BODY=8BITMIME`` only where the server offers it,
        else quoted-printable (7-bit); an address with accents before the @ needs
        SMTPUTF8."""
        options: list[str] = []
        utf8 = self.needs_smtputf8
        if utf8:
            if not smtp.has_extn("smtputf8"):
                raise ChannelConfigurationError(
                    f"ERP_SMS_SMTP_FROM={self.envelope_from!r} has characters outside ASCII "
                    "before the @ and the relay does not offer SMTPUTF8: use an ASCII address",
                    provider="smtp",
                )
            options.append("SMTPUTF8")
        eight_bit = not message.body.isascii() and smtp.has_extn("8bitmime")
        if eight_bit or utf8:
            options.append("BODY=8BITMIME")
        return self._data_bytes(message, eight_bit=eight_bit, utf8=utf8), options

    def _data_bytes(
        self, message: Claimed, *, eight_bit: bool = False, utf8: bool = False
    ) -> bytes:
        """The DATA bytes of ``message``. Plain-ASCII texts (nearly all) are assembled
        from a header block built once per instance, the body encoded as ``EmailMessage``
        would encode it (7bit, or quoted-printable past 78 characters a line); anything
        else goes through ``EmailMessage``. Building and flattening a message object
        per text was half the cost of a gateway send."""
        assert message.address is not None
        body = message.body
        if utf8 or not _PLAIN.fullmatch(body) or len(message.address) > _MAX_TO:
            policy = _UTF8 if utf8 else _EIGHT_BIT if eight_bit else _SEVEN_BIT
            return _wire(self._build(message, policy))
        if self._head is None:
            em = EmailMessage(policy=_SEVEN_BIT)
            em["From"] = self.sender
            self._head = _flatten(em).rstrip(b"\r\n") + b"\r\n"
        lines = body.splitlines()
        text = "\n".join(lines) + "\n"
        if max((len(x) for x in lines), default=0) <= _MAX_LINE:
            cte = "7bit"
        else:
            sniff = "\n".join(lines[:10]) + "\n"  # EmailMessage's choice, made the same way
            if len(quoprimime.body_encode(sniff, _MAX_LINE)) > len(b2a_base64(sniff.encode())):
                return _wire(self._build(message, _SEVEN_BIT))  # base64 (a text full of "=")
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
        for attempt in (1, 2):
            if self._smtp is None:
                self._smtp = self._connect()
            smtp = self._smtp
            try:
                smtp.ehlo_or_helo_if_needed()
                data, options = self._prepare(smtp, message)
                self._open(smtp, message, options)
            except _OutOfStep:
                # Not this text's fault: a new session, once.
                self._drop()
                if attempt == 2:
                    raise TransientError(
                        "the SMTP server answered 503 (commands out of sequence) on a new "
                        "connection too",
                        provider="smtp",
                    ) from None
                continue
            except smtplib.SMTPServerDisconnected:
                self._drop()
                if attempt == 2:
                    raise TransientError(
                        "SMTP server closed the connection", provider="smtp"
                    ) from None
                continue  # the connection went stale between messages: reconnect once
            except ChannelConfigurationError:
                self._drop()
                raise
            except OSError as exc:
                self._drop()
                raise TransientError(f"SMTP connection failed: {exc}", provider="smtp") from None
            return self._data(smtp, message, data)
        raise AssertionError("unreachable")

    def _open(self, smtp: smtplib.SMTP, message: Claimed, options: list[str]) -> None:
        """MAIL FROM, RCPT TO and DATA up to the server's 354: a refusal here is before
        any of the text went out. Every refusal is followed by RSET, so the next text
        starts a clean transaction."""
        assert message.address is not None
        for command, what, ok in (
            ("mail", f"sender {self.envelope_from}", (250,)),
            ("rcpt", f"recipient {mask(message.address)}", (250, 251)),
            ("data", "the message", (354,)),
        ):
            if command == "mail":
                code, reply = smtp.mail(self.envelope_from, options)
            elif command == "rcpt":
                code, reply = smtp.rcpt(message.address)
            else:
                code, reply = smtp.docmd("data")
            if code == 503:
                raise _OutOfStep(_text(reply))
            if code not in ok:
                self._reset(smtp, code)
                raise _smtp_error(code, reply, what)

    def _data(self, smtp: smtplib.SMTP, message: Claimed, data: bytes) -> SendResult:
        """The text and the server's answer. Once the whole text is written, a missing or
        late answer is never a reason to send it again: gateways give no receipts anyway,
        and a second copy is worse than an unconfirmed first. A refusal is followed by
        RSET: Postfix keeps a refused transaction open, and without it the next text's
        MAIL FROM would be refused (503) for this one's sake."""
        try:
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
        if code != 250:
            self._message_id(message)
            self._reset(smtp, code)
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


def connect_smtp(s: Settings) -> smtplib.SMTP:
    """A connection to the SMTP relay as the settings say (TLS, login), ready to send;
    a refusal of ours to fix is ``ChannelConfigurationError``, anything else
    ``TransientError`` (try again later). The gateway texts and staff's reply alerts
    use it."""
    timeout = s.dispatch.smtp_timeout_seconds
    smtp: smtplib.SMTP | None = None
    try:
        context = ssl.create_default_context(cafile=s.smtp_ca_file)
    except OSError as exc:
        raise ChannelConfigurationError(
            f"ERP_SMS_SMTP_CA_FILE={s.smtp_ca_file!r} cannot be read as a PEM file "
            f"({exc.strerror or exc}): point it at the CA certificate that signed the "
            "relay's",
            provider="smtp",
        ) from None
    try:
        if s.smtp_security == "ssl":
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=timeout)
            if s.smtp_security == "starttls":
                smtp.starttls(context=context)
        if smtp.sock is not None:
            # The final "." goes out as its own write, after the barrier: with Nagle
            # on it would wait for the ACK of the text (a 40 ms delayed ACK).
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if s.smtp_user:
            smtp.login(s.smtp_user, s.smtp_password or "")
    except ssl.SSLCertVerificationError as exc:
        _close_quietly(smtp)
        raise ChannelConfigurationError(
            f"the SMTP relay's certificate is not trusted ({exc.verify_message}): set "
            "ERP_SMS_SMTP_CA_FILE to the PEM file of the CA that signed it",
            provider="smtp",
        ) from None
    except smtplib.SMTPNotSupportedError:
        _close_quietly(smtp)
        raise ChannelConfigurationError(
            f"the SMTP relay {s.smtp_host}:{s.smtp_port} does not offer STARTTLS: set "
            "ERP_SMS_SMTP_SECURITY to ssl (implicit TLS) or none, as the relay expects",
            provider="smtp",
        ) from None
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
