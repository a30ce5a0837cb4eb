"""The data in ``rules/``: carrier gateways, Twilio error policy and statuses, rule types,
options, reply keywords. Read once, frozen, and looked up by the rest of the plugin."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .models import Status
from .sendwindow import now


def _load(name: str) -> dict[str, Any]:
    text = resources.files("erp_sms.rules").joinpath(name).read_text(encoding="utf-8")
    return tomllib.loads(text)


# -- carrier gateways ------------------------------------------------------------------


SUNSET_WARNING_DAYS = 90


def _today() -> dt.date:
    """Today, by the planning clock (``sendwindow.set_clock`` in tests), in UTC."""
    return now().date()


@dataclass(frozen=True)
class Carrier:
    name: str
    domains: tuple[str, ...]
    status: str  # active | sunsetting | shutdown | unknown
    sunset: dt.date | None
    note: str = ""
    source: str = ""  # where the date comes from (rules/carriers.toml)

    def is_shut_down(self, today: dt.date | None = None) -> bool:
        today = today or _today()
        if self.status == "shutdown":
            return True
        return self.sunset is not None and today >= self.sunset

    def days_left(self, today: dt.date | None = None) -> int | None:
        """Days until the gateway shuts down when that is within ``SUNSET_WARNING_DAYS``
        (texts still go out, flagged in the report and the dashboard); else None."""
        today = today or _today()
        if self.sunset is None or self.is_shut_down(today):
            return None
        left = (self.sunset - today).days
        return left if left <= SUNSET_WARNING_DAYS else None

    def describe(self, today: dt.date | None = None) -> str:
        """A sentence for staff, e.g. 'AT&T shut down its gateway on 2025-06-17'."""
        if self.is_shut_down(today):
            when = f" on {self.sunset.isoformat()}" if self.sunset else ""
            return f"{self.name} shut down its email-to-SMS gateway{when}"
        if self.sunset:
            return f"{self.name} plans to shut down its email-to-SMS gateway on {self.sunset}"
        return f"{self.name} email-to-SMS gateway ({self.status})"


@cache
def carriers() -> tuple[Carrier, ...]:
    out = []
    for row in _load("carriers.toml")["carrier"]:
        out.append(
            Carrier(
                name=row["name"],
                domains=tuple(d.lower() for d in row["domains"]),
                status=row["status"],
                sunset=row.get("sunset"),
                note=row.get("note", ""),
                source=row.get("source", ""),
            )
        )
    return tuple(out)


def carrier_for_domain(domain: str) -> Carrier | None:
    domain = domain.lower()
    for carrier in carriers():
        if domain in carrier.domains:
            return carrier
    return None


# -- Twilio error policy ---------------------------------------------------------------


@dataclass(frozen=True)
class ErrorPolicy:
    code: int
    action: str  # permanent | retry | config | opt_out
    reason: str
    max_attempts: int | None = None
    fix: str | None = None  # for "config": what staff change (default: the credentials)


@cache
def twilio_error_policies() -> dict[int, ErrorPolicy]:
    data = _load("twilio_errors.toml")["codes"]
    return {
        int(code): ErrorPolicy(
            int(code), row["action"], row["reason"], row.get("max_attempts"), row.get("fix")
        )
        for code, row in data.items()
    }


@cache
def twilio_statuses() -> dict[str, str]:
    """Twilio's MessageStatus -> ours (``rules/twilio_statuses.toml``)."""
    data = {str(k).lower(): str(v) for k, v in _load("twilio_statuses.toml")["statuses"].items()}
    unknown = sorted(v for v in data.values() if v not in Status.ALL)
    if unknown:
        raise ValueError(f"rules/twilio_statuses.toml: not a status of ours: {unknown}")
    return data


# -- rule types --------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleField:
    name: str
    kind: str  # text | phone | logic | number
    help: str
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False
    default: Any = None
    optional: bool = False  # not needed to activate; an empty value clears it


