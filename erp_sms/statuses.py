"""Provider statuses normalised to ours, and the rule that a status only moves forward.

Callbacks arrive out of order and more than once: ``advance`` says whether a new status
replaces the current one. A final status (delivered, undelivered, failed) never goes
back; only delivered -> read is still possible.
"""

from __future__ import annotations

from .catalog import twilio_statuses
from .models import Status

_RANK = {
    Status.QUEUED: 0,
    Status.HELD: 0,
    Status.SENDING: 1,
    Status.SENT: 2,
    Status.DELIVERED: 3,
    Status.UNDELIVERED: 3,
    Status.FAILED: 3,
    Status.READ: 4,
    Status.CANCELED: 3,
    Status.SKIPPED: 3,
}
FINAL = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.CANCELED, Status.SKIPPED}
)


def normalise(provider_status: str) -> str | None:
    """Our status for Twilio's MessageStatus (``rules/twilio_statuses.toml``), or None."""
    return twilio_statuses().get(provider_status.strip().lower())


def advance(current: str, new: str) -> bool:
    """True when ``new`` moves the message forward from ``current``."""
    if new == current:
        return False
    if current in FINAL:
        return current == Status.DELIVERED and new == Status.READ
    return _RANK.get(new, -1) > _RANK.get(current, -1)
