"""The order events a host fires, and what erp-sms tells the host back.

Fired by the host: the sender is the sales order; pass ``session=`` (the host's SQLAlchemy
Session) and, where the event has one, ``work_order=`` or ``shipping_event=``. Importing
``erp_sms`` connects the receivers.

Sent by erp-sms (``erp_sms.feedback``), after the change commits, in the process that made
it (the worker, ``erp-sms serve``, a CLI command, the host's own process), with plain
values only — connect a receiver in the host module (``ERP_SMS_HOST_MODULE``)::

    @erp_sms.signals.message_status_changed.connect
    def on_status(sender, *, message_id, order_number, contact_key, event, status,
                  previous_status, at, **_):
        ...

A receiver's error is logged; it never breaks the worker or the webhook."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

sent_to_production = _signals.signal("sent_to_production")
work_order_completed = _signals.signal("work_order_completed")
shipment_shipped = _signals.signal("shipment_shipped")
shipment_delivered = _signals.signal("shipment_delivered")

# What erp-sms tells the host (sender: the kind's name; keyword arguments: plain values).
message_status_changed = _signals.signal("message_status_changed")
reply_received = _signals.signal("reply_received")
consent_changed = _signals.signal("consent_changed")

# The order events' texts: what the freshness limit (SMSSTALEHOURS) applies to — a stage
# reported hours late is worse than none. Reminders and one-off texts keep their own rules.
ORDER_EVENTS = frozenset(
    s.name for s in (sent_to_production, work_order_completed, shipment_shipped, shipment_delivered)
)

# Texts the daily cap (SMSMAXPERDAY) never holds: staff's own texts and answers — a person
# chose to send them now.
CAP_EXEMPT = frozenset({"staff_text", "staff_reply"})
