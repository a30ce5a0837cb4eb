"""Texting rules applied to every rendered text, per channel (DESIGN.md "Opt-out and US
rules", "SMS length"):

- **Opt-out wording.** A Twilio text says "Reply STOP to opt out, HELP for help." (added
  when the template does not say STOP). A carrier-gateway text, whose replies nobody
  reads, never says "reply STOP": such a sentence is taken out and the way to opt out
  staff set in SMSOPTOUTCONTACT (a phone number or a web address) is added; without it
  the text is not sent (FCC, since 2025-04-11).
- **Look-alike characters** (SMSLOOKALIKES): curly quotes, dashes, ellipsis, odd spaces
  and bullets become their GSM-7 look-alikes (``rules/lookalikes.toml``), so one of them
  does not make the whole text UCS-2.
- **Length** (SMSMAXSEGMENTS, SMSTOOLONG): a text over the limit is shortened — cut with
  "...", keeping the tracking and order numbers and the opt-out line — or failed with the
  reason; never split into ten texts.

The opt-out line is counted in the segments like the rest of the text.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy.orm import Session

from . import links, options
from .catalog import lookalikes
from .config import get_settings
from .errors import InputError
from .models import Channel, Status
from .segments import analyse, clusters, text_length
from .templates import MAX_TEXT

TWILIO_OPT_OUT = "Reply STOP to opt out, HELP for help."
STOP_WORDS = ("STOP", "UNSUBSCRIBE", "OPT OUT", "OPTOUT")
# A sentence that tells the reader to reply STOP (or HELP): "Reply STOP to opt out, HELP
# for help.", "STOP to end.", "Text stop to quit." — meaningless where replies are not read.
_REPLY_STOP = re.compile(
    r"[^.!?\n]*(?:\bSTOP\b|\b(?i:reply|text)\s+(?:with\s+)?[\"']?(?i:stop)\b)[^.!?\n]*[.!?]?"
)
_SPACES = re.compile(r"[ \t]{2,}")
CHECK = "check"  # ``Rules.too_long`` for a template check: refuse, never shorten
ELLIPSIS = "..."  # GSM-7: "…" would make the shortened text UCS-2


def parse_opt_out_contact(value: str) -> str:
    """SMSOPTOUTCONTACT as stored: a web address as given, a phone number in E.164, or
    empty (not set). ``InputError`` for anything else."""
    text = value.strip()
    if not text:
        return ""
    if text.lower().startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(text)
        if parts.netloc and "." in parts.netloc and " " not in text:
            return text
    else:
        try:
            number = phonenumbers.parse(text, "US")
            if phonenumbers.is_valid_number(number):
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        except phonenumbers.NumberParseException:
            pass
    raise InputError(
        f"SMSOPTOUTCONTACT takes a phone number (e.g. 312-555-0100) or a web address "
        f"(e.g. https://example.com/stop-texts), not {value!r}"
    )


@functools.lru_cache(maxsize=64)
def opt_out_line(contact: str) -> str:
    """The sentence a gateway text ends with (formatted once per value: the host path
    asks for it on every event)."""
    if contact.startswith("+"):
        number = phonenumbers.parse(contact)
        fmt = (
            phonenumbers.PhoneNumberFormat.NATIONAL
            if number.country_code == 1
            else phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
        return f"To opt out, call {phonenumbers.format_number(number, fmt)}."
    return f"To opt out: {contact}"


@dataclass(frozen=True)
class Rules:
    """The options these rules follow, as one event reads them."""

    opt_out_contact: str = ""
    # The hosted opt-out page's address up to the recipient's token (``links``), used
    # when SMSOPTOUTCONTACT is unset: the text carries ``LINK_SLOT``, which the planner
    # replaces with each recipient's token (the same length: the segments stand).
    opt_out_link: str = ""
    lookalikes: bool = True
    max_segments: int = 3
    too_long: str = "shorten"

    @classmethod
    def read(cls, session: Session) -> Rules:
        """The options as staff set them (the host path reads them with its settings)."""
        values = {name: options.get(session, name) for name in OPTIONS}
        return cls.from_values(values, links.base(get_settings()))

    @classmethod
    def from_values(cls, values: Mapping[str, str], opt_out_link: str = "") -> Rules:
        """From option values by name (``options.value_from`` of each)."""
        return cls(
            opt_out_contact=values.get("SMSOPTOUTCONTACT", ""),
            opt_out_link=opt_out_link,
            lookalikes=values.get("SMSLOOKALIKES", "on") == "on",
            max_segments=int(values.get("SMSMAXSEGMENTS", "3") or 3),
            too_long=values.get("SMSTOOLONG", "shorten"),
        )


OPTIONS = ("SMSOPTOUTCONTACT", "SMSLOOKALIKES", "SMSMAXSEGMENTS", "SMSTOOLONG")
# Where a recipient's opt-out token goes (``links.TOKEN_LENGTH`` characters, all GSM-7).
LINK_SLOT = links.SLOT


class NotSendable(Exception):
    """This text cannot go out as the rules stand: its status and the reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Finished:
    body: str
    encoding: str
    segments: int


