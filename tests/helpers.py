"""Small helpers shared by tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from erp_sms import erp, rule_records, signals, testing
from erp_sms.db import Database
from erp_sms.models import Message
from erp_sms.sequences import register_sequence

from .factories import ContactFactory, OrganizationFactory, SalesOrderFactory

SID = "AC" + "0123456789abcdef" * 2
AUTH = "fedcba9876543210" * 2
TWILIO_NUMBER = "+13125550100"


def activate_twilio(
    session: Session, *, auth: str = AUTH, sid: str = SID, active: bool = True
) -> None:
    rule_records.set_fields(
        session,
        "TWILIO",
        {"SID": sid, "AuthCode": auth, "PhoneNumber": TWILIO_NUMBER, "UseCode": "SMSUPDATE"},
        active=active,
        by="test",
    )


def activate_site(
    session: Session, number: str, *, name: str = "TWILIO:WEST", sid: str = SID, auth: str = AUTH
) -> None:
    """A site's own TWILIO record, active (a number per site)."""
    rule_records.set_fields(
        session, name, {"SID": sid, "AuthCode": auth, "PhoneNumber": number}, active=True, by="test"
    )


def messages(session: Session) -> list[Message]:
    session.commit()  # end the read snapshot: see what the dispatcher committed since
    session.expire_all()
    return list(session.scalars(select(Message).order_by(Message.id)))


def by_contact(session: Session) -> dict[str | None, Message]:
    return {m.contact_name: m for m in messages(session)}


