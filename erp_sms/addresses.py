"""Classify a contact's text-message address (Email 2) and decide how to reach it.

``email2`` is either a carrier gateway address (``5555555555@vtext.com``) or a plain
phone number (``555-555-5555``, ``+15555555555``). ``classify`` turns it into an
``Address`` or raises ``AddressError`` with a sentence staff can act on; ``route``
picks the channel (CONTRACT.md "Routing").
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from .catalog import Carrier, carrier_for_domain, carriers
from .errors import AddressError
from .models import Channel

PHONE = "phone"
GATEWAY = "gateway"

_PHONE_CHARS = re.compile(r"^\+?[0-9A-Za-z ().\-/#,;=*]+$")
# Dashes word processors and phones put in numbers, read as the hyphen.
_DASHES = {ord(c): "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"}
_SCHEMES = ("tel:", "callto:", "sms:")


def _as_pasted(text: str) -> tuple[str, str | None]:
    """A number as people paste it, made plain: invisible characters (zero-width spaces,
    direction marks, soft hyphens) dropped, full-width digits and odd spaces folded (NFKC),
    dashes read as hyphens, a ``tel:`` prefix taken off. Also the first invisible
    character's name, for a reason when the number is still refused."""
    hidden = [c for c in text if unicodedata.category(c) == "Cf"]
    said = None
    if hidden:
        c = hidden[0]
        said = f"it contains an invisible {unicodedata.name(c, 'character')} (U+{ord(c):04X})"
    plain = unicodedata.normalize("NFKC", "".join(c for c in text if c not in hidden))
    plain = plain.translate(_DASHES).strip()
    for scheme in _SCHEMES:
        if plain.lower().startswith(scheme):
            plain = plain[len(scheme) :].strip()
    return plain, said


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Address:
    kind: str  # phone | gateway
    raw: str
    e164: str  # the phone number, also for a gateway address (its 10 digits, +1)
    gateway: str | None = None  # normalised gateway address
    carrier: Carrier | None = None


#: A phone number inside free text (a log line, a reason): E.164, or the 10 digits of a
#: gateway address — what logs mask and a purge removes.
NUMBER_IN_TEXT = re.compile(r"\+\d{7,15}\b|\b\d{10}(?=@)")


def mask(number: str | None) -> str:
    """A phone number or address for logs: keeps the last 4 digits only."""
    if not number:
        return ""
    local, at, domain = number.partition("@")
    digits = re.sub(r"\D", "", local)
    return f"***{digits[-4:]}{at}{domain}"


def classify(raw: str | None, region: str = "US") -> Address:
    """What kind of text-message address ``raw`` is (a phone number or a carrier gateway
    address), normalised; ``AddressError`` with what to fix when it is not usable."""
    return _classify_cached(raw, region, _field[0])


# What staff call the field a contact's text address is in, for the hints: the reference
# schema's "Email 2", or what the host's lookup says (``address_field``).
REFERENCE_FIELD = "Email 2"
GENERIC_FIELD = "the contact's text-message address"
_field = [REFERENCE_FIELD]


def set_field_name(name: str) -> None:
    """Name the address field in hints (``set_default_lookup`` does it for the host)."""
    _field[0] = name


def field_name() -> str:
    """The address field's name as staff know it ("Email 2" in the reference schema)."""
    return _field[0]


@functools.lru_cache(maxsize=65_536)
def _classify_cached(raw: str | None, region: str, field: str = REFERENCE_FIELD) -> Address:
    # Pure in its arguments (the carrier table is loaded once per process): the host path
    # classifies the same contacts' addresses event after event, and validation
    # (email-validator, phonenumbers) is most of its CPU. Errors are not cached.
    if raw is None or not raw.strip():
        raise AddressError(f"no text-message address: fill in {field} on the contact")
    if _CONTROL.search(raw):
        raise AddressError(
            "the text-message address contains a line break or control character; "
            f"retype {field} on the contact"
        )
    text = raw.strip()
    if "@" in text:
        return _classify_gateway(text, field)
    return _classify_phone(text, region, field)


