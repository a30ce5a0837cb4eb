"""Small helpers shared by tests."""

from __future__ import annotations

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


def messages(session: Session) -> list[Message]:
    session.commit()  # end the read snapshot: see what the dispatcher committed since
    session.expire_all()
    return list(session.scalars(select(Message).order_by(Message.id)))


def by_contact(session: Session) -> dict[str | None, Message]:
    return {m.contact_name: m for m in messages(session)}
