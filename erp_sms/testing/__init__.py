"""Loopback servers for the demo, the tests — and a host's own tests: a
Twilio-compatible Messages API, an SMTP sink and a host's webhook endpoint that checks
Standard Webhooks signatures (``HostReceiver``). All bind to 127.0.0.1 only.

A host tests its integration against them like this (the SMTP sink needs the ``demo``
extra, ``pip install 'erp-sms[demo]'``)::

    from erp_sms.testing import SmtpSink, TwilioServer

    with TwilioServer() as twilio, SmtpSink() as smtp:
        twilio.add_account("AC…", "auth token")
        # ERP_SMS_TWILIO_API_URL=twilio.url, ERP_SMS_SMTP_HOST/PORT=smtp.host/smtp.port
        ...
        assert [m.to for m in twilio.messages] == ["+13125550101"]

As a process of their own on fixed ports (a host's end-to-end setup beside a separate
worker): ``python -m erp_sms.testing --twilio-port 8701 --smtp-port 8725``.

``TwilioServer`` speaks enough of the 2010-04-01 Messages API for the real ``twilio``
client: create, fetch and list (To/From/DateSent filters), HTTP basic auth checked
against the account's token, and programmable faults: error bodies by code, HTTP 500,
slow answers, added latency, random transient failures. It can also post signed status
callbacks, as Twilio does.
"""

from __future__ import annotations

from .data import queue_texts
from .host_receiver import HostReceiver, new_secret
from .smtp import SmtpSink
from .twilio import TwilioServer
from .twilio_data import API, Fault, StoredMessage
from .twilio_http import post_signed

__all__ = [
    "API",
    "Fault",
    "HostReceiver",
    "SmtpSink",
    "StoredMessage",
    "TwilioServer",
    "new_secret",
    "post_signed",
    "queue_texts",
]
