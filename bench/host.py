"""Host-path cost: what firing an order event adds to the host's transaction, for an
order with 5 opted-in contacts (signal -> rows in the session, no network).

Baseline measured in the same run: the host's own change (one shipping event row and a
flush) — so the ratio reads "erp-sms costs N times what the host does anyway"."""

from __future__ import annotations

from sqlalchemy.orm import Session

import erp_sms
from erp_sms import erp, signals

from .common import fresh, median_ms, postgres_url, sqlite_url, timed

CONTACTS = 5
REPEAT = 200


def _setup(session: Session) -> list[erp.SalesOrder]:
    orders = []
    for i in range(REPEAT):
        org = erp.Organization(name=f"Org {i}")
        for j in range(CONTACTS):
            erp.Contact(
                name=f"C{i}-{j}",
                email2=f"312555{j:04d}@vtext.com",
                organizations=[org],
                attributes=[erp.ContactAttribute(code=erp.SMSUPDATE)],
            )
        orders.append(erp.SalesOrder(f"SO-{i}", org, sms_update=True))
    session.add_all(orders)
    session.commit()
    return orders


def run(url: str) -> tuple[float, float]:
    engine = fresh(url)
    with Session(engine) as s:
        orders = _setup(s)
        it_host = iter(orders)
        it_sms = iter(orders)

        def host_only() -> None:
            o = next(it_host)
            s.add(
                erp.ShippingEvent(
                    sales_order=o, status="Shipped", carrier="UPS", tracking_number="1Z"
                )
            )
            s.flush()

        def with_sms() -> None:
            o = next(it_sms)
            ev = o.shipping_events[0]
            signals.shipment_shipped.send(o, session=s, shipping_event=ev)

        base = timed(host_only, REPEAT)
        s.commit()
        sms = timed(with_sms, REPEAT)
        s.commit()
        n = sum(1 for _ in s.execute(erp_sms.models.Message.__table__.select()))
        assert n == REPEAT * CONTACTS, n
    engine.dispose()
    return median_ms(base), median_ms(sms)


def main() -> None:
    print(f"host path: signal -> {CONTACTS} outbox rows in the host's session (median of {REPEAT})")
    targets = [("sqlite", sqlite_url())]
    pg = postgres_url()
    if pg:
        targets.append(("postgresql", pg))
    else:
        print("  postgresql: not reachable on loopback, skipped")
    for name, url in targets:
        base, sms = run(url)
        print(
            f"  {name:<10} host's own change {base:6.2f} ms | erp-sms signal {sms:6.2f} ms "
            f"| ratio {sms / base:5.1f}x | per contact {sms / CONTACTS:5.2f} ms"
        )
