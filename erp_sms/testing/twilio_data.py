"""What the loopback Twilio keeps: a stored message (with Twilio's JSON for it) and a
programmed fault."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any

API = "/2010-04-01/Accounts/"


@dataclass
class Fault:
    """One programmed answer: an error (HTTP status + Twilio code) and/or a delay."""

    status: int = 400
    code: int | None = None
    message: str = "error"
    delay: float = 0.0
    to: str | None = None  # only for this recipient
    rfc9457: bool = False  # answer in the newer problem-details format
    hold: threading.Event | None = None  # wait for it before answering (no sleeping)
    body: bytes | None = None  # answer these bytes (text/html), not Twilio's JSON
    retry_after: int | None = None  # a Retry-After header (seconds), as on Twilio's 429s


@dataclass
class StoredMessage:
    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    status: str
    date_created: dt.datetime
    date_sent: dt.datetime | None  # None while queued, as Twilio leaves it
    status_callback: str | None
    num_segments: int
    price: str | None = None  # Twilio fills it in after sending
    validity_period: int | None = None  # seconds Twilio keeps it queued (ValidityPeriod)
    arrived: float = field(default_factory=time.monotonic)  # when the create came in

    def json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "num_segments": str(self.num_segments),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": self.price,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": format_datetime(self.date_created, usegmt=True),
            "date_updated": format_datetime(self.date_created, usegmt=True),
            "date_sent": format_datetime(self.date_sent, usegmt=True) if self.date_sent else None,
            "messaging_service_sid": None,
            "uri": f"{API}{self.account_sid}/Messages/{self.sid}.json",
            "subresource_uris": {},
        }
