"""The reference ERP schema: organizations, contacts, sales orders, work orders and
shipping events. Hosts without tables of their own use it; the demo and tests too.

A host with its own tables provides an ``erp_sms.recipients.RecipientLookup`` instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, ForeignKey, Index, String, Table, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

SMSUPDATE = "SMSUPDATE"


class ErpBase(DeclarativeBase):
    pass


contact_organization = Table(
    "erp_contact_organization",
    ErpBase.metadata,
    Column("contact_id", ForeignKey("erp_contact.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "organization_id", ForeignKey("erp_organization.id", ondelete="CASCADE"), primary_key=True
    ),
    # "The contacts of this organization" is the host path's first query; the primary key
    # starts with contact_id, so it needs its own index (migration e0002).
    Index("ix_erp_contact_organization_organization", "organization_id"),
)


class Organization(ErpBase):
    __tablename__ = "erp_organization"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    contacts: Mapped[list[Contact]] = relationship(
        secondary=contact_organization, back_populates="organizations"
    )

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def __repr__(self) -> str:
        return f"Organization(id={self.id!r}, name={self.name!r})"


class ContactAttribute(ErpBase):
    """A flag on one contact, e.g. ``ContactAttribute(code="SMSUPDATE")``."""

    __tablename__ = "erp_contact_attribute"
    __table_args__ = (UniqueConstraint("contact_id", "code", name="uq_erp_contact_attribute"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("erp_contact.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32))
    contact: Mapped[Contact] = relationship(back_populates="attributes")

    def __init__(self, code: str, **kwargs: Any) -> None:
        super().__init__(code=code, **kwargs)


class Contact(ErpBase):
    """A person. ``email2`` is the text-message address: a carrier gateway address
    (``5555555555@vtext.com``) or a plain phone number (``555-555-5555``)."""

    __tablename__ = "erp_contact"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    email2: Mapped[str | None] = mapped_column(String(320), default=None)
    organizations: Mapped[list[Organization]] = relationship(
        secondary=contact_organization, back_populates="contacts"
    )
    attributes: Mapped[list[ContactAttribute]] = relationship(
        back_populates="contact", cascade="all, delete-orphan"
    )

    def __init__(
        self,
        name: str,
        email2: str | None = None,
        organizations: list[Organization] | None = None,
        attributes: list[ContactAttribute] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            name=name,
            email2=email2,
            organizations=list(organizations or []),
            attributes=list(attributes or []),
            **kwargs,
        )

    def has_attribute(self, code: str) -> bool:
        return any(a.code == code for a in self.attributes)

    def __repr__(self) -> str:
        return f"Contact(id={self.id!r}, name={self.name!r})"


class SalesOrder(ErpBase):
    """A sales order. ``sms_update`` is the 'SMS Update' checkbox; it is checked
    automatically when the listed contact has the SMSUPDATE attribute."""

    __tablename__ = "erp_sales_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("erp_organization.id"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("erp_contact.id"))
    sms_update: Mapped[bool] = mapped_column(Boolean, default=False)
    organization: Mapped[Organization | None] = relationship()
    contact: Mapped[Contact | None] = relationship()
    work_orders: Mapped[list[WorkOrder]] = relationship(back_populates="sales_order")
    shipping_events: Mapped[list[ShippingEvent]] = relationship(back_populates="sales_order")

    def __init__(
        self,
        number: str,
        organization: Organization | None = None,
        contact: Contact | None = None,
        sms_update: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(number=number, organization=organization, sms_update=sms_update, **kwargs)
        if contact is not None:
            self.contact = contact

    @validates("contact")
    def _check_sms_update(self, _key: str, contact: Contact | None) -> Contact | None:
        if contact is not None and contact.has_attribute(SMSUPDATE):
            self.sms_update = True
        return contact

    def __repr__(self) -> str:
        return f"SalesOrder(number={self.number!r})"


class WorkOrder(ErpBase):
    __tablename__ = "erp_work_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(64))
    sales_order_id: Mapped[int] = mapped_column(ForeignKey("erp_sales_order.id"))
    status: Mapped[str] = mapped_column(String(32), default="open")
    sales_order: Mapped[SalesOrder] = relationship(back_populates="work_orders")

    def __init__(
        self,
        number: str,
        sales_order: SalesOrder | None = None,
        status: str = "open",
        **kwargs: Any,
    ) -> None:
        super().__init__(number=number, status=status, **kwargs)
        if sales_order is not None:
            self.sales_order = sales_order


class ShippingEvent(ErpBase):
    __tablename__ = "erp_shipping_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    sales_order_id: Mapped[int] = mapped_column(ForeignKey("erp_sales_order.id"))
    status: Mapped[str] = mapped_column(String(32), default="open")
    carrier: Mapped[str | None] = mapped_column(String(64))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    sales_order: Mapped[SalesOrder] = relationship(back_populates="shipping_events")

    def __init__(
        self,
        sales_order: SalesOrder | None = None,
        status: str = "open",
        carrier: str | None = None,
        tracking_number: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(status=status, carrier=carrier, tracking_number=tracking_number, **kwargs)
        if sales_order is not None:
            self.sales_order = sales_order


__all__ = [
    "SMSUPDATE",
    "Contact",
    "ContactAttribute",
    "ErpBase",
    "Organization",
    "SalesOrder",
    "ShippingEvent",
    "WorkOrder",
    "contact_organization",
]
