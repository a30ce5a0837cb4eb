"""Small helpers shared by tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from erp_sms import rule_records
from erp_sms.models import Message

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
