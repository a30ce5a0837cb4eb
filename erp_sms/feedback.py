"""Telling the host what happened, in its own process: a text's status moved, a customer
replied, a consent changed (the signals of ``erp_sms.signals``).

A change is noted where it is written (``note``: on the Session whose transaction writes
it; ``send``: by code that committed its own transaction) and sent only once that
transaction has committed — a change rolled back is never told. Each receiver gets plain
values (ids, numbers, statuses, times), never an ORM object; a receiver that raises is
logged and skipped, so the host's code cannot break the worker or the webhook."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, event, insert
from sqlalchemy.orm import Session, SessionTransaction

from . import signals
from .config import get_settings
from .models import HostEvent, host_event_table

log = logging.getLogger(__name__)

STATUS = "message_status_changed"
REPLY = "reply_received"
CONSENT = "consent_changed"
_SIGNALS = {
    STATUS: signals.message_status_changed,
    REPLY: signals.reply_received,
    CONSENT: signals.consent_changed,
}
_PENDING = "erp_sms_feedback"

Told = tuple[str, dict[str, Any]]


def status_changed(
    *,
    message_id: int,
    order_number: str | None,
    contact_key: str | None,
    event: str,
    status: str,
    previous_status: str | None,
    at: dt.datetime,
) -> Told:
    """A text's status moved (``previous_status`` -> ``status``)."""
    return STATUS, {
        "message_id": message_id,
        "order_number": order_number or None,
        "contact_key": contact_key,
        "event": event,
        "status": status,
        "previous_status": previous_status,
        "at": at,
    }


def reply_received(
    *,
    reply_id: int,
    from_number: str,
    contact_keys: list[str],
    order_number: str | None,
    kind: str,
    body: str,
    at: dt.datetime,
) -> Told:
    """A customer texted back (``kind``: reply, stop, start, help, status, paid,
    wrong_number)."""
    return REPLY, {
        "reply_id": reply_id,
        "from_number": from_number,
        "contact_keys": tuple(contact_keys),
        "order_number": order_number,
        "kind": kind,
        "body": body,
        "at": at,
    }


def consent_changed(
    *,
    number: str | None,
    contact_keys: list[str],
    action: str,
    source: str,
    at: dt.datetime,
) -> Told:
    """A number or contacts opted out or in (``action``: opt_out, opt_in)."""
    return CONSENT, {
        "number": number,
        "contact_keys": tuple(contact_keys),
        "action": action,
        "source": source,
        "at": at,
    }


def _listened() -> bool:
    return any(bool(s.receivers) for s in _SIGNALS.values())


def _over_http() -> bool:
    return bool(get_settings().host_webhook_url)


def wanted() -> bool:
    """Whether anyone listens (a receiver here, the host's endpoint): noting costs
    nothing when nobody does."""
    return _listened() or _over_http()


# The kinds as the host's endpoint gets them (Standard Webhooks' "type").
WEBHOOK_TYPES = {
    STATUS: "message.status_changed",
    REPLY: "reply.received",
    CONSENT: "consent.changed",
}


def _stream(kind: str, values: dict[str, Any]) -> str:
    """What the host's deliveries keep in order: a text's statuses, a number's replies."""
    if kind == STATUS:
        return f"message:{values['message_id']}"
    return f"number:{values.get('from_number') or values.get('number') or '-'}"[:64]


def _row(told: Told, now: dt.datetime) -> dict[str, Any]:
    kind, values = told
    return {
        "kind": WEBHOOK_TYPES[kind],
        "stream": _stream(kind, values),
        "message_id": values.get("message_id"),
        "payload": json.dumps(values, default=_json_value, sort_keys=True),
        "created_at": now,
        "attempts": 0,
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="seconds")
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def note(session: Session, told: Told) -> None:
    """Send ``told`` once ``session``'s transaction commits (dropped if it rolls back);
    with a host endpoint, write its outbox row in that same transaction."""
    if _listened():
        session.info.setdefault(_PENDING, []).append(told)
    if _over_http():
        session.connection(bind_arguments={"mapper": HostEvent}).execute(
            insert(host_event_table), [_row(told, dt.datetime.now(dt.UTC))]
        )


def write(conn: Connection, told: list[Told]) -> None:
    """The host endpoint's outbox rows of ``told``, on ``conn`` inside the transaction
    that made the changes (the worker's own transactions: ``collecting``)."""
    if told and _over_http():
        now = dt.datetime.now(dt.UTC)
        conn.execute(insert(host_event_table), [_row(t, now) for t in told])


# Changes noted by code that runs its own transaction (the worker's claims and outcomes):
# collected while it runs, sent by the transaction's owner once it has committed.
_collector: ContextVar[list[Told] | None] = ContextVar("erp_sms_feedback", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[list[Told]]:
    """Collect what the block changes (``collect``); the caller sends the list once its
    transaction has committed, and drops it if the block raised."""
    found: list[Told] = []
    token = _collector.set(found)
    try:
        yield found
    finally:
        _collector.reset(token)


def collect(told: Told) -> None:
    """Note ``told`` for the transaction that ``collecting`` wraps (nothing without one,
    or when nobody listens)."""
    found = _collector.get()
    if found is not None and wanted():
        found.append(told)


def write_collected(conn: Connection) -> None:
    """``write`` what the running ``collecting`` block has collected so far."""
    write(conn, _collector.get() or [])


def send(items: Iterable[Told]) -> None:
    """Send what a committed transaction changed, each to every receiver of its signal;
    a receiver's error is logged, never raised."""
    if not _listened():
        return
    for kind, values in items:
        signal = _SIGNALS[kind]
        for receiver in list(signal.receivers_for(kind)):
            try:
                receiver(kind, **values)
            except Exception:
                log.exception(
                    "erp-sms: a receiver of %s raised (ignored: the change stands): %r",
                    kind,
                    receiver,
                )


def _committed(session: Session) -> None:
    told = session.info.pop(_PENDING, None)
    if told:
        send(told)


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is None:  # the whole transaction, not a SAVEPOINT of it
        session.info.pop(_PENDING, None)


event.listen(Session, "after_commit", _committed)
event.listen(Session, "after_soft_rollback", _rolled_back)
