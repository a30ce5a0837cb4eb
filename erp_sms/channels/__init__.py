"""Channels deliver one claimed message each: ``twilio`` and ``email_gateway``.

Every channel fills the same small interface (``base.Channel``) and reports failure by
raising a typed error from ``erp_sms.errors`` — never by returning False.
"""

from .base import Channel, SendResult

__all__ = ["Channel", "SendResult"]