def start_serve(env: dict[str, str]):
    """`erp-sms -v serve` as a process on a free loopback port; returns (process, base
    URL) once it says it is listening — read from its log, no polling."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    public = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "erp_sms.cli", "-v", "serve", "--port", str(port)],
        env={**env, "ERP_SMS_PUBLIC_URL": public},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # blocks until the server logs; ends if it exits
        seen.append(line)
        if "listening on" in line:
            return proc, public
    proc.wait()
    raise AssertionError("erp-sms serve exited:\n" + "".join(seen))


class LogWatch:
    """``seen`` is set once ``logger`` emits a record containing ``text`` — a test waits
    on it instead of polling the log."""

    def __init__(self, logger: str, text: str) -> None:
        import logging
        import threading

        self.text = text
        self.seen = threading.Event()
        watch = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if watch.text in record.getMessage():
                    watch.seen.set()

        self.handler = Handler(logging.DEBUG)
        self.logger = logging.getLogger(logger)
        self.logger.addHandler(self.handler)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


def worker_env(
    tmp_path, db_url: str, twilio_url: str, smtp_port: int, dispatch: dict[str, float]
) -> dict[str, str]:
    """The environment of an `erp-sms` process pointed at the loopback servers, with
    these ``[dispatch]`` settings in its config file (the rest of ERP_SMS_* cleared)."""
    import os

    config = tmp_path / "erp_sms.toml"
    config.write_text("[dispatch]\n" + "".join(f"{k} = {v}\n" for k, v in dispatch.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERP_SMS_")}
    env.update(
        ERP_SMS_DATABASE_URL=db_url,
        ERP_SMS_TWILIO_API_URL=twilio_url,
        ERP_SMS_SMTP_HOST="127.0.0.1",
        ERP_SMS_SMTP_PORT=str(smtp_port),
        ERP_SMS_SMTP_FROM="orders@example.com",
        ERP_SMS_CONFIG=str(config),
    )
    return env


def erp_sms_command(*args: str) -> list[str]:
    """`erp-sms ARGS` as a command line for subprocess."""
    import sys

    return [sys.executable, "-m", "erp_sms.cli", *args]


def expire_leases(engine) -> int:
    """Dead workers' leases run out — without waiting for the clock: the rows become what
    the next worker sees once they have. A text in the middle of its handover is locked
    (no worker could take it) and left as it is. Returns how many were expired."""
    from sqlalchemy import select, update

    from erp_sms.db import utcnow
    from erp_sms.models import Status

    m = Message.__table__.c
    with engine.begin() as conn:
        free = conn.execute(
            select(m.id).where(m.status == Status.SENDING).with_for_update(skip_locked=True)
        ).scalars()
        return conn.execute(
            update(Message.__table__)
            .where(m.id.in_(list(free)), m.status == Status.SENDING)
            .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        ).rowcount


def three_contact_order(engine: Any) -> int:
    """Acme with three opted-in contacts (gateway addresses) and order SO-9 listing the
    first: the id of the order."""
    from .factories import ContactFactory, OrganizationFactory, SalesOrderFactory

    with Session(engine, expire_on_commit=False) as s:
        org = OrganizationFactory(name="Acme")
        people = [
            ContactFactory(name=f"C{i}", email2=f"312555010{i}@vtext.com", organizations=[org])
            for i in range(3)
        ]
        order = SalesOrderFactory(number="SO-9", organization=org, contact=people[0])
        s.add_all([org, order, *people])
        s.commit()
        return int(order.id)


class Clock:
    """The one fake clock of the tests: UTC now as the test sets it — a moment (aware, or
    an ISO string read as UTC) or, by default, the real now when made — and moves it."""

    def __init__(self, when: dt.datetime | str | None = None) -> None:
        if isinstance(when, str):
            when = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)
        self.now = (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def make_orders(
    session: Session, n: int, *, gateway: bool = True, per_order: int = 1
) -> list[erp.SalesOrder]:
    """``n`` orders, each with ``per_order`` opted-in contacts (gateway or plain numbers)."""
    orders = []
    for i in range(n):
        org = OrganizationFactory(name=f"Org {i}")
        contacts = []
        for j in range(per_order):
            number = f"312555{(i * per_order + j) % 10000:04d}"
            addr = f"{number}@vtext.com" if gateway else f"+1{number}"
            contacts.append(ContactFactory(name=f"C{i}-{j}", email2=addr, organizations=[org]))
        order = SalesOrderFactory(number=f"SO-{i:05d}", organization=org, contact=contacts[0])
        session.add_all([order, *contacts])
        orders.append(order)
    session.flush()
    for order in orders:
        signals.sent_to_production.send(order, session=session)
    session.commit()
    return orders


def queue_texts(
    db: Database, n: int, *, gateway: bool = True, prefix: str = "k", start: int = 0
) -> None:
    """``n`` queued texts, written as the notifier would, straight into the outbox."""
    testing.queue_texts(db.engine, n, gateway=gateway, prefix=prefix, start=start)


PUBLIC = "https://erp.example.com/sms"


def post(
    client,
    endpoint: str,
    params: dict[str, str],
    *,
    token: str = AUTH,
    url: str | None = None,
    signature: str | None = None,
    base: str = "http://10.0.0.5:8080",
):
    """POST as Twilio would: signed over the public URL, arriving at an internal address."""
    signed_over = url or f"{PUBLIC}/twilio/{endpoint}"
    sig = (
        signature
        if signature is not None
        else RequestValidator(token).compute_signature(signed_over, params)
    )
    headers = {"X-Twilio-Signature": sig} if sig != "" else {}
    return client.post(f"/twilio/{endpoint}", data=params, headers=headers, base_url=base)


def callback(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": SID,
        "From": TWILIO_NUMBER,
        "To": "+13125550101",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def inbound(sender: str, body: str, sid: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": SID,
        "From": sender,
        "To": TWILIO_NUMBER,
        "Body": body,
        "NumMedia": "0",
    }


# The tests' reminder sequence (registered once, when the tests are imported).
@dataclass
class Invoice:
    id: int
    number: str
    due_date: dt.date
    amount: str = "1,250.00"


DUNNING = register_sequence(
    "test_dunning",
    subject="invoice",
    steps=[(-3, "SMS TEST DUE SOON"), (0, "SMS TEST DUE"), (7, "SMS TEST OVERDUE")],
    default_templates={
        "SMS TEST DUE SOON": "Invoice {{ invoice.number }} is due on {{ invoice.due_date }}.",
        "SMS TEST DUE": "Invoice {{ invoice.number }} is due today.",
        "SMS TEST OVERDUE": "Invoice {{ invoice.number }} is {{ sequence.days }} days late.",
    },
)


@dataclass
class Scene:
    """What ``scene`` made: the organization, the order, and the contacts by key (also
    ``scene["order"]``, ``scene["org"]``, ``scene["ann"]``)."""

    org: erp.Organization
    order: erp.SalesOrder
    contacts: dict[str, erp.Contact]

    def __getitem__(self, key: str) -> Any:
        if key == "order":
            return self.order
        if key == "org":
            return self.org
        return self.contacts[key]


def scene(
    session: Session,
    contacts: dict[str, tuple[str, str]],
    *,
    org: str = "Acme",
    order: str = "SO-1",
    opted_out: tuple[str, ...] = (),
    fire: bool = False,
) -> Scene:
    """The one scene builder of the tests: an organization with ``contacts`` (key ->
    (name, Email 2); all opted in but ``opted_out``), an order listing the first, all
    committed; with ``fire``, the order sent to production and committed too."""
    organization = OrganizationFactory(name=org)
    people = {
        key: ContactFactory(
            name=name, email2=email2, organizations=[organization], opted_out=key in opted_out
        )
        for key, (name, email2) in contacts.items()
    }
    made = SalesOrderFactory(
        number=order, organization=organization, contact=next(iter(people.values()), None)
    )
    session.add_all([organization, *people.values(), made])
    session.commit()
    if fire:
        signals.sent_to_production.send(made, session=session)
        session.commit()
    return Scene(organization, made, people)
