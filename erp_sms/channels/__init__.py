"""Channels deliver claimed texts: ``twilio`` and ``email_gateway``.

Every channel subclasses ``base.Channel``. This package is where the dispatcher learns,
for one batch, which channels are on (``prepare``) and where each claimed text goes with
today's rules (``Lanes.decide``) — the dispatcher itself names no channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session

from .. import rule_records
from ..addresses import classify, route
from ..config import Settings
from ..errors import AddressError, ConfigurationError
from ..models import Status
from ..outbox import Claimed, Outcome
from .base import Channel, SendResult
from .email_gateway import EmailGatewayChannel
from .twilio import TwilioChannel

__all__ = ["CHANNELS", "Channel", "Lanes", "SendResult", "prepare"]

#: Every channel the dispatcher can use.
CHANNELS: tuple[type[Channel], ...] = (TwilioChannel, EmailGatewayChannel)


@dataclass
class Lanes:
    """The channels of one batch: a factory for each usable one, a held reason for each
    that is on but unusable (credentials rejected, AuthCode unreadable, no sender)."""

    factories: dict[str, Callable[[], Channel]] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    region: str = "US"

    @property
    def active(self) -> set[str]:
        return set(self.factories) | set(self.held)

    def lane_for(self, msg: Claimed) -> str:
        """The lane of a routed text: its channel, and for a channel with several senders
        (a TWILIO record per site) the message's sender."""
        return lane_name(msg.channel or "", msg.sender)

    def decide(self, msg: Claimed) -> Claimed | Outcome:
        """Route ``msg`` again with today's rules — the TWILIO record may have been
        switched on or off, a carrier may have shut its gateway meanwhile: the text to
        send (perhaps rerouted), or the outcome to record instead."""
        try:
            address = classify(msg.raw_address, self.region)
        except AddressError as exc:
            return Outcome(Status.FAILED, reason=exc.message)
        record = msg.sender or rule_records.TWILIO
        r = route(address, lane_name(TwilioChannel.name, msg.sender) in self.active)
        if r.channel is None:
            if msg.channel == TwilioChannel.name:
                return Outcome(
                    Status.HELD,
                    reason=(
                        f"the {record} rule is inactive and this contact has no working "
                        f"gateway address ({r.reason}); it goes out when {record} is active "
                        f"again (`erp-sms rules set {record} --active`), or cancel it"
                    ),
                )
            return Outcome(Status.SKIPPED, reason=r.reason)
        lane = lane_name(r.channel, msg.sender)
        if lane in self.held:
            return Outcome(Status.HELD, reason=self.held[lane])
        if (r.channel, r.address) != (msg.channel, msg.address):
            return replace(msg, channel=r.channel, address=r.address)
        return msg


def prepare(session: Session, settings: Settings) -> Lanes:
    """Read every channel's configuration for one batch."""
    lanes = Lanes(region=settings.default_region)
    for cls in CHANNELS:
        for sender in cls.senders(session):
            name = lane_name(cls.name, sender)
            try:
                factory = cls.configure(session, settings, sender)
            except ConfigurationError as exc:
                lanes.held[name] = exc.message
                continue
            if factory is not None:
                lanes.factories[name] = factory
    return lanes


# Channels with a sender per site: their lanes are named by channel and sender.
_PER_SENDER = {TwilioChannel.name}


def lane_name(channel: str, sender: str | None) -> str:
    """``twilio`` for the TWILIO record and for channels with one sender, ``twilio
    TWILIO:WEST`` for a site's record."""
    if channel not in _PER_SENDER or sender is None or sender == rule_records.TWILIO:
        return channel
    return f"{channel} {sender}"
