"""Opt-in and opt-out: the SMSUPDATE attribute changes through the host's lookup, and
every change is recorded as a consent event with its source and time (the consent trail).

Sources: ``cli`` (staff), ``sms_reply`` (STOP/START by text), ``twilio_21610`` (Twilio
refused to send because the recipient had replied STOP), ``web`` (staff pages).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from .errors import InputError
from .models import ConsentEvent
from .recipients import ContactView, RecipientLookup, default_lookup

OPT_IN = "opt_in"
OPT_OUT = "opt_out"


def change(
    session: Session,
    contact_key: str,
    opted_in: bool,
    *,
    source: str,
    detail: str | None = None,
    address: str | None = None,
    lookup: RecipientLookup | None = None,
) -> ContactView:
    """Set the contact's consent and record it; raises ``InputError`` for an unknown
    contact."""
    lookup = lookup or default_lookup()
    if lookup.contact(session, contact_key) is None:
        raise InputError(f"no contact with id {contact_key!r}")
    view = lookup.set_consent(session, contact_key, opted_in)
    session.add(
        ConsentEvent(
            contact_ref=view.key,
            contact_name=view.name,
            address=address or view.address,
            action=OPT_IN if opted_in else OPT_OUT,
            source=source,
            detail=detail,
        )
    )
    session.flush()
    return view


def record_unmatched(
    session: Session, address: str, opted_in: bool, *, source: str, detail: str
) -> None:
    """A consent change for an address that matches no contact (kept, never lost)."""
    session.add(
        ConsentEvent(
            contact_ref=None,
            contact_name=None,
            address=address,
            action=OPT_IN if opted_in else OPT_OUT,
            source=source,
            detail=detail,
        )
    )
