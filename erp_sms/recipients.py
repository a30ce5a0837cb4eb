"""Who gets a text (CONTRACT.md "Who gets a text") and the host boundary.

A host with tables of its own implements ``RecipientLookup``; ``ErpLookup`` is the
implementation for the reference schema in ``erp_sms.erp`` and the default.
``select_recipients`` applies the rules to what a lookup returns, the same for every host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import phonenumbers
from sqlalchemy import (
    ColumnElement,
    Select,
    any_,
    bindparam,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, selectinload

from . import direct, erp
from .addresses import classify
from .config import get_settings
from .errors import AddressError, ConfigurationError


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
    # sender`) takes precedence.
    sender: str | None = None


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
    session and run inside the host's transaction."""

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


# Optional lookup methods. A host adds them for the staff tools that need them; without
# one, that tool says which method to add (``lookup_method``):
#
#   find_order(session, number) -> order | None
#       the host's order (the object its events are fired with) by number: template
#       previews against real orders, ``messages retry``.
#   subjects(session, order, name) -> Sequence[object]
#       the order's subjects of one kind (``work_order``, ``shipping_event``, ``invoice``…),
#       oldest first: previews use the latest, ``messages retry`` the one retried.
#   find_organization(session, text) -> (key, name) | None
#       an organization by name or key: staff switching a reminder sequence or a
#       sender per organization (without it, staff give the organization's key).
#   gateway_contacts(session) -> Iterable[ContactView]
#       contacts whose address is an email-to-SMS gateway (``contacts gateways``).
#   samples() -> Mapping[str, Mapping[str, Any]]
#       sample template contexts by variable (``order``, ``contact``, a subject…) with
#       every field the lookup provides, so template checks know the host's variables
#       (``contact.first_name``).

OPTIONAL_METHODS = {
    "find_order": "find_order(session, number) -> order | None",
    "subjects": "subjects(session, order, name) -> list of subjects",
    "gateway_contacts": "gateway_contacts(session) -> contacts with gateway addresses",
    "find_organization": "find_organization(session, text) -> (key, name) or None",
    "samples": "samples() -> sample template contexts",
}


def lookup_method(lookup: Any, name: str, purpose: str) -> Callable[..., Any]:
    """The lookup's optional method ``name``, or ``ConfigurationError`` naming what to
    add (and what for)."""
    method = getattr(lookup, name, None)
    if method is None:
        raise ConfigurationError(
            f"the recipient lookup {type(lookup).__name__} has no {OPTIONAL_METHODS[name]}: "
            f"add it to {purpose} (README 'Hosts with their own tables')"
        )
    assert callable(method)
    return method  # type: ignore[no-any-return]


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


_PREFETCHED = "erp_sms_prefetched_contacts"  # session.info: id(order) -> (order, org, rows)


@functools.cache
def _organization_and_contacts(dialect: str) -> Any:
    """An organization's name (the first row, contact columns NULL) and then its contacts
    that carry SMSUPDATE — a UNION ALL, so each half keeps its own index (an outer join
    here made SQLite scan the link table)."""
    org = erp.Organization.__table__
    contacts = _opted_in_contacts(dialect).order_by(None)
    name = select(
        literal(0).label("part"),
        org.c.name.label("org_name"),
        null().label("id"),
        null().label("name"),
        null().label("email2"),
    ).where(org.c.id == bindparam("org_id"))
    members = contacts.with_only_columns(
        literal(1).label("part"), null().label("org_name"), *contacts.selected_columns
    )
    both = union_all(name, members).subquery()
    return select(both).order_by(both.c.part, both.c.id)


@functools.cache
def _opted_in_contacts(dialect: str) -> Select[Any]:
    """One Core query, no ORM objects, built once per dialect: an organization's contacts
    that carry SMSUPDATE.

    On PostgreSQL the organization's contact ids come as an array (an InitPlan) that the
    attribute's unique index (contact_id, code) is searched with, and only the opted-in
    contacts are then read: 0.22 to 0.30 ms for an organization of 200 from 10k to 1M
    contacts. As a plain join the planner hashed the organization's links against a scan
    of *every* SMSUPDATE attribute: 0.18 ms at 10k, 0.42 at 100k, 2.4 at 1M — it prices
    each index probe as a read from disk (bench/NOTES.md). SQLite and MariaDB walk the
    link table's organization_id index."""
    link, attr = erp.contact_organization, erp.ContactAttribute.__table__
    contact = erp.Contact.__table__
    columns = select(contact.c.id, contact.c.name, contact.c.email2)
    if dialect == "postgresql":
        ids = select(link.c.contact_id).where(link.c.organization_id == bindparam("org_id"))
        return (
            columns.join(attr, attr.c.contact_id == contact.c.id)
            .where(
                attr.c.contact_id == any_(func.array(ids.scalar_subquery())),
                attr.c.code == erp.SMSUPDATE,
            )
            .order_by(contact.c.id)
        )
    return (
        columns.join(link, link.c.contact_id == contact.c.id)
        .where(
            link.c.organization_id == bindparam("org_id"),
            select(attr.c.id)
            .where(attr.c.contact_id == contact.c.id, attr.c.code == erp.SMSUPDATE)
            .exists(),
        )
        .order_by(contact.c.id)
    )