@dataclass(frozen=True)
class RuleType:
    name: str
    description: str
    fields: tuple[RuleField, ...]

    def field(self, name: str) -> RuleField:
        for f in self.fields:
            if f.name.lower() == name.lower():
                return f
        known = ", ".join(f.name for f in self.fields)
        raise KeyError(f"{self.name} rule has no field {name!r}; fields: {known}")


@cache
def rule_types() -> dict[str, RuleType]:
    out = {}
    for name, row in _load("rule_types.toml").items():
        fields = tuple(
            RuleField(
                name=f["name"],
                kind=f["kind"],
                help=f["help"],
                pattern=f.get("pattern"),
                choices=tuple(f.get("choices", ())),
                secret=bool(f.get("secret", False)),
                default=f.get("default"),
                optional=bool(f.get("optional", False)),
            )
            for f in row["fields"]
        )
        out[name] = RuleType(name, row.get("description", ""), fields)
    return out


# -- setup options -----------------------------------------------------------------------


@dataclass(frozen=True)
class OptionDef:
    name: str
    kind: str  # bool | text | int | choice:a,b | optout | window | zone | events
    default: Any
    help: str


@cache
def option_defs() -> dict[str, OptionDef]:
    return {
        name: OptionDef(name, row["kind"], row.get("default"), row.get("help", ""))
        for name, row in _load("options.toml").items()
    }


# -- reply keywords ----------------------------------------------------------------------


@dataclass(frozen=True)
class Keywords:
    """``rules/keywords.toml``: single words (upper case, accents taken off: ``plain``)
    and phrases (regular expressions, any case)."""

    stop: frozenset[str]
    start: frozenset[str]
    help: frozenset[str]
    stop_phrases: tuple[re.Pattern[str], ...]
    status: frozenset[str] = frozenset()
    paid_phrases: tuple[re.Pattern[str], ...] = ()
    wrong_number_phrases: tuple[re.Pattern[str], ...] = ()


def plain(word: str) -> str:
    """``word`` in upper case without accents: ``Arrêt`` -> ``ARRET``."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


@cache
def keywords() -> Keywords:
    data = _load("keywords.toml")

    def words(name: str) -> frozenset[str]:
        return frozenset(plain(w) for w in data.get(name, []))

    def phrases(name: str) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p, re.IGNORECASE) for p in data.get(name, []))

    return Keywords(
        stop=words("stop"),
        start=words("start"),
        help=words("help"),
        stop_phrases=phrases("stop_phrases"),
        status=words("status"),
        paid_phrases=phrases("paid_phrases"),
        wrong_number_phrases=phrases("wrong_number_phrases"),
    )


@cache
def lookalikes() -> dict[int, str]:
    """Look-alike characters and their GSM-7 replacements (``str.translate`` table)."""
    table = _load("lookalikes.toml")["replace"]
    return {int(code.removeprefix("U+"), 16): to for code, to in table.items()}


# -- carriers' tracking pages ------------------------------------------------------------------


def _carrier_key(name: str) -> str:
    return "".join(c for c in plain(name) if c.isalnum())


@cache
def tracking_pages() -> dict[str, str]:
    """``rules/tracking.toml``: each carrier name (folded: ``_carrier_key``) -> its
    tracking page's URL with ``{number}``."""
    out: dict[str, str] = {}
    for carrier, row in _load("tracking.toml").items():
        for name in [carrier, *row.get("names", [])]:
            out[_carrier_key(name)] = row["url"]
    return out


def tracking_url(carrier: object, number: object) -> str | None:
    """The carrier's tracking page for ``number`` (URL-encoded), or None for a carrier
    the table does not know or no number."""
    from urllib.parse import quote

    if not carrier or not number:
        return None
    page = tracking_pages().get(_carrier_key(str(carrier)))
    if page is None:
        return None
    return page.replace("{number}", quote(str(number).strip(), safe=""))


@cache
def link_scanners() -> tuple[str, ...]:
    """``rules/link_scanners.toml``: User-Agent parts of link previews and scanners."""
    return tuple(a.lower() for a in _load("link_scanners.toml").get("agents", []))
