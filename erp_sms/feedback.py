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
import logging
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from . import signals

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


def wanted() -> bool:
    """Whether anyone listens: noting costs nothing when nobody does."""
    return any(bool(s.receivers) for s in _SIGNALS.values())


def note(session: Session, told: Told) -> None:
    """Send ``told`` once ``session``'s transaction commits (dropped if it rolls back)."""
    if wanted():
        session.info.setdefault(_PENDING, []).append(told)


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


def send(items: Iterable[Told]) -> None:
    """Send what a committed transaction changed, each to every receiver of its signal;
    a receiver's error is logged, never raised."""
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
