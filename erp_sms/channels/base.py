"""The channel interface: one base class every channel fills (anymail's shape).

A channel instance is one connection to one provider for one sender, used by one thread
at a time; the dispatcher opens as many instances as ``concurrency`` allows, hands each
claimed text to ``send`` and closes them when the run is done (instances, their clients
and connection pools live across batches). Failures are typed
errors from ``erp_sms.errors``, never a False return:

- ``TransientError`` — may pass, retried with backoff (``maybe_sent`` when the provider
  may have accepted it: the dispatcher asks ``find_previous_send`` before a re-send);
- ``PermanentError`` — for good; ``OptedOutError`` when the recipient opted out;
- ``ChannelConfigurationError`` — the provider rejected our credentials or settings: texts
  are held for staff. It is a ``ConfigurationError``, outside the delivery hierarchy, so no
  retry loop can swallow it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from ..config import Settings
from ..errors import ChannelConfigurationError
from ..outbox import Claimed


@dataclass(frozen=True)
class SendResult:
    """What the provider said when it accepted a text."""

    provider_id: str | None
    provider_status: str | None = None
    segments: int | None = None
    price: str | None = None
    price_unit: str | None = None
    raw: Any = None
    detail: str | None = None  # for the timeline, when "accepted by …" is not the whole story
    callbacks: bool = False  # the provider reports status changes (webhooks) for this text


class Channel(ABC):
    """Delivers claimed texts through one provider.

    Subclasses set ``name`` and may override the limits: ``concurrency`` (instances that
    send at once) and ``rate_per_second`` (segments per second for the sender, shared by
    its instances; 0 means unpaced).
    """

    name: ClassVar[str]
    concurrency: int = 1
    rate_per_second: float = 0.0
    #: Set by the dispatcher on each instance: waits until the outcome of the text this
    #: instance sent before is recorded; raises ``TransientError`` when it cannot be.
    handover_barrier: Callable[[], None] | None = None
    #: The channel calls ``before_handover`` (its provider cannot be asked later): the
    #: dispatcher then passes the barrier before it takes the opt-out guard's lock.
    uses_handover_barrier: ClassVar[bool] = False

    def before_handover(self) -> None:
        """Call right before the step after which the provider may have the text (the
        SMTP final dot) when the provider cannot tell later whether it has it
        (``find_previous_send`` is None): a worker killed there then leaves at most one
        text per instance sent but unrecorded. The dispatcher passes the barrier once
        already before the send (``uses_handover_barrier``), so here it does not wait."""
        if self.handover_barrier is not None:
            self.handover_barrier()

    @classmethod
    def senders(cls, session: Session) -> list[str | None]:
        """The channel's senders, each configured on its own (a number per site); most
        channels have one (None)."""
        return [None]

    @classmethod
    @abstractmethod
    def configure(
        cls, session: Session, settings: Settings, sender: str | None = None
    ) -> Callable[[], Channel] | None:
        """Read this channel's configuration for one batch: a factory of connected
        instances, or None when the channel is switched off. Raise ``ConfigurationError``
        when it is on but cannot be used: its texts are held with that message."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect before the first send (lazily connecting channels need not)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection; never raises."""

    @abstractmethod
    def send(self, message: Claimed) -> SendResult:
        """Hand one text to the provider, or raise a typed error."""

    def find_previous_send(self, message: Claimed) -> SendResult | None:
        """An earlier attempt at ``message`` that the provider accepted, if the provider
        can tell (None: not found, or it cannot tell). Called before any re-send."""
        return None

    def rejected(self, session: Session, error: ChannelConfigurationError) -> str:
        """The provider rejected this channel's configuration: record it where staff will
        see it (in ``session``) and return the reason the held texts carry."""
        return error.message
