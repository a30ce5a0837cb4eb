"""The order events a host fires. The sender is the sales order; pass ``session=`` (the
host's SQLAlchemy Session) and, where the event has one, ``work_order=`` or
``shipping_event=``. Importing ``erp_sms`` connects the receivers."""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

sent_to_production = _signals.signal("sent_to_production")
work_order_completed = _signals.signal("work_order_completed")
shipment_shipped = _signals.signal("shipment_shipped")
shipment_delivered = _signals.signal("shipment_delivered")

# The order events' texts: what the freshness limit (SMSSTALEHOURS) applies to — a stage
# reported hours late is worse than none. Reminders and one-off texts keep their own rules.
ORDER_EVENTS = frozenset(
    s.name for s in (sent_to_production, work_order_completed, shipment_shipped, shipment_delivered)
)

# Texts the daily cap (SMSMAXPERDAY) never holds: staff's own texts and answers — a person
# chose to send them now.
CAP_EXEMPT = frozenset({"staff_text", "staff_reply"})
