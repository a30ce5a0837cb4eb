"""The send window (option ``SMSSENDWINDOW``): the hours, in the recipient's local time,
in which reminder texts may go out.

The recipient's zones come from the number (``phonenumbers.timezone``). A number that
spans several zones is texted only when the window is open in all of them; when no such
moment exists (a toll-free number "spans" Guam and Halifax) or the number's zone is
unknown, the configured default zone (option ``SMSTIMEZONE``) decides. Nothing here
drops a text: it only says when a text may go out.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone

from .errors import InputError


def _system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_clock: Callable[[], dt.datetime] = _system_clock


def now() -> dt.datetime:
    """The time planning works from (a test sets it with ``set_clock``)."""
    return _clock()


def set_clock(clock: Callable[[], dt.datetime] | None) -> None:
    """Plan reminders and send windows by ``clock`` (None: the system clock again)."""
    global _clock
    _clock = clock or _system_clock


_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class SendWindow:
    """Local opening hours ``start`` to ``end``; ``end`` before ``start`` crosses midnight
    (``21:00-07:00`` is open at night)."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> SendWindow | None:
        """``HH:MM-HH:MM``, or ``off`` (None: no window). ``InputError`` says what to write."""
        value = text.strip().lower()
        if value in ("off", "none", ""):
            return None
        parts = value.split("-")
        matches = [_HHMM.match(p.strip()) for p in parts] if len(parts) == 2 else []
        if len(matches) != 2 or not all(matches):
            raise InputError(
                f"SMSSENDWINDOW takes HH:MM-HH:MM in the recipient's local time (e.g. "
                f"08:00-20:00, or 21:00-07:00 across midnight) or off, not {text!r}"
            )
        start, end = (dt.time(int(m.group(1)), int(m.group(2))) for m in matches if m)
        if start == end:
            raise InputError(
                f"SMSSENDWINDOW {text!r} opens and closes at the same minute: to send at "
                "any hour, set it to off"
            )
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def is_open_at(self, local: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or ``InputError`` naming an example."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"unknown time zone {name!r}: use an IANA name such as America/Chicago"
        ) from None


# The zone a country's own numbers are named by, where phonenumbers gives a country's
# number the zones of its neighbours too (in name order): a UK mobile is in
# "Europe/Guernsey, Europe/Isle_of_Man, Europe/Jersey, Europe/London". The same clocks;
# the first is what staff read.
_MAIN_ZONE = {
    "GB": "Europe/London",
    "GG": "Europe/Guernsey",
    "IM": "Europe/Isle_of_Man",
    "JE": "Europe/Jersey",
    "FI": "Europe/Helsinki",
    "AX": "Europe/Mariehamn",
    "IT": "Europe/Rome",
    "VA": "Europe/Vatican",
    "NO": "Europe/Oslo",
    "SJ": "Arctic/Longyearbyen",
    "RE": "Indian/Reunion",
    "YT": "Indian/Mayotte",
    "CW": "America/Curacao",
    "BQ": "America/Kralendijk",
}


@functools.lru_cache(maxsize=4096)
def zones_for(e164: str | None, default: str) -> tuple[ZoneInfo, ...]:
    """The zones the number may be in, its own country's first; ``(default,)`` when the
    number does not say."""
    names: tuple[str, ...] = ()
    if e164:
        try:
            number = phonenumbers.parse(e164)
            names = tuple(phone_timezone.time_zones_for_number(number))
        except phonenumbers.NumberParseException:
            names = ()
        main = _MAIN_ZONE.get(phonenumbers.region_code_for_number(number) or "") if names else None
        if main in names:
            names = (main, *(n for n in names if n != main))
    known = [n for n in names if n != "Etc/Unknown"]
    try:
        return tuple(ZoneInfo(n) for n in known) or (zone(default),)
    except ZoneInfoNotFoundError:  # a name phonenumbers knows and this system does not
        return (zone(default),)


def is_open(when: dt.datetime, window: SendWindow, zones: tuple[ZoneInfo, ...]) -> bool:
    return all(window.is_open_at(when.astimezone(z).time()) for z in zones)


@dataclass(frozen=True)
class Opening:
    at: dt.datetime  # UTC
    zones: tuple[ZoneInfo, ...]  # the zones it was worked out in
    fallback: bool  # the number's zones never share an open moment: the default zone decided

    def describe(self, window: SendWindow) -> str:
        names = ", ".join(z.key for z in self.zones)
        local = self.at.astimezone(self.zones[0])
        text = (
            f"send window {window} ({names}): goes out {local:%Y-%m-%d %H:%M} {self.zones[0].key}"
        )
        if self.fallback:
            text += "; the number's own zones are never all inside the window at once"
        return text


def next_opening(
    when: dt.datetime, window: SendWindow, zones: tuple[ZoneInfo, ...], default: str
) -> Opening:
    """The first moment at or after ``when`` at which the window is open in every zone."""
    found = _first_open(when, window, zones)
    if found is not None:
        return Opening(found, zones, False)
    fallback = (zone(default),)
    found = _first_open(when, window, fallback)
    assert found is not None  # one zone: the window opens within a day
    return Opening(found, fallback, True)


def _first_open(
    when: dt.datetime, window: SendWindow, zones: tuple[ZoneInfo, ...]
) -> dt.datetime | None:
    if is_open(when, window, zones):
        return when.astimezone(dt.UTC)
    # The first open moment of an intersection of daily windows is one of the windows'
    # openings; a few days either side covers every offset and a DST change.
    candidates = []
    for z in zones:
        local_day = when.astimezone(z).date()
        for days in range(-1, 4):
            day = local_day + dt.timedelta(days=days)
            # A wall time that a DST change skips maps forward (zoneinfo, fold=0).
            opening = dt.datetime.combine(day, window.start, tzinfo=z).astimezone(dt.UTC)
            if opening > when and is_open(opening, window, zones):
                candidates.append(opening)
    return min(candidates) if candidates else None


def start_of_day(day: dt.date, zones: tuple[ZoneInfo, ...]) -> dt.datetime:
    """The first moment that is on ``day`` or later in every zone (midnight in the
    westernmost)."""
    return max(dt.datetime.combine(day, dt.time(0), tzinfo=z) for z in zones).astimezone(dt.UTC)


@dataclass(frozen=True)
class Policy:
    """The send window as staff set it (``SMSSENDWINDOW``, ``SMSTIMEZONE``): what the
    host path, the planner of sequences and the worker's claim all ask."""

    window: SendWindow | None
    default_zone: str

    @classmethod
    def from_options(cls, window: str, default_zone: str) -> Policy:
        """From the options' values (already checked by `options set`; a value that does
        not parse is taken as no window rather than holding every text)."""
        try:
            parsed = SendWindow.parse(window)
        except InputError:
            parsed = None
        return cls(parsed, default_zone)

    def zones(self, e164: str | None) -> tuple[ZoneInfo, ...]:
        return zones_for(e164, self.default_zone)

    def deferral(self, e164: str | None, due: dt.datetime) -> tuple[dt.datetime, str] | None:
        """When the window is closed at ``due`` for this number: its next opening and the
        reason to show; None when the text may go at ``due``."""
        if self.window is None:
            return None
        opening = next_opening(due, self.window, self.zones(e164), self.default_zone)
        if opening.at <= due:
            return None
        return opening.at, "deferred: outside the " + opening.describe(self.window)
