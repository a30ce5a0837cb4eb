"""Factories for the reference ERP schema (built, not persisted: tests add them)."""

from __future__ import annotations

import factory

from erp_sms import erp


class OrganizationFactory(factory.Factory):
    class Meta:
        model = erp.Organization

    name = factory.Sequence(lambda n: f"Acme Fabrication {n}")


class ContactFactory(factory.Factory):
    class Meta:
        model = erp.Contact

    name = factory.Sequence(lambda n: f"Contact {n}")
    email2 = factory.Sequence(lambda n: f"312555{n % 10000:04d}@vtext.com")
    organizations = factory.LazyFunction(list)
    attributes = factory.LazyFunction(lambda: [erp.ContactAttribute(code=erp.SMSUPDATE)])

    class Params:
        opted_out = factory.Trait(attributes=factory.LazyFunction(list))


class SalesOrderFactory(factory.Factory):
    class Meta:
        model = erp.SalesOrder

    number = factory.Sequence(lambda n: f"SO-{104200 + n}")
    organization = factory.SubFactory(OrganizationFactory)
    sms_update = True


class WorkOrderFactory(factory.Factory):
    class Meta:
        model = erp.WorkOrder

    number = factory.Sequence(lambda n: f"WO-{58200 + n}")
    status = "complete"


class ShippingEventFactory(factory.Factory):
    class Meta:
        model = erp.ShippingEvent

    status = "Shipped"
    carrier = "UPS"
    tracking_number = factory.Sequence(lambda n: f"1Z999AA1012345{n % 10000:04d}")
