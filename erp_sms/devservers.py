"""Old name of ``erp_sms.testing`` (kept so existing imports keep working)."""

from .testing import SmtpSink, TwilioServer, post_signed

__all__ = ["SmtpSink", "TwilioServer", "post_signed"]
