"""Twilio prices arrive after the send: the create response and the StatusCallback carry
none. ``reconcile`` fetches them for recent Twilio messages that have no price yet, in
bounded runs (``erp-sms prices``, e.g. hourly from cron)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import requests
from sqlalchemy import select
from twilio.base.exceptions import TwilioException

from ... import outbox, rule_records
from ...config import Settings
from ...db import Database, utcnow
from ...errors import ErpSmsError
from ...models import Channel, Message, Status
from .channel import TwilioChannel

log = logging.getLogger(__name__)

# Twilio prices a message once it has left; a queued one has nothing to fetch yet.
_PRICED = (Status.SENT, Status.DELIVERED, Status.UNDELIVERED, Status.READ, Status.FAILED)


@dataclass(frozen=True)
class PriceRun:
    checked: int
    priced: int
    errors: int

    def line(self) -> str:
        return f"prices: {self.priced} of {self.checked} message(s) priced, {self.errors} error(s)"


def reconcile(db: Database, settings: Settings, *, days: int = 7, limit: int = 500) -> PriceRun:
    """Fetch Twilio's price of recently sent texts, each from the account it was sent
    with (TWILIO, or a site's record)."""
    with db.read_session() as s:
        since = utcnow() - dt.timedelta(days=days)
        q = (
            select(Message.id, Message.provider_id, Message.sender)
            .where(
                Message.channel == Channel.TWILIO,
                Message.provider_id.is_not(None),
                Message.price.is_(None),
                Message.status.in_(_PRICED),
                Message.sent_at >= since,
            )
            .order_by(Message.id)
            .limit(limit)
        )
        todo = [(r.id, r.provider_id, r.sender or rule_records.TWILIO) for r in s.execute(q)]
        rules = {name: rule_records.twilio_rule(s, name) for name in {t[2] for t in todo}}
    if not todo:
        return PriceRun(0, 0, 0)
    clients = {}
    for name, rule in rules.items():
        if rule is None or not rule.sid or not rule.auth_code:
            raise ErpSmsError(f"{name} is not set up: prices cannot be fetched")
        clients[name] = TwilioChannel(rule, settings).client
    priced = errors = 0
    for message_id, sid, sender in todo:
        try:
            fetched = clients[sender].messages(sid).fetch()
        except (TwilioException, requests.RequestException) as exc:
            errors += 1
            log.warning("price of %s not fetched: %s", sid, exc)
            continue
        if fetched.price in (None, ""):
            continue
        if outbox.set_price(db, message_id, str(fetched.price), fetched.price_unit):
            priced += 1
    return PriceRun(len(todo), priced, errors)