def says_stop(body: str) -> bool:
    upper = body.upper()
    return any(w in upper for w in STOP_WORDS)


def replace_lookalikes(text: str) -> str:
    return text.translate(lookalikes())


def _join(core: str, tail: str) -> str:
    return f"{core} {tail}" if core and tail else core or tail


def finish(body: str, channel: str | None, rules: Rules, keep: Sequence[str] = ()) -> Finished:
    """``body`` as it goes out on ``channel``: opt-out wording, look-alikes replaced, the
    length kept within SMSMAXSEGMENTS. ``keep``: what shortening must not cut (the
    tracking number…). ``NotSendable`` when the rules forbid sending it."""
    if rules.lookalikes:
        body = replace_lookalikes(body)
    tail = ""
    if channel == Channel.TWILIO:
        if not says_stop(body):
            tail = TWILIO_OPT_OUT
    elif channel == Channel.EMAIL_GATEWAY:
        if "stop" in body.lower():  # every sentence _REPLY_STOP takes has the word
            body = _SPACES.sub(" ", _REPLY_STOP.sub("", body)).strip()
        if not rules.opt_out_contact and rules.opt_out_link:
            line = f"To opt out: {rules.opt_out_link}{LINK_SLOT}"
            tail = "" if line in body else line
        elif not rules.opt_out_contact:
            raise NotSendable(
                Status.SKIPPED,
                "a carrier-gateway text must say how to opt out without replying (replies "
                "to it are never read; FCC, since 2025-04-11): set SMSOPTOUTCONTACT to a phone "
                "number or web address (`erp-sms options set SMSOPTOUTCONTACT 312-555-0100`), "
                "or set ERP_SMS_PUBLIC_URL and ERP_SMS_SECRET_KEY so each text links to erp-sms's "
                "own opt-out page; then retry",
            )
        else:
            line = opt_out_line(rules.opt_out_contact)
            tail = "" if line in body else line
    text = _join(body, tail)
    info = analyse(text)
    if info.segments <= rules.max_segments and text_length(text) <= MAX_TEXT:
        return Finished(text, info.encoding, info.segments)
    over = f"the text takes {info.segments} segments; SMSMAXSEGMENTS allows {rules.max_segments}"
    if rules.too_long == CHECK:
        raise NotSendable(Status.FAILED, f"{over}: shorten the template (or raise SMSMAXSEGMENTS)")
    if rules.too_long != "shorten":
        raise NotSendable(Status.FAILED, f"{over} (SMSTOOLONG is fail): shorten the template")
    short = _shorten(body, tail, [k for k in keep if k], rules.max_segments)
    if short is None:
        raise NotSendable(
            Status.FAILED, f"{over}, and it cannot be shortened enough: shorten the template"
        )
    info = analyse(short)
    return Finished(short, info.encoding, info.segments)


def _shorten(core: str, tail: str, keep: Sequence[str], max_segments: int) -> str | None:
    """The longest cut of ``core`` (at a symbol, then "...") that with what must be kept
    and the opt-out ``tail`` fits ``max_segments``; None when even the kept parts alone
    do not fit."""
    symbols = clusters(core)

    def candidate(n: int) -> str:
        head = "".join(symbols[:n]).rstrip()
        missing = [k for k in keep if k in core and k not in head]
        return _join(" ".join([head + ELLIPSIS, *missing]).strip(), tail)

    def fits(n: int) -> bool:
        text = candidate(n)
        return text_length(text) <= MAX_TEXT and analyse(text).segments <= max_segments

    if not fits(0):
        return None
    lo, hi = 0, len(symbols)  # fits(lo); the longest n that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return candidate(lo)


def keep_from(context: Mapping[str, Any]) -> list[str]:
    """What shortening keeps: the tracking link, the tracking number, the order number."""
    out = []
    keys = (
        ("shipping_event", "tracking_url"),
        ("shipping_event", "tracking_number"),
        ("order", "number"),
    )
    for var, key in keys:
        value = context.get(var)
        if isinstance(value, Mapping) and value.get(key):
            out.append(str(value[key]))
    return out


options.add_validator("optout", parse_opt_out_contact)
