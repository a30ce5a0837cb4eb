"""Everything erp-sms knows about Twilio, in one place: the channel (sending, the
client's faults turned into ours, pacing per sender), the credential check staff run,
and the prices Twilio sets after sending. The webhooks (``erp_sms.webhooks``) read
what Twilio posts back; the loopback Twilio for tests is ``erp_sms.testing``."""

from __future__ import annotations

from .channel import (
    HELD_CREDENTIALS,
    LOOKUP_PAGE_SIZE,
    TOLL_FREE_PREFIXES,
    Pacer,
    TwilioChannel,
    error_for,
    log,
    pacer_for,
    sender_rate,
)

__all__ = [
    "HELD_CREDENTIALS",
    "LOOKUP_PAGE_SIZE",
    "TOLL_FREE_PREFIXES",
    "Pacer",
    "TwilioChannel",
    "error_for",
    "log",
    "pacer_for",
    "sender_rate",
]
