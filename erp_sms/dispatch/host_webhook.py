"""What happened, POSTed to the host's endpoint (``ERP_SMS_HOST_WEBHOOK_URL``) by the
worker, signed as the Standard Webhooks specification says (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``, with the maintained ``standardwebhooks``
package): at least once, retried with backoff until a 2xx, in order per stream (a text's
statuses, a number's replies) — deliveries go in the outbox's order, one worker at a time,
and stop at the first failure.

The outbox rows are written in the same transaction as each change (``erp_sms.feedback``).
A host that answers 4xx/5xx, or not at all, for a day never holds texts up: after a failure
nothing is tried again before the backoff has passed, and each request has a timeout."""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
import uuid

from sqlalchemy import and_, func, or_, select, update
from standardwebhooks import Webhook

from ..config import Settings
from ..db import Database, utcnow
from ..models import HostEvent, host_event_table

log = logging.getLogger(__name__)

# Waits after the 1st, 2nd… failure in a row (the schedule the Standard Webhooks
# specification suggests): then every 10 hours, until the host answers 2xx.
BACKOFF = (5, 300, 1800, 7200, 18000, 36000)
MOST = 100  # deliveries a run makes at most
LEASE = dt.timedelta(minutes=2)  # a run's hold on delivering; a dead run's ends then
TIMEOUT = 5.0  # seconds a request may take


def backoff(failures: int) -> dt.timedelta:
    return dt.timedelta(seconds=BACKOFF[min(max(failures, 1), len(BACKOFF)) - 1])


def deliver(db: Database, settings: Settings, *, now: dt.datetime | None = None) -> int:
    """Deliver what is due to the host's endpoint, oldest first; how many were
    delivered. One run at a time (a lease on the oldest undelivered row): two workers
    delivering at once could swap two statuses of one text."""
    url, secret = settings.host_webhook_url, settings.host_webhook_secret
    if not url or not secret:
        return 0

    now = now or utcnow()
    t = host_event_table.c
    token = uuid.uuid4().hex
    with db.engine.begin() as conn:
        head = conn.scalar(select(func.min(t.id)).where(t.delivered_at.is_(None)))
        if head is None:
            return 0
        taken = conn.execute(
            update(host_event_table)
            .where(
                t.id == head,
                t.delivered_at.is_(None),
                or_(t.lease_until.is_(None), t.lease_until < now),
                or_(t.next_attempt_at.is_(None), t.next_attempt_at <= now),
            )
            .values(lease_token=token, lease_until=now + LEASE)
        ).rowcount
    if taken != 1:
        return 0  # another run delivers, or the host's endpoint is in its backoff
    with db.read_session() as s:
        rows = list(
            s.scalars(
                select(HostEvent)
                .where(t.delivered_at.is_(None), t.id >= head)
                .order_by(t.id)
                .limit(MOST)
            )
        )
    signer = Webhook(secret)
    delivered = 0
    try:
        for row in rows:
            error = _post(url, signer, row, utcnow())
            with db.session() as s:
                if error is None:
                    s.execute(
                        update(HostEvent)
                        .where(t.id == row.id)
                        .values(delivered_at=utcnow(), attempts=row.attempts + 1, last_error=None)
                    )
                    delivered += 1
                    continue
                failures = row.attempts + 1
                until = utcnow() + backoff(failures)
                s.execute(
                    update(HostEvent)
                    .where(t.id == row.id)
                    .values(attempts=failures, last_error=error[:2000], next_attempt_at=until)
                )
            log.warning(
                "the host's webhook refused event %s (%s): tried again after %s",
                row.id,
                error,
                until.isoformat(timespec="seconds"),
            )
            break  # in order: nothing after it goes before it
    finally:
        with db.session() as s:
            s.execute(
                update(HostEvent)
                .where(and_(t.id == head, t.lease_token == token))
                .values(lease_token=None, lease_until=None)
            )
    if delivered:
        log.info("delivered %d event(s) to the host's webhook", delivered)
    return delivered


def body(row: HostEvent) -> bytes:
    """The JSON a delivery carries: ``type``, ``timestamp`` and the event's ``data``."""
    data = json.loads(row.payload)
    return json.dumps(
        {
            "type": row.kind,
            "timestamp": row.created_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "data": data,
        },
        sort_keys=True,
    ).encode()


def _post(url: str, signer: Webhook, row: HostEvent, at: dt.datetime) -> str | None:
    """POST one event; None when the host answered 2xx, else what went wrong."""
    payload = body(row)
    msg_id = f"msg_{row.id}"  # the same on every retry: the host drops repeats by it
    signature = signer.sign(msg_id, at, payload)
    # The configured URL, checked to be http(s) when the settings were read.
    request = urllib.request.Request(  # noqa: S310
        url,
        data=payload,
        method="POST",
        headers={
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature,
            "user-agent": "erp-sms",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
            code = answer.status
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return None if 200 <= code < 300 else f"HTTP {code}"
