"""Provider statuses normalised to ours, and the rule that a status only moves forward.

Callbacks arrive out of order and more than once: ``advance`` says whether a new status
replaces the current one. A final status (delivered, undelivered, failed) never goes
back; only delivered -> read is still possible.
"""

from __future__ import annotations

from .models import Status

# Twilio MessageStatus -> ours. receiving/received are inbound: not a delivery status.
TWILIO = {
    "accepted": Status.QUEUED,
    "scheduled": Status.QUEUED,
    "queued": Status.QUEUED,
    "sending": Status.SENDING,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "partially_delivered": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
    "read": Status.READ,
    "canceled": Status.CANCELED,
}

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
    return TWILIO.get(provider_status.strip().lower())


def advance(current: str, new: str) -> bool:
    """True when ``new`` moves the message forward from ``current``."""
    if new == current:
        return False
    if current in FINAL:
        return current == Status.DELIVERED and new == Status.READ
    return _RANK.get(new, -1) > _RANK.get(current, -1)