class ErpLookup:
    """``RecipientLookup`` for the reference schema (``erp_sms.erp``)."""

    def order(self, session: Session, order: Any) -> OrderView:
        if not isinstance(order, erp.SalesOrder):
            raise TypeError(
                f"the default recipient lookup handles erp_sms.erp.SalesOrder, not "
                f"{type(order).__name__}: register the event with lookup=YourLookup()"
            )
        org_id, org_name = order.organization_id, None
        loaded = sa_inspect(order).attrs.organization.loaded_value
        if isinstance(loaded, erp.Organization):
            org_id, org_name = loaded.id, loaded.name
        if org_id is not None:
            # One statement for the organization's name and its opted-in contacts, which
            # ``contacts`` then takes from the session (not an ORM lazy load, not a second
            # round trip).
            conn = session.connection(bind_arguments={"mapper": erp.Organization})
            stmt = _organization_and_contacts(conn.dialect.name)
            rows = direct.rows(conn, stmt, {"org_id": org_id})
            if rows:
                org_name = rows[0].org_name
            contacts = [r for r in rows if r.id is not None]
            session.info.setdefault(_PREFETCHED, {})[id(order)] = (order, org_id, contacts)
        contact_id = order.contact_id
        if contact_id is None and order.contact is not None:  # set, not flushed yet
            contact_id = order.contact.id
        return OrderView(
            key=str(order.id),
            number=order.number,
            organization_key=str(org_id) if org_id is not None else None,
            organization_name=org_name,
            sms_update=bool(order.sms_update),
            listed_contact_key=str(contact_id) if contact_id is not None else None,
            context={
                "number": order.number,
                "organization": {"name": org_name or ""},
                "sms_update": bool(order.sms_update),
            },
        )

    @staticmethod
    def _view(c: erp.Contact) -> ContactView:
        return ContactView(
            key=str(c.id),
            name=c.name,
            address=c.email2,
            has_smsupdate=c.has_attribute(erp.SMSUPDATE),
            organization_keys=frozenset(str(o.id) for o in c.organizations),
            context={"name": c.name, "id": c.id},
        )

    def contacts(self, session: Session, order: Any, *, listed_only: bool) -> Sequence[ContactView]:
        prefetched = session.info.get(_PREFETCHED, {}).pop(id(order), None)
        if listed_only:
            listed = order.contact
            return [self._view(listed)] if listed is not None else []
        found: dict[int, ContactView] = {}
        org_id = order.organization_id
        if org_id is not None:
            org_key = frozenset({str(org_id)})
            if prefetched is not None and prefetched[0] is order and prefetched[1] == org_id:
                rows = prefetched[2]
            else:
                conn = session.connection(bind_arguments={"mapper": erp.Contact})
                stmt = _opted_in_contacts(conn.dialect.name)
                rows = direct.rows(conn, stmt, {"org_id": org_id})
            for row in rows:
                found[row.id] = ContactView(
                    key=str(row.id),
                    name=row.name,
                    address=row.email2,
                    has_smsupdate=True,
                    organization_keys=org_key,
                    context={"name": row.name, "id": row.id},
                )
        # The listed contact, when it is not already among them (another organization's
        # contact with SMSUPDATE): loaded only then.
        if order.contact_id not in found or order.contact_id is None:
            listed = order.contact
            if (
                listed is not None
                and listed.id not in found
                and listed.has_attribute(erp.SMSUPDATE)
            ):
                found[listed.id] = self._view(listed)
        return [found[k] for k in sorted(found)]

    def subject(self, name: str, obj: Any) -> tuple[str, Mapping[str, Any]]:
        return object_key(obj), object_context(obj)

    def contacts_with_number(self, session: Session, e164: str) -> Sequence[ContactView]:
        rows = session.scalars(
            select(erp.Contact).where(number_filter(erp.Contact.email2, e164))
        ).all()
        return [self._view(c) for c in rows if same_number(c.email2, e164)]

    def find_order(self, session: Session, number: str) -> erp.SalesOrder | None:
        return session.scalar(select(erp.SalesOrder).where(erp.SalesOrder.number == number))

    def find_organization(self, session: Session, text: str) -> tuple[str, str] | None:
        q = select(erp.Organization.id, erp.Organization.name)
        rows = session.execute(q.where(func.lower(erp.Organization.name) == text.lower())).all()
        if not rows and text.isdigit():
            rows = session.execute(q.where(erp.Organization.id == int(text))).all()
        return (str(rows[0].id), rows[0].name) if len(rows) == 1 else None

    def subjects(self, session: Session, order: Any, name: str) -> Sequence[Any]:
        if name == "work_order":
            return list(order.work_orders)
        if name == "shipping_event":
            return list(order.shipping_events)
        return []

    def gateway_contacts(self, session: Session) -> Iterable[ContactView]:
        rows = session.scalars(
            select(erp.Contact)
            .where(erp.Contact.email2.like("%@%"))
            .options(selectinload(erp.Contact.attributes), selectinload(erp.Contact.organizations))
            .order_by(erp.Contact.id)
        )
        return [self._view(c) for c in rows]

    def samples(self) -> Mapping[str, Mapping[str, Any]]:
        return {
            "order": {
                "number": "SO-104233",
                "organization": {"name": "Acme Fabrication LLC"},
                "sms_update": True,
            },
            "contact": {"name": "Jordan Smith", "id": 1},
        }

    def set_consent(self, session: Session, contact_key: str, opted_in: bool) -> ContactView:
        c = session.get(erp.Contact, int(contact_key))
        if c is None:
            raise LookupError(f"no contact with id {contact_key}")
        if opted_in and not c.has_attribute(erp.SMSUPDATE):
            c.attributes.append(erp.ContactAttribute(code=erp.SMSUPDATE))
        elif not opted_in:
            for a in [a for a in c.attributes if a.code == erp.SMSUPDATE]:
                c.attributes.remove(a)
        session.flush()
        return self._view(c)

    def contact(self, session: Session, contact_key: str) -> ContactView | None:
        try:
            c = session.get(erp.Contact, int(contact_key))
        except ValueError:
            return None
        return self._view(c) if c is not None else None


