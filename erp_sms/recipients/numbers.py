"""Phone numbers matched however staff or the ERP typed them."""

from __future__ import annotations

from typing import Any

import phonenumbers
from sqlalchemy import (
    ColumnElement,
    func,
)

from ..addresses import classify
from ..config import get_settings
from ..errors import AddressError


def _digits_only(column: Any) -> ColumnElement[str]:
    """The column with the usual separators removed, in SQL (every database has REPLACE)."""
    expr = column
    for ch in (" ", "-", "(", ")", ".", "/", "\u00a0"):
        expr = func.replace(expr, ch, "")
    return expr  # type: ignore[no-any-return]


def number_filter(column: Any, e164: str) -> ColumnElement[bool]:
    """A SQL pre-filter for text addresses that may be ``e164`` however they were typed
    (``+1 212 555 01 23``, ``(212) 555-0123``, ``2125550123@vtext.com``, ``07911 123456``):
    the national significant number, separators removed, appears in the address.
    ``same_number`` then decides exactly."""
    try:
        national = phonenumbers.national_significant_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        national = "".join(ch for ch in e164 if ch.isdigit())
    return _digits_only(column).like(f"%{national}%")


def same_number(address: str | None, e164: str, region: str | None = None) -> bool:
    """Whether the text address ``address`` is the number ``e164`` (in the default
    region's reading of numbers written without a country code)."""
    try:
        return classify(address, region or get_settings().default_region).e164 == e164
    except AddressError:
        return False