_PLAIN_GATEWAY = re.compile(r"([0-9]{10})@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


def _classify_gateway(text: str, field: str) -> Address:
    plain = _PLAIN_GATEWAY.fullmatch(text)
    if plain is not None:
        # Ten digits @ a known carrier's domain is a valid address by construction:
        # email-validator (most of a classification) has nothing to add.
        local, domain = plain.group(1), plain.group(2).lower()
        carrier = carrier_for_domain(domain)
        if carrier is not None:
            invalid = _invalid_reason(phonenumbers.parse(f"+1{local}", None))
            if invalid:
                raise AddressError(
                    f"{text!r}: {local} is not a real phone number ({invalid}); fix {field}"
                )
            return Address(GATEWAY, text, f"+1{local}", f"{local}@{domain}", carrier)
    try:
        info = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(f"{text!r} is not a valid email-to-SMS address: {exc}") from None
    local, domain = info.local_part, info.domain.lower()
    if not local.isdigit() or not local.isascii():
        raise AddressError(
            f"{text!r}: a gateway address is the 10-digit phone number @ the carrier's "
            "domain (e.g. 5555555555@vtext.com)"
        )
    if len(local) == 11 and local.startswith("1"):
        raise AddressError(
            f"{text!r}: leave out the leading 1 — a gateway address takes the 10-digit "
            "number only (e.g. 5555555555@vtext.com)"
        )
    if len(local) != 10:
        raise AddressError(
            f"{text!r}: the gateway number must have exactly 10 digits, it has {len(local)}"
        )
    invalid = _invalid_reason(phonenumbers.parse(f"+1{local}", None))
    if invalid:
        raise AddressError(f"{text!r}: {local} is not a real phone number ({invalid}); fix {field}")
    carrier = carrier_for_domain(domain)
    if carrier is None:
        known = ", ".join(d for c in carriers() for d in c.domains)
        raise AddressError(
            f"{text!r}: {domain} is not a known carrier gateway ({known}); "
            "enter the plain phone number and use Twilio instead"
        )
    return Address(GATEWAY, text, f"+1{local}", f"{local}@{domain}", carrier)


def _classify_phone(raw: str, region: str, field: str = REFERENCE_FIELD) -> Address:
    text, hidden = _as_pasted(raw)
    try:
        return _classify_plain_phone(raw, text, region, field)
    except AddressError as exc:
        if hidden is None:
            raise
        raise AddressError(f"{exc.message} ({hidden}: retype the number)") from None


def _classify_plain_phone(raw: str, text: str, region: str, field: str) -> Address:
    if text.startswith("+") and text.count("+") == 1:
        pass
    elif "+" in text:
        raise AddressError(f"{text!r}: '+' may only start the number (e.g. +15555555555)")
    if not _PHONE_CHARS.match(text):
        raise AddressError(
            f"{text!r} is neither a phone number (digits only, e.g. 555-555-5555) "
            "nor a gateway address (5555555555@vtext.com)"
        )
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if re.search(r"[A-Za-z]", text):  # not a vanity number either: words
            raise AddressError(
                f"{text!r} is neither a phone number (digits only, e.g. 555-555-5555) "
                "nor a gateway address (5555555555@vtext.com)"
            ) from None
        raise AddressError(f"{text!r} is not a phone number: {exc}") from None
    # IS_POSSIBLE_LOCAL_ONLY (7 digits, no area code) cannot be texted either.
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        digits = len(re.sub(r"\D", "", text))
        raise AddressError(
            f"{text!r} is not a complete phone number ({digits} digits); "
            + (
                "enter all 10 digits or +country code and number"
                if region in ("US", "CA")
                else "enter it with its area code, or as +country code and number"
            )
        )
    invalid = _invalid_reason(number)
    if invalid:
        raise AddressError(f"{text!r} is not a real phone number ({invalid}); fix {field}")
    # An extension (x45, ext. 9) is kept apart by phonenumbers: a text goes to the number.
    return Address(
        PHONE, raw, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    )


def _invalid_reason(number: phonenumbers.PhoneNumber) -> str | None:
    """Why a possible-looking number cannot exist (None when it is valid): Twilio would
    refuse it later with 21211, so it is refused when planned, with the reason."""
    if phonenumbers.is_valid_number(number):
        return None
    national = phonenumbers.national_significant_number(number)
    if number.country_code == 1 and len(national) == 10:
        area, exchange = national[:3], national[3:6]
        if area[0] in "01":
            return f"area codes never start with {area[0]}: {area}"
        if exchange[0] in "01":
            return f"the exchange after the area code never starts with {exchange[0]}: {exchange}"
        return f"area code {area} is not in use"
    region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    return f"no {region} number is written like this (+{number.country_code} {national})"


@dataclass(frozen=True)
class Route:
    """Where a message goes, or why it cannot go (``channel`` None, ``reason`` set)."""

    channel: str | None
    address: str | None
    reason: str | None = None


def route(address: Address, twilio_active: bool, today: dt.date | None = None) -> Route:
    """CONTRACT.md "Routing": Twilio when active; else the gateway over SMTP; a shut-down
    gateway is never mailed."""
    if twilio_active:
        return Route(Channel.TWILIO, address.e164)
    if address.kind == PHONE:
        return Route(
            None,
            address.e164,
            "a plain phone number needs Twilio: activate the TWILIO rule "
            "(erp-sms rules set TWILIO … --active) or enter a carrier gateway address",
        )
    assert address.carrier is not None and address.gateway is not None
    if address.carrier.is_shut_down(today):
        return Route(
            None,
            address.gateway,
            f"{address.carrier.describe(today)}; texts to {address.gateway} would be lost — "
            "activate the TWILIO rule to text this number",
        )
    return Route(Channel.EMAIL_GATEWAY, address.gateway)