def _digits_only(column: Any) -> ColumnElement[str]:
    """The column with the usual separators removed, in SQL (every database has REPLACE)."""
    expr = column
    for ch in (" ", "-", "(", ")", ".", "/", "\u00a0"):
        expr = func.replace(expr, ch, "")
    return expr  # type: ignore[no-any-return]


def number_filter(column: Any, e164: str) -> ColumnElement[bool]:
    """A SQL pre-filter for text addresses that may be ``e164`` however they were typed
    (``+1 212 555 01 23``, ``(212) 555-0123``, ``2125550123@vtext.com``, ``07911 123456``):
    the national significant number, separators removed, appears in the address.
    ``same_number`` then decides exactly."""
    try:
        national = phonenumbers.national_significant_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        national = "".join(ch for ch in e164 if ch.isdigit())
    return _digits_only(column).like(f"%{national}%")


def same_number(address: str | None, e164: str, region: str | None = None) -> bool:
    """Whether the text address ``address`` is the number ``e164`` (in the default
    region's reading of numbers written without a country code)."""
    try:
        return classify(address, region or get_settings().default_region).e164 == e164
    except AddressError:
        return False


_default_lookup: RecipientLookup = ErpLookup()
_installed = False


def default_lookup() -> RecipientLookup:
    return _default_lookup


def set_default_lookup(lookup: RecipientLookup) -> None:
    """Use the host's own lookup for every event that was not registered with one (and
    for replies, opt-outs, previews and staff commands)."""
    global _default_lookup, _installed
    _default_lookup = lookup
    _installed = True


def reset_default_lookup() -> None:
    """Back to the reference schema's lookup, as before any ``set_default_lookup``."""
    global _default_lookup, _installed
    _default_lookup, _installed = ErpLookup(), False


def lookup_installed() -> bool:
    """Whether a host installed its lookup with ``set_default_lookup``."""
    return _installed
