"""SMS length: encoding (GSM-7 or UCS-2) and segment count.

GSM-7: 160 septets in one segment, 153 per segment when split; extension characters
take two septets and are never split across segments. UCS-2: 70 UTF-16 code units in
one segment, 67 when split; a surrogate pair (emoji) is never split.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7 = "GSM-7"
UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    non_gsm: tuple[str, ...] = ()  # the characters that forced UCS-2, in order of appearance


def _pack(costs: list[int], single: int, multi: int) -> int:
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


def analyse(text: str) -> SegmentInfo:
    """Encoding and segment count of ``text`` as a carrier would send it."""
    non_gsm = [c for c in text if c not in GSM7_BASIC and c not in GSM7_EXTENSION]
    if not non_gsm:
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return SegmentInfo(GSM7, _pack(costs, 160, 153), sum(costs))
    costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return SegmentInfo(UCS2, _pack(costs, 70, 67), sum(costs), tuple(dict.fromkeys(non_gsm)))
