"""The channel interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..outbox import Claimed


@dataclass(frozen=True)
class SendResult:
    provider_id: str | None
    provider_status: str | None = None
    segments: int | None = None
    price: str | None = None
    price_unit: str | None = None
    raw: Any = None


class Channel(Protocol):
    """Deliver messages; raise ``TransientError``, ``PermanentError`` (``OptedOutError``)
    or ``ChannelConfigurationError`` on failure."""

    name: str

    def send(self, message: Claimed) -> SendResult: ...

    def find_previous_send(self, message: Claimed) -> SendResult | None:
        """For a message reclaimed after a lease expired: the earlier send, if the
        provider can tell (None: not found, or the channel cannot tell)."""
        ...

    def close(self) -> None: ...
