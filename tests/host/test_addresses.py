from __future__ import annotations

import datetime as dt

import pytest

from erp_sms.addresses import GATEWAY, PHONE, classify, mask, route
from erp_sms.errors import AddressError
from erp_sms.models import Channel

TODAY = dt.date(2026, 11, 21)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("312-555-5555", "+13125555555"),
        ("+13125555555", "+13125555555"),
        ("(312) 555-0142", "+13125550142"),
        (" 312.555.0142 ", "+13125550142"),
        ("+44 7911 123456", "+447911123456"),
    ],
)
def test_plain_phone_numbers_become_e164(raw: str, e164: str) -> None:
    a = classify(raw)
    assert (a.kind, a.e164, a.gateway) == (PHONE, e164, None)


def test_gateway_address_keeps_address_and_digits() -> None:
    a = classify("3125550142@VTEXT.com")
    assert a.kind == GATEWAY
    assert a.gateway == "3125550142@vtext.com"
    assert a.e164 == "+13125550142"
    assert a.carrier is not None and a.carrier.name == "Verizon"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("call-me-maybe", "neither a phone number"),
        ("555-CALL-NOW", "area code 555 is not in use"),  # a vanity number, read as one
        ("555-1234", "not a complete phone number"),
        ("12", "not a complete phone number"),
        ("+13125550142@vtext.com", "10-digit phone number"),
        ("13125550142@vtext.com", "leave out the leading 1"),
        ("312555014@vtext.com", "exactly 10 digits"),
        ("3125550142@example.com", "not a known carrier gateway"),
        ("3125550142@vtext.com\r\nBcc: victim@example.com", "line break"),
        ("3125550142\n@vtext.com", "line break"),
        ("312-555-5555\r\n", "line break"),
        ("", "fill in Email 2"),
        (None, "fill in Email 2"),
        ("12+34", "'+' may only start"),
    ],
)
def test_malformed_addresses_give_one_clear_reason(raw: str | None, fragment: str) -> None:
    with pytest.raises(AddressError) as info:
        classify(raw)
    assert fragment in str(info.value)


def test_twilio_active_sends_every_address_to_its_e164_number() -> None:
    assert route(classify("312-555-5555"), True, TODAY) == route(
        classify("3125555555@vtext.com"), True, TODAY
    )
    r = route(classify("3125555555@txt.att.net"), True, TODAY)
    assert (r.channel, r.address) == (Channel.TWILIO, "+13125555555")


def test_without_twilio_a_gateway_goes_by_email_and_a_phone_is_skipped() -> None:
    r = route(classify("3125555555@vtext.com"), False, TODAY)
    assert (r.channel, r.address, r.reason) == (Channel.EMAIL_GATEWAY, "3125555555@vtext.com", None)
    r = route(classify("312-555-5555"), False, TODAY)
    assert r.channel is None and "needs Twilio" in (r.reason or "")


@pytest.mark.parametrize(
    ("address", "carrier", "date"),
    [
        ("3125555555@txt.att.net", "AT&T", "2025-06-17"),
        ("3125555555@tmomail.net", "T-Mobile", "2024-12-01"),
        ("3125555555@messaging.sprintpcs.com", "Sprint", "2020-04-01"),
    ],
)
def test_shut_down_gateway_is_never_mailed(address: str, carrier: str, date: str) -> None:
    r = route(classify(address), False, TODAY)
    assert r.channel is None
    assert carrier in (r.reason or "") and date in (r.reason or "")


def test_verizon_counts_as_shut_down_from_its_sunset_date() -> None:
    a = classify("3125555555@vtext.com")
    assert route(a, False, dt.date(2027, 3, 30)).channel == Channel.EMAIL_GATEWAY
    late = route(a, False, dt.date(2027, 3, 31))
    assert late.channel is None and "2027-03-31" in (late.reason or "")


def test_mask_keeps_only_the_last_four_digits() -> None:
    assert mask("+13125550142") == "***0142"
    assert mask("3125550142@vtext.com") == "***0142@vtext.com"


@pytest.mark.parametrize(
    ("typed", "region", "e164"),
    [
        ("1-800-FLOWERS", "US", "+18003569377"),  # a vanity number
        ("030/1234567", "DE", "+49301234567"),
        ("+1 212 555 0123 x45", "US", "+12125550123"),  # the extension kept apart
        ("(212) 555-0123 ext. 9", "US", "+12125550123"),
        ("tel:+12125550123", "US", "+12125550123"),
        ("\uff12\uff11\uff12\uff15\uff15\uff15\uff10\uff11\uff12\uff13", "US", "+12125550123"),
        ("212\u00a0555\u00a00123", "US", "+12125550123"),  # non-breaking spaces
        ("212\u2013555\u20130123", "US", "+12125550123"),  # en dashes from Word
        ("212\u200b555 0123", "US", "+12125550123"),  # a zero-width space
        ("55 1234 5678", "MX", "+525512345678"),
        ("07911 123456", "GB", "+447911123456"),
    ],
)
def test_numbers_as_people_paste_them(typed, region, e164):
    """Issue 31: numbers pasted from mail, Word and phones are read (1,710 of 7,728 valid
    inputs were refused)."""
    assert classify(typed, region).e164 == e164


def test_a_refused_number_names_the_invisible_character_in_it():
    with pytest.raises(AddressError, match=r"invisible ZERO WIDTH SPACE \(U\+200B\)"):
        classify("12\u200b3", "US")
    with pytest.raises(AddressError, match="enter it with its area code"):
        classify("1234 5", "GB")


@pytest.mark.parametrize(
    ("lookup_field", "says"),
    [
        (None, "fix the contact's text-message address"),
        ("Mobile", "fix Mobile"),
    ],
)
def test_hints_name_the_hosts_own_field_not_email_2(lookup_field, says) -> None:
    """Issue 31: "Email 2" appeared in hints for hosts that have no such field."""
    from erp_sms.recipients import ErpLookup, reset_default_lookup, set_default_lookup

    class HostLookup(ErpLookup):
        pass

    HostLookup.address_field = lookup_field  # None: a host lookup that names no field
    assert "fix Email 2" in _reason("123-456-7890")  # the reference schema's
    set_default_lookup(HostLookup())
    try:
        assert _reason("123-456-7890").endswith(says)
        assert "Email 2" not in _reason("123-456-7890")
        assert "Email 2" not in _reason("")
    finally:
        reset_default_lookup()
    assert "fix Email 2" in _reason("123-456-7890")


def _reason(raw: str) -> str:
    with pytest.raises(AddressError) as caught:
        classify(raw)
    return caught.value.message
