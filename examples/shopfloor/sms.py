"""Shopfloor's erp-sms integration module: ``ERP_SMS_HOST_MODULE=shopfloor.sms``.

Every erp-sms entry point (each command, the worker, ``erp-sms serve``) imports this
module first, so opt-outs, replies, previews and staff commands use Shopfloor's tables.
It does four things:

1. installs the recipient lookup (``erp_sms.set_default_lookup``);
2. registers Shopfloor's own event, an invoice payment reminder (template SMS DUNNING);
3. listens to what erp-sms tells the ERP (``erp_sms.signals``): here it logs each text's
   status, each reply and each consent change as Shopfloor's own lines — a real ERP would
   update the order's page or open a task;
4. nothing else — no tables are created here (``erp-sms db upgrade`` creates only the
   plugin's tables when a host module is configured).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import erp_sms
from erp_sms.recipients import ContactView, OrderView, number_filter, same_number

from .models import Invoice, Order, Person


class ShopLookup:
    """erp-sms's view of Shopfloor: who to text about an order, and their consent."""

    # -- required ------------------------------------------------------------------------

    def order(self, session: Session, order: Order) -> OrderView:
        return OrderView(
            key=str(order.id),
            number=order.order_no,
            organization_key=str(order.customer_id),
            organization_name=order.customer.name,
            sms_update=order.text_updates,
            listed_contact_key=str(order.contact_person_id) if order.contact_person_id else None,
            context={"number": order.order_no, "organization": {"name": order.customer.name}},
        )

    def contacts(
        self, session: Session, order: Order, *, listed_only: bool
    ) -> Sequence[ContactView]:
        if listed_only:
            return [self._view(order.contact_person)] if order.contact_person else []
        people = session.scalars(
            select(Person)
            .where(Person.customer_id == order.customer_id, Person.wants_texts.is_(True))
            .order_by(Person.id)
        )
        return [self._view(p) for p in people]

    def subject(self, name: str, obj: Any) -> tuple[str, Mapping[str, Any]]:
        assert isinstance(obj, Invoice)
        return str(obj.id), {
            "number": obj.invoice_no,
            "due_date": obj.due_date.isoformat(),
            "amount": f"${obj.amount:,.2f}",
        }

    def contacts_with_number(self, session: Session, e164: str) -> Sequence[ContactView]:
        # number_filter narrows in SQL however the number was typed; same_number decides.
        rows = session.scalars(select(Person).where(number_filter(Person.mobile, e164)))
        return [self._view(p) for p in rows if same_number(p.mobile, e164)]

    def set_consent(self, session: Session, contact_key: str, opted_in: bool) -> ContactView:
        person = session.get(Person, int(contact_key))
        if person is None:
            raise LookupError(f"no person {contact_key}")
        person.wants_texts = opted_in
        session.flush()
        return self._view(person)

    def contact(self, session: Session, contact_key: str) -> ContactView | None:
        if not contact_key.isdigit():
            return None
        person = session.get(Person, int(contact_key))
        return self._view(person) if person else None

    # -- optional: staff tools -------------------------------------------------------------

    def find_order(self, session: Session, number: str) -> Order | None:
        return session.scalar(select(Order).where(Order.order_no == number))

    def subjects(self, session: Session, order: Order, name: str) -> Sequence[Any]:
        return list(order.invoices) if name == "invoice" else []

    def open_orders(self, session: Session, contact: ContactView) -> Sequence[tuple[str, str]]:
        """STATUS: the customer's orders with what is still open on them."""
        out = []
        for key in sorted(contact.organization_keys):
            orders = session.scalars(
                select(Order).where(Order.customer_id == int(key)).order_by(Order.id)
            )
            for o in orders:
                due = [f"invoice {i.invoice_no} due {i.due_date:%Y-%m-%d}" for i in o.invoices]
                out.append((o.order_no, ", ".join(due) or "in the works"))
        return out

    def gateway_contacts(self, session: Session) -> Iterable[ContactView]:
        rows = session.scalars(select(Person).where(Person.mobile.like("%@%")).order_by(Person.id))
        return [self._view(p) for p in rows]

    def samples(self) -> Mapping[str, Mapping[str, Any]]:
        return {
            "order": {"number": "SO-2001", "organization": {"name": "Birch Cabinets"}},
            "contact": {"name": "Dana Birch", "first_name": "Dana", "last_name": "Birch"},
            "invoice": {"number": "INV-9001", "due_date": "2026-12-01", "amount": "$1,250.00"},
        }

    @staticmethod
    def _view(p: Person) -> ContactView:
        return ContactView(
            key=str(p.id),
            name=f"{p.first_name} {p.last_name}",
            address=p.mobile,
            has_smsupdate=p.wants_texts,
            organization_keys=frozenset({str(p.customer_id)}),
            context={
                "name": f"{p.first_name} {p.last_name}",
                "first_name": p.first_name,
                "last_name": p.last_name,
            },
        )


erp_sms.set_default_lookup(ShopLookup())

payment_reminder = erp_sms.register_event(
    "payment_reminder",
    "SMS DUNNING",
    subject="invoice",
    default_template=(
        "Hi {{ contact.first_name }}, invoice {{ invoice.number }} ({{ invoice.amount }}) for "
        "order {{ order.number }} is due {{ invoice.due_date }}. Reply STOP to opt out, HELP "
        "for help."
    ),
)

log = logging.getLogger("shopfloor")


@erp_sms.signals.message_status_changed.connect
def _text_status(sender: str, *, message_id: int, order_number: str | None, **values: Any) -> None:
    log.info(
        "shopfloor: order %s text #%s %s -> %s",
        order_number,
        message_id,
        values["previous_status"],
        values["status"],
    )


@erp_sms.signals.reply_received.connect
def _reply(sender: str, *, reply_id: int, kind: str, order_number: str | None, **_: Any) -> None:
    log.info("shopfloor: reply #%s (%s) about order %s", reply_id, kind, order_number)


@erp_sms.signals.consent_changed.connect
def _consent(sender: str, *, number: str | None, action: str, source: str, **_: Any) -> None:
    log.info("shopfloor: %s %s (%s)", number, action, source)
