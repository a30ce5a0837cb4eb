"""One exception hierarchy for the plugin.

Each class's docstring is its default message. Transient, permanent and configuration
errors are distinct types so that a retry loop can never swallow a configuration problem.
"""

from __future__ import annotations


class ErpSmsError(Exception):
    """erp-sms failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigurationError(ErpSmsError):
    """erp-sms is not configured correctly; see docs/operations.md "Configuration"."""


class InputError(ErpSmsError):
    """The input is not valid."""


class AddressError(InputError):
    """The contact's text-message address (Email 2) is not usable."""


class TemplateError(InputError):
    """The text-message template cannot be used."""


class StaleEdit(InputError):
    """Someone saved this since you opened it: nothing was saved. Reload and try again."""


class UnknownEventError(InputError):
    """No such event is registered."""


class DeliveryError(ErpSmsError):
    """A channel could not deliver the message.

    ``code`` is the provider's error code (Twilio code or SMTP reply code) when there is one.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        code: int | None = None,
        provider: str = "",
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.provider = provider
        self.max_attempts = max_attempts


class TransientError(DeliveryError):
    """The send failed for a reason that may pass; it will be retried.

    ``maybe_sent``: the request may have reached the provider (a timeout, a dropped
    connection after the request went out, an answer we could not read): the provider is
    asked before the text is sent again or given up on. ``throttled``: the provider asked
    us to slow down (HTTP 429) — our doing, not the text's: the attempt does not count, and
    ``retry_after`` (seconds, from the provider's Retry-After) says when to try again.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        code: int | None = None,
        provider: str = "",
        max_attempts: int | None = None,
        maybe_sent: bool = False,
        throttled: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, provider=provider, max_attempts=max_attempts)
        self.maybe_sent = maybe_sent
        self.throttled = throttled
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """The send failed for good; retrying will not help."""


class OptedOutError(PermanentError):
    """The recipient opted out of texts from this sender."""


class ChannelConfigurationError(ConfigurationError):
    """The channel's credentials or settings were rejected; messages are held for staff.

    A ``ConfigurationError``, not a ``DeliveryError``: no retry loop that catches delivery
    errors can swallow it.
    """

    def __init__(
        self, message: str | None = None, *, code: int | None = None, provider: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.provider = provider
