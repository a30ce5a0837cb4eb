"""SMS length: encoding (GSM-7 or UCS-2) and segment count, as Twilio bills them.

GSM-7: 160 septets in one segment, 153 per segment when split; extension characters
take two septets. UCS-2: 70 UTF-16 code units in one segment, 67 when split. A visible
symbol — a grapheme cluster: an emoji with its skin tone or ZWJ family, a flag, a letter
with its combining accents — is never split across segments (Twilio's own segment
calculator, ``sms-segments-calculator``, packs whole clusters; ``tests/test_segments.py``
measures the agreement). Clusters come from the ``regex`` module's ``\\X`` (Unicode's
extended grapheme clusters).
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION

GSM7 = "GSM-7"
UCS2 = "UCS-2"

_CLUSTER = regex.compile(r"\X")


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    non_gsm: tuple[str, ...] = ()  # the characters that forced UCS-2, in order of appearance


def _pack(costs: list[int], single: int, multi: int) -> int:
    """Segments for symbols of these costs: all in one when they fit ``single``, else
    each symbol whole in segments of ``multi`` (the rest is the concatenation header)."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments += 1
            used = 0
        used += cost
    return segments


def clusters(text: str) -> list[str]:
    """The visible symbols of ``text`` (extended grapheme clusters)."""
    found: list[str] = _CLUSTER.findall(text)
    return found


def _utf16(s: str) -> int:
    return sum(2 if ord(c) > 0xFFFF else 1 for c in s)


def analyse(text: str) -> SegmentInfo:
    """Encoding and segment count of ``text`` as a carrier would send it."""
    if GSM7_ALL.issuperset(text):
        units = len(text) + sum(text.count(c) for c in GSM7_EXTENSION)
        if units <= 160:  # one segment: how the symbols would split does not matter
            return SegmentInfo(GSM7, 1 if units else 0, units)
        # Every cluster is one character here but CR LF (two septets, kept together).
        costs = [sum(2 if c in GSM7_EXTENSION else 1 for c in g) for g in clusters(text)]
        return SegmentInfo(GSM7, _pack(costs, 160, 153), sum(costs))
    non_gsm = [c for c in text if c not in GSM7_ALL]
    costs = [_utf16(g) for g in clusters(text)]
    return SegmentInfo(UCS2, _pack(costs, 70, 67), sum(costs), tuple(dict.fromkeys(non_gsm)))


def text_length(body: str) -> int:
    """A text's length as Twilio counts it against its 1,600 limit: UTF-16 code units,
    so an emoji outside the Basic Multilingual Plane counts twice."""
    return _utf16(body)
