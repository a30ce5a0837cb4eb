"""The lookup a host implements, its views of an order and a contact, and the selection
of an order's recipients (SMSUPDATE, SMSONLYONE)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from ..errors import ConfigurationError


@dataclass(frozen=True)
class OrderView:
    """What the plugin needs to know about an order (or any document an event is about)."""

    key: str  # stable identifier, part of the idempotency key
    number: str
    organization_key: str | None
    organization_name: str | None
    sms_update: bool  # the 'SMS Update' checkbox
    listed_contact_key: str | None
    context: Mapping[str, Any] = field(default_factory=dict)  # the template's `order`
    # The TWILIO record this order's texts go out from (``TWILIO:WEST``, a site's own
    # number); None: TWILIO. A staff mapping of the organization (`erp-sms rules
    # sender`) takes precedence — unless ``sender_fixed``: staff's answer goes from the
    # number the customer wrote to, whatever the organization's mapping says.
    sender: str | None = None
    sender_fixed: bool = False


@dataclass(frozen=True)
class ContactView:
    key: str
    name: str
    address: str | None  # Email 2: gateway address or phone number
    has_smsupdate: bool
    organization_keys: frozenset[str]
    context: Mapping[str, Any] = field(default_factory=dict)  # the template's `contact`


class RecipientLookup(Protocol):
    """What a host provides so erp-sms can find who to text. All calls get the host's
    session and run inside the host's transaction.

    Optionally, an ``address_field`` attribute names the field a contact's text address
    is in, as staff know it (e.g. ``"Mobile"``): the hints say "fix Mobile". Without it
    they say "the contact's text-message address"; the reference schema's is "Email 2".
    """

    def order(self, session: Session, order: Any) -> OrderView:
        """Describe the order the event is about."""
        ...

    def contacts(self, session: Session, order: Any, *, listed_only: bool) -> Sequence[ContactView]:
        """The contacts to consider: with ``listed_only``, the contact listed on the order
        (if any); otherwise the contacts with SMSUPDATE linked to the order's
        organization, plus the listed contact when it has SMSUPDATE."""
        ...

    def subject(self, name: str, obj: Any) -> tuple[str, Mapping[str, Any]]:
        """Key and template context of the event's subject (a work order, a shipping event,
        an invoice…)."""
        ...

    def contacts_with_number(self, session: Session, e164: str) -> Sequence[ContactView]:
        """Contacts whose text-message address is this number (for replies and opt-outs)."""
        ...

    def set_consent(self, session: Session, contact_key: str, opted_in: bool) -> ContactView:
        """Add (True) or remove (False) the contact's SMSUPDATE attribute."""
        ...

    def contact(self, session: Session, contact_key: str) -> ContactView | None:
        """One contact by key, or None."""
        ...


# Optional lookup methods, each a Protocol of its own. A host adds them for the staff
# tools that need them; without one, that tool says which method to add (``optional``).


@runtime_checkable
class FindsOrders(Protocol):
    """Template previews against real orders, ``messages retry``."""

    def find_order(self, session: Session, number: str) -> Any | None:
        """The host's order (the object its events are fired with) by number."""
        ...


@runtime_checkable
class ListsSubjects(Protocol):
    """Previews use the latest subject, ``messages retry`` the one retried."""

    def subjects(self, session: Session, order: Any, name: str) -> Sequence[Any]:
        """The order's subjects of one kind (``work_order``, ``invoice``…), oldest first."""
        ...


@runtime_checkable
class FindsOrganizations(Protocol):
    """Staff switching a reminder sequence or a sender per organization by name."""

    def find_organization(self, session: Session, text: str) -> tuple[str, str | None] | None:
        """An organization's (key, name) by name or key, or None."""
        ...


@runtime_checkable
class ListsGatewayContacts(Protocol):
    """``contacts gateways`` and the dashboard."""

    def gateway_contacts(self, session: Session) -> Iterable[ContactView]:
        """Contacts whose address is an email-to-SMS gateway."""
        ...


@runtime_checkable
class ListsOpenOrders(Protocol):
    """A customer texting STATUS: the stage of their organization's open orders. Without
    it, erp-sms answers from the order texts it sent."""

    def open_orders(self, session: Session, contact: ContactView) -> Sequence[tuple[str, str]]:
        """(order number, its stage in a few words) of the contact's organizations'
        orders not delivered yet, oldest first."""
        ...


@runtime_checkable
class HasSamples(Protocol):
    """Template checks that know the host's variables (``contact.first_name``)."""

    def samples(self) -> Mapping[str, Mapping[str, Any]]:
        """Sample template contexts by variable, with every field the lookup provides."""
        ...


_P = TypeVar("_P")


def optional(lookup: object, kind: type[_P], purpose: str) -> _P:
    """``lookup`` as a provider of the optional method ``kind`` describes, or
    ``ConfigurationError`` naming the method to add (and what for)."""
    if isinstance(lookup, kind):
        return lookup
    method = next(n for n in vars(kind) if not n.startswith("_"))
    raise ConfigurationError(
        f"the recipient lookup {type(lookup).__name__} has no {method}() method: add it to "
        f"{purpose} (docs/host-integration.md, 'A host with its own tables')"
    )


@dataclass(frozen=True)
class Decision:
    contact: ContactView | None  # None: an order-level entry (nobody could be texted)
    skip_reason: str | None = None


def select_recipients(
    order: OrderView, contacts: Sequence[ContactView], *, only_listed: bool
) -> list[Decision]:
    """Apply CONTRACT.md "Who gets a text" to the contacts a lookup returned."""
    if only_listed and order.listed_contact_key is None:
        return [
            Decision(
                None,
                f"SMSONLYONE is on but order {order.number} has no listed contact: pick the "
                "contact on the order, or turn SMSONLYONE off",
            )
        ]
    if order.organization_key is None and not contacts:
        return [
            Decision(
                None,
                f"order {order.number} has no organization: set the organization on the order "
                "so its contacts can be texted",
            )
        ]
    decisions = []
    for c in contacts:
        reason = None
        if order.organization_key is None:
            reason = f"order {order.number} has no organization to link {c.name} to"
        elif order.organization_key not in c.organization_keys:
            org = order.organization_name or order.organization_key
            reason = f"{c.name} is not linked to {org}: link the contact to the organization"
        elif not c.has_smsupdate:
            reason = f"{c.name} does not have the SMSUPDATE attribute (not opted in)"
        elif not order.sms_update:
            reason = f"the SMS Update box is not checked on order {order.number}"
        decisions.append(Decision(c, reason))
    if not decisions and order.sms_update:
        label = order.organization_name or order.organization_key
        decisions.append(
            Decision(
                None,
                f"no contact linked to {label} has the SMSUPDATE attribute: add it to the "
                "contacts who want texts",
            )
        )
    return decisions


def object_context(obj: Any) -> dict[str, Any]:
    """Template context for an arbitrary host object: a mapping as is, the column
    attributes of a mapped object, or the public attributes of anything else."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    try:
        mapper = sa_inspect(type(obj))
    except Exception:
        mapper = None
    if mapper is not None and hasattr(mapper, "column_attrs"):
        return {a.key: getattr(obj, a.key) for a in mapper.column_attrs}
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


def object_key(obj: Any) -> str:
    for attr in ("id", "pk", "key", "number"):
        value = getattr(obj, attr, None)
        if value is None and isinstance(obj, Mapping):
            value = obj.get(attr)
        if value is not None:
            return str(value)
    raise ValueError(f"cannot tell which {type(obj).__name__} this is: give it an id")
