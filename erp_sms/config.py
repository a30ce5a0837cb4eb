"""Settings from environment variables (CONTRACT.md "Configuration").

An optional TOML file named by ``ERP_SMS_CONFIG`` adds the dispatch tunables; the
environment wins where both say something.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigurationError

SMTP_SECURITY = ("none", "starttls", "ssl")


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher claims, paces and retries."""

    batch_size: int = 50
    concurrency: int = 16  # Twilio requests in flight (a lane's ceiling; 429s shrink it)
    lease_seconds: float = 300.0
    poll_seconds: float = 2.0
    max_attempts: int = 6
    backoff_base_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    rate_per_second: float = 0.0  # per sender; 0 = no pacing (Twilio queues what is over)
    #: Pace each Twilio sender at its carrier rate (US long code 1 segment/s, toll-free 3,
    #: short code 100) when ``rate_per_second`` is 0; Twilio fails what waits in its queue
    #: beyond about 10 hours, so large runs from one number should be paced.
    pace_by_sender: bool = False
    http_timeout_seconds: float = 15.0
    smtp_timeout_seconds: float = 30.0
    #: SMTP connections sending at once. Each may leave one text sent but unrecorded when
    #: the worker is killed (gateways cannot be asked): more connections, more speed, a
    #: wider duplicate window (docs/operations.md "Delivery guarantees").
    smtp_connections: int = 1


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///erp_sms.db"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_security: str = "none"
    smtp_from: str | None = None
    smtp_ca_file: str | None = None  # PEM file of a private CA that signed the relay's cert
    twilio_api_url: str = "https://api.twilio.com"
    public_url: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    default_region: str = "US"
    host_module: str | None = None
    default_timezone: str = "America/Chicago"
    inline_dispatch: bool = False
    # The host's own endpoint for what happened (Standard Webhooks), and its secret.
    host_webhook_url: str | None = None
    host_webhook_secret: str | None = field(default=None, repr=False)
    log_format: str = "text"  # text | json (ERP_SMS_LOG_FORMAT)
    dispatch: DispatchSettings = DispatchSettings()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        file_values: dict[str, Any] = {}
        path = env.get("ERP_SMS_CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    file_values = tomllib.load(fh)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigurationError(f"ERP_SMS_CONFIG={path}: cannot read it ({exc})") from exc
            except UnicodeDecodeError:
                raise ConfigurationError(
                    f"ERP_SMS_CONFIG={path} is not UTF-8 text: save it as UTF-8"
                ) from None

        unknown = sorted(
            k for k, v in file_values.items() if not isinstance(v, dict) and k not in KEYS
        )
        if unknown:
            close = difflib.get_close_matches(unknown[0], KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigurationError(
                f"ERP_SMS_CONFIG: unknown setting(s) {', '.join(unknown)}{hint}; known: "
                f"{', '.join(KEYS)}, and the [dispatch] table"
            )

        def get(name: str, default: str | None) -> str | None:
            value = env.get(f"ERP_SMS_{name}")
            if value is None or value == "":
                fv = file_values.get(name.lower())
                return default if fv is None else str(fv)
            return value

        security = (get("SMTP_SECURITY", "none") or "none").lower()
        if security not in SMTP_SECURITY:
            raise ConfigurationError(
                f"ERP_SMS_SMTP_SECURITY={security!r}: use one of {', '.join(SMTP_SECURITY)}"
            )
        port_text = get("SMTP_PORT", "465" if security == "ssl" else "25") or "25"
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigurationError(
                f"ERP_SMS_SMTP_PORT={port_text!r}: use a port number such as 25 or 587"
            ) from None
        dispatch = DispatchSettings()
        sections = {k for k, v in file_values.items() if isinstance(v, dict)}
        if sections - {"dispatch"}:
            raise ConfigurationError(
                f"ERP_SMS_CONFIG: unknown section(s) "
                f"{', '.join(f'[{n}]' for n in sorted(sections - {'dispatch'}))}; known: "
                "[dispatch] (the other settings go at the top, e.g. database_url = …)"
            )
        section = file_values.get("dispatch", {})
        if isinstance(section, dict):
            known = DispatchSettings.__dataclass_fields__
            unknown = sorted(set(section) - set(known))
            if unknown:
                raise ConfigurationError(
                    f"ERP_SMS_CONFIG [dispatch]: unknown setting(s) {', '.join(unknown)}; "
                    f"known: {', '.join(known)}"
                )
            dispatch = replace(dispatch, **{k: _checked(k, v) for k, v in section.items()})
        numbers: dict[str, Any] = {}
        for name, kind in _DISPATCH_NUMBERS.items():
            var = f"ERP_SMS_DISPATCH_{name.upper()}"
            value = env.get(var)
            if value:
                try:
                    numbers[name] = kind(value)
                except ValueError:
                    raise ConfigurationError(f"{var}={value!r}: use a number") from None
        pace = env.get("ERP_SMS_DISPATCH_PACE_BY_SENDER")
        if pace:
            numbers["pace_by_sender"] = _switch("ERP_SMS_DISPATCH_PACE_BY_SENDER", pace)
        dispatch = replace(dispatch, **numbers)
        return cls(
            database_url=get("DATABASE_URL", cls.database_url) or cls.database_url,
            smtp_host=get("SMTP_HOST", "localhost") or "localhost",
            smtp_port=port,
            smtp_user=get("SMTP_USER", None),
            smtp_password=get("SMTP_PASSWORD", None),
            smtp_security=security,
            smtp_from=get("SMTP_FROM", None),
            smtp_ca_file=(get("SMTP_CA_FILE", None) or None),
            twilio_api_url=(get("TWILIO_API_URL", cls.twilio_api_url) or cls.twilio_api_url),
            public_url=_public_url(get("PUBLIC_URL", None)),
            secret_key=get("SECRET_KEY", None),
            default_region=_region(get("DEFAULT_REGION", "US") or "US"),
            host_module=(get("HOST_MODULE", None) or None),
            default_timezone=_timezone(get("DEFAULT_TIMEZONE", cls.default_timezone)),
            inline_dispatch=_switch("ERP_SMS_INLINE_DISPATCH", get("INLINE_DISPATCH", "off")),
            host_webhook_url=_host_webhook_url(get("HOST_WEBHOOK_URL", None)),
            host_webhook_secret=_host_webhook_secret(
                get("HOST_WEBHOOK_URL", None), get("HOST_WEBHOOK_SECRET", None)
            ),
            log_format=log_format(get("LOG_FORMAT", "text")),
            dispatch=dispatch,
        )


#: The settings (ERP_SMS_ + the upper-case name in the environment, the name itself at the
#: top of the ERP_SMS_CONFIG file).
KEYS = (
    "database_url", "smtp_host", "smtp_port", "smtp_user", "smtp_password", "smtp_security",
    "smtp_from", "smtp_ca_file", "twilio_api_url", "public_url", "secret_key",
    "default_region", "host_module", "default_timezone", "inline_dispatch",
    "host_webhook_url", "host_webhook_secret", "log_format",
)  # fmt: skip
#: Environment variables that are not settings but are erp-sms's own (tests, the CI).
OTHER_VARIABLES = ("ERP_SMS_CONFIG",)
OTHER_PREFIXES = ("ERP_SMS_TEST_", "ERP_SMS_SCREENSHOTS", "ERP_SMS_BENCH")


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``ERP_SMS_*`` variables that are no setting (a typo is otherwise silently
    ignored), each with the setting it is probably meant to be."""
    names = [f"ERP_SMS_{k.upper()}" for k in KEYS]
    dispatch = [f"ERP_SMS_DISPATCH_{k.upper()}" for k in _DISPATCH_ENV]
    out = []
    for var in sorted(environ):
        if not var.startswith("ERP_SMS_") or var.startswith(OTHER_PREFIXES):
            continue
        if var in names or var in dispatch or var in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(var, names + dispatch, n=1)
        out.append((var, close[0] if close else None))
    return out


# The [dispatch] settings the environment may also set (ERP_SMS_DISPATCH_…).
_DISPATCH_NUMBERS: dict[str, type] = {
    "concurrency": int,
    "batch_size": int,
    "rate_per_second": float,
    "smtp_connections": int,
}
_DISPATCH_ENV = (*_DISPATCH_NUMBERS, "pace_by_sender")

_ON = ("1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no", "")


def _switch(var: str, value: str | None) -> bool:
    text = (value or "").strip().lower()
    if text not in _ON + _OFF:
        raise ConfigurationError(f"{var}={value!r}: use on or off")
    return text in _ON


def _http_url(var: str, text: str | None, what: str) -> str | None:
    """An http(s) URL setting (None when unset); one line saying ``what`` it should be
    otherwise."""
    from urllib.parse import urlsplit

    if not text or not text.strip():
        return None
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{var}={text!r}: use {what}")
    return text.strip()


def _public_url(text: str | None) -> str | None:
    url = _http_url(
        "ERP_SMS_PUBLIC_URL",
        text,
        "the address Twilio and browsers reach `erp-sms serve` at, e.g. https://sms.example.com",
    )
    return url.rstrip("/") if url else None


LOG_FORMATS = ("text", "json")


def log_format(value: str | None) -> str:
    """``ERP_SMS_LOG_FORMAT`` checked: text (the default) or json."""
    name = (value or "text").strip().lower()
    if name not in LOG_FORMATS:
        raise ConfigurationError(f"ERP_SMS_LOG_FORMAT={value!r}: use text or json")
    return name


_ZERO_OK = frozenset({"rate_per_second", "backoff_base_seconds", "backoff_max_seconds"})


def _checked(name: str, value: Any) -> Any:
    """A ``[dispatch]`` value of the type its setting takes, and not below its least:
    one line naming the setting otherwise (never a traceback or a database error)."""
    default = getattr(DispatchSettings(), name)
    where = f"ERP_SMS_CONFIG [dispatch] {name} = {value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where}: use true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where}: use a number, e.g. {name} = {default}")
    if isinstance(default, int) and not isinstance(value, int):
        raise ConfigurationError(f"{where}: use a whole number, e.g. {name} = {default}")
    zero_ok = name in _ZERO_OK  # no pacing, no wait between tries
    if value < 0 or (value == 0 and not zero_ok):
        more = "0 or more" if zero_ok else "more than 0"
        raise ConfigurationError(f"{where}: use {more}, e.g. {name} = {default}")
    return type(default)(value)


def _host_webhook_url(text: str | None) -> str | None:
    return _http_url(
        "ERP_SMS_HOST_WEBHOOK_URL",
        text,
        "the host's endpoint as an http(s) URL, e.g. https://erp.example.com/hooks/erp-sms",
    )


def _host_webhook_secret(url: str | None, secret: str | None) -> str | None:
    """The signing secret (``whsec_`` and base64, as the Standard Webhooks specification
    says); required with the URL."""
    if not url:
        return secret or None
    if not secret:
        raise ConfigurationError(
            "ERP_SMS_HOST_WEBHOOK_URL is set but ERP_SMS_HOST_WEBHOOK_SECRET is not: set it to "
            "a whsec_… secret the host verifies with (e.g. whsec_ followed by the base64 of 32 "
            "random bytes)"
        )
    import base64
    import binascii

    raw = secret.strip().removeprefix("whsec_")
    try:
        if len(base64.b64decode(raw + "==", validate=False)) < 16:
            raise ValueError
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            "ERP_SMS_HOST_WEBHOOK_SECRET is not a whsec_… secret of at least 16 bytes in "
            "base64: generate one (python -c \"import base64,os;print('whsec_'+"
            'base64.b64encode(os.urandom(32)).decode())")'
        ) from None
    return secret.strip()


def _region(text: str) -> str:
    import phonenumbers

    region = text.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigurationError(
            f"ERP_SMS_DEFAULT_REGION={text!r}: use a two-letter region code such as US, CA or GB"
        )
    return region


def _timezone(text: str | None) -> str:
    import zoneinfo

    name = (text or Settings.default_timezone).strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"ERP_SMS_DEFAULT_TIMEZONE={name!r}: use an IANA time zone such as America/Chicago"
        ) from None
    return name


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def set_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (``None`` re-reads the environment on next use)."""
    global _current
    _current = settings
