"""The email-to-SMS gateway channel: plain-text mail over SMTP, one connection reused
across a batch. An SMTP 250 is not a delivery receipt: gateways give none."""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..addresses import mask
from ..config import Settings
from ..errors import ChannelConfigurationError, ConfigurationError, PermanentError, TransientError
from ..outbox import Claimed
from .base import SendResult

log = logging.getLogger(__name__)


def _smtp_error(code: int, reply: bytes | str, what: str) -> TransientError | PermanentError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    message = f"SMTP server refused {what}: {code} {text}".strip()
    if 400 <= code < 500:
        return TransientError(message, code=code, provider="smtp")
    return PermanentError(message, code=code, provider="smtp")


class EmailGatewayChannel:
    name = "email_gateway"

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_from:
            raise ConfigurationError(
                "ERP_SMS_SMTP_FROM is not set: set it to the address gateway texts come from"
            )
        self.settings = settings
        self.sender = settings.smtp_from
        self._smtp: smtplib.SMTP | None = None

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
        domain = self.sender.rpartition("@")[2] or None
        em["Message-ID"] = make_msgid(idstring=f"erp-sms.{message.id}", domain=domain)
        em.set_content(message.body)
        return em

    def send(self, message: Claimed) -> SendResult:
        em = self._build(message)
        for attempt in (1, 2):
            if self._smtp is None:
                self._smtp = self._connect()
            try:
                refused = self._smtp.send_message(em)
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                raise _smtp_error(code, reply, f"recipient {mask(message.address)}") from None
            except smtplib.SMTPSenderRefused as exc:
                raise _smtp_error(exc.smtp_code, exc.smtp_error, f"sender {self.sender}") from None
            except smtplib.SMTPServerDisconnected:
                self._drop()
                if attempt == 2:
                    raise TransientError(
                        "SMTP server closed the connection", provider="smtp"
                    ) from None
                continue  # the connection went stale between messages: reconnect once
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421:  # the server is closing the connection
                    self._drop()
                raise _smtp_error(exc.smtp_code, exc.smtp_error, "the message") from None
            except OSError as exc:
                self._drop()
                if attempt == 2:
                    raise TransientError(
                        f"SMTP connection failed: {exc}", provider="smtp"
                    ) from None
                continue
            if refused:
                code, reply = next(iter(refused.values()))
                raise _smtp_error(code, reply, f"recipient {mask(message.address)}")
            log.info(
                "email gateway: message %s to %s accepted",
                message.id,
                mask(message.address),
                extra={"message_id": message.id},
            )
            return SendResult(provider_id=em["Message-ID"], provider_status="accepted")
        raise AssertionError("unreachable")

    def find_previous_send(self, message: Claimed) -> SendResult | None:
        return None  # SMTP cannot tell; see README "Delivery guarantees"

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


def _close_quietly(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        with contextlib.suppress(Exception):  # already broken; nothing to report
            smtp.close()
