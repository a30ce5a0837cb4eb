"""The host's own tables: customers, people, orders and invoices (no erp_* tables)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Boolean, Date, ForeignKey, Index, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class ShopBase(DeclarativeBase):
    pass


class Customer(ShopBase):
    __tablename__ = "shop_customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    people: Mapped[list[Person]] = relationship(back_populates="customer")


class Person(ShopBase):
    """A customer's person. ``mobile`` is the text address; ``wants_texts`` the host's own
    consent flag (what erp-sms calls SMSUPDATE)."""

    __tablename__ = "shop_person"
    # The lookup's hot query: a customer's people who want texts.
    __table_args__ = (Index("ix_shop_person_customer", "customer_id", "wants_texts"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("shop_customer.id"))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    mobile: Mapped[str | None] = mapped_column(String(320))
    wants_texts: Mapped[bool] = mapped_column(Boolean, default=False)
    customer: Mapped[Customer] = relationship(back_populates="people")


class Order(ShopBase):
    __tablename__ = "shop_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_no: Mapped[str] = mapped_column(String(40), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("shop_customer.id"))
    contact_person_id: Mapped[int | None] = mapped_column(ForeignKey("shop_person.id"))
    text_updates: Mapped[bool] = mapped_column(Boolean, default=True)
    customer: Mapped[Customer] = relationship()
    contact_person: Mapped[Person | None] = relationship()
    invoices: Mapped[list[Invoice]] = relationship(back_populates="order", order_by="Invoice.id")


class Invoice(ShopBase):
    __tablename__ = "shop_invoice"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("shop_order.id"))
    invoice_no: Mapped[str] = mapped_column(String(40))
    due_date: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    order: Mapped[Order] = relationship(back_populates="invoices")
