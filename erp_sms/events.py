"""Event types: each one a signal, a template and (optionally) a subject.

The four order events are registered here; a host registers its own the same way,
e.g. a payment reminder::

    reminder = erp_sms.register_event(
        "payment_reminder", template="SMS DUNNING", subject="invoice",
        default_template="{{ order.organization.name }}: invoice {{ invoice.number }} is due. "
                         "Reply STOP to opt out, HELP for help.",
    )
    reminder.signal.send(order, session=session, invoice=invoice)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from blinker import NamedSignal
from sqlalchemy.orm import Session

from . import options, signals, templates
from .codes import Program
from .errors import InputError, UnknownEventError
from .recipients import RecipientLookup

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# Staff's one-off texts: planned like an event's texts, never fired by a signal; staff's
# text is the template, so it has none of its own.
ONE_OFF_EVENT = "staff_text"
ONE_OFF_TEMPLATE = "(one-off)"
# Staff's answers to a customer's reply: planned like a one-off, from the number the
# customer wrote to.
ANSWER_EVENT = "staff_reply"
ANSWER_TEMPLATE = "(answer)"

# Called with each event ``register_event`` adds: the notifier connects its receiver
# (``on_register``). The registry names no module above it.
_listeners: list[Callable[[EventType], None]] = []
_fired: list[EventType] = []  # events registered with a receiver wanted, in order


def on_register(listener: Callable[[EventType], None]) -> None:
    """Call ``listener`` with every event registered for signals, now and later."""
    _listeners.append(listener)
    for event in _fired:
        listener(event)


@dataclass(frozen=True, eq=False)
class EventType:
    name: str
    template: str
    signal: NamedSignal
    subject: str | None = None  # keyword argument naming the subject (work_order, …)
    lookup: RecipientLookup | None = None  # None: the default lookup
    sample_subject: Mapping[str, Any] | None = None  # for previews and template checks
    send_window: bool = False  # keep to SMSSENDWINDOW (staff can add events: SMSWINDOWEVENTS)
    # A reminder sequence's event: its steps' templates (``sequences``); fired by
    # ``Sequence.start``, not by a signal of its own.
    step_templates: tuple[str, ...] = ()
    program: str = Program.ORDERS  # what consent it needs (CONTRACT.md "Consent per program")

    def uses(self, template: str) -> bool:
        return template == self.template or template in self.step_templates

    def send(self, order: Any, *, session: Session | None = None, **kwargs: Any) -> None:
        """Fire the event (same as ``self.signal.send``)."""
        self.signal.send(order, session=session, **kwargs)


_registry: dict[str, EventType] = {}


def register_event(
    name: str,
    template: str,
    *,
    subject: str | None = None,
    default_template: str | None = None,
    lookup: RecipientLookup | None = None,
    sample_subject: Mapping[str, Any] | None = None,
    send_window: bool = False,
    program: str = Program.ORDERS,
) -> EventType:
    """Register an event type and connect its receiver. Registering the same name again
    with the same template and subject returns the existing event. ``send_window``:
    its texts go out only inside SMSSENDWINDOW in the recipient's local time."""
    if not _NAME.match(name):
        raise InputError(f"event name {name!r}: use lower-case letters, digits and _ (max 64)")
    if not template or len(template) > 64:
        raise InputError(f"event {name}: template name must be 1 to 64 characters")
    if program not in Program.ALL:
        raise InputError(f"event {name}: program {program!r}: use one of {', '.join(Program.ALL)}")
    existing = _registry.get(name)
    if existing is not None:
        if (existing.template, existing.subject) != (template, subject):
            raise InputError(
                f"event {name!r} is already registered with template {existing.template!r}"
            )
        return existing
    if default_template is not None:
        templates.register_default(template, default_template)
    event = EventType(
        name=name,
        template=template,
        signal=signals._signals.signal(name),
        subject=subject,
        lookup=lookup,
        sample_subject=sample_subject,
        send_window=send_window,
        program=program,
    )
    _registry[name] = event
    templates.register_name(template)
    _fired.append(event)
    for listener in _listeners:
        listener(event)
    return event


def add_sequence_event(event: EventType) -> EventType:
    """Register a reminder sequence's event (no receiver: ``Sequence.start`` plans it)."""
    existing = _registry.get(event.name)
    if existing is not None and not existing.step_templates:
        raise InputError(f"{event.name!r} is already registered as an event, not a sequence")
    _registry[event.name] = event
    for name in (event.template, *event.step_templates):
        templates.register_name(name)
    return event


def get_event(name: str) -> EventType:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownEventError(
            f"unknown event {name!r}; registered events: {', '.join(sorted(_registry))}"
        ) from None


def all_events() -> list[EventType]:
    return list(_registry.values())


def event_for_template(template: str) -> EventType | None:
    for ev in _registry.values():
        if ev.uses(template):
            return ev
    return None


def fire(name: str, order: Any, *, session: Session | None = None, **kwargs: Any) -> None:
    """Fire an event by name; an unknown name raises ``UnknownEventError`` at once."""
    get_event(name).send(order, session=session, **kwargs)


def register_builtin_events() -> None:
    # Staff's one-off texts (``notifier.text_contact``): no receiver, no template listed.
    for name, template in ((ONE_OFF_EVENT, ONE_OFF_TEMPLATE), (ANSWER_EVENT, ANSWER_TEMPLATE)):
        signal = signals._signals.signal(name)
        _registry.setdefault(name, EventType(name, template, signal, program=Program.STAFF))
    register_event(
        "sent_to_production",
        "SMS S2P",
    )
    register_event(
        "work_order_completed",
        "SMS PWOCOMP",
        subject="work_order",
        sample_subject={"id": 1, "number": "WO-58211", "status": "complete"},
    )
    register_event(
        "shipment_shipped",
        "SMS SESHIP",
        subject="shipping_event",
        sample_subject={
            "id": 1,
            "status": "Shipped",
            "carrier": "UPS",
            "tracking_number": "1Z999AA10123456784",
            "tracking_url": "https://www.ups.com/track?tracknum=1Z999AA10123456784",
        },
    )
    register_event(
        "shipment_delivered",
        "SMS SEDEL",
        subject="shipping_event",
        sample_subject={
            "id": 1,
            "status": "Delivered",
            "carrier": "UPS",
            "tracking_number": "1Z999AA10123456784",
            "tracking_url": "https://www.ups.com/track?tracknum=1Z999AA10123456784",
        },
    )


def _check_event_names(value: str) -> str:
    names = [n.strip() for n in value.split(",") if n.strip()]
    return ",".join(get_event(n).name for n in names)  # UnknownEventError names them


options.add_validator("events", _check_event_names)
