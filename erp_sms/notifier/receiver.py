"""An event's receiver: ``notify`` plans the texts and queues them in the host's session;
``texts_queued`` tells inline delivery; ``warm_up`` pays the first event's costs at
start-up."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import phonenumbers
from blinker import Signal
from sqlalchemy import Engine
from sqlalchemy.orm import Session, configure_mappers

from .. import direct, erased, events, templates
from ..addresses import classify
from ..config import get_settings
from ..db import one_line
from ..errors import ErpSmsError
from ..events import EventType, all_events
from ..models import Message, Status
from ..outbox import (
    host_insert,
    insert_new,
)
from ..recipients import (
    _opted_in_contacts,
    _organization_and_contacts,
)
from . import fold
from .plan import Draft, _apply_window, _new_message, _plan, _row
from .reads import PlanInfo, _settings_statement
from .transaction import _begin_sqlite_transaction, _our_part, guarded

log = logging.getLogger(__name__)


_MOBILE = phonenumbers.PhoneNumberType.MOBILE
_E164 = phonenumbers.PhoneNumberFormat.E164

# Sent (with ``settings=``) when the host path queued texts in a session: inline delivery
# (``erp_sms.inline``) listens, so the host path names no dispatcher.
texts_queued = Signal()


def connect(event: EventType) -> None:
    """Connect ``event``'s receiver (strongly: blinker holds receivers weakly by default
    and a closure would vanish)."""

    def receiver(sender: Any, **kwargs: Any) -> list[Message]:
        return notify(event, sender, **kwargs)

    event.signal.connect(receiver, weak=False)


def notify(
    event: EventType, order: Any, *, session: Session | None = None, **kwargs: Any
) -> list[Message]:
    """Queue the event's texts in ``session``; never raises. Returns the new rows (as
    unattached objects: the rows themselves are written with one bulk INSERT)."""
    return guarded(event, order, session, kwargs, _notify)


def _notify(
    event: EventType,
    order: Any,
    session: Session,
    kwargs: Mapping[str, Any],
    *,
    draft: Draft | None = None,
) -> list[Message]:
    if session.new or session.dirty or session.deleted:
        session.flush()  # the host's own pending rows, outside our savepoint: ids for keys
    _begin_sqlite_transaction(session)
    send_at = kwargs.get("send_at")
    with _our_part(session):
        info = PlanInfo(scheduled=send_at is not None)
        new = _plan(event, order, session, kwargs, info, draft=draft)
        if send_at is not None:
            _schedule(new, send_at)
        _apply_window(event, new, info)
        fold.apply(session, event, new, info)  # into the order's text still waiting
        # One statement, no read first (on SQLite the ids come back: RETURNING is what
        # makes SQLAlchemy send the rows as one statement); a row whose key is already
        # in the log (the event fired again, or concurrently) is left alone.
        insert_new(session, [_row(m) for m in new])
    if new:
        log.info(
            "erp-sms: %s: %d message(s) for order %s (%s)",
            event.name,
            len(new),
            new[0].order_number,
            ", ".join(f"{m.status}" for m in new),
            extra={"event": event.name, "count": len(new)},
        )
    if any(m.status == Status.QUEUED for m in new):
        texts_queued.send(session, settings=get_settings())
    return new


def _schedule(new: list[Message], send_at: Any) -> None:
    """``send_at=``: queued now, delivered not before then (the worker claims only what
    is due). A time that is not timezone-aware is the host's mistake: the texts fail with
    the reason rather than go out at a guessed time."""
    if not isinstance(send_at, dt.datetime) or send_at.tzinfo is None:
        reason = (
            f"send_at={send_at!r} is not a timezone-aware datetime: pass e.g. "
            "datetime(2026, 12, 1, 9, 0, tzinfo=ZoneInfo('America/Chicago'))"
        )
        for m in new:
            if m.status == Status.QUEUED:
                m.status, m.reason, m.next_attempt_at = Status.FAILED, reason, None
        return
    when = send_at.astimezone(dt.UTC)
    for m in new:
        if m.status == Status.QUEUED and m.next_attempt_at is not None:
            m.next_attempt_at = max(m.next_attempt_at, when)


def warm_up(engine: Engine) -> None:
    """Do once, at the host's start-up, what the first event in a process would otherwise
    pay for (SQLAlchemy's mapper configuration and statement compilation for this
    engine's dialect, the packaged templates, the phone-number metadata): the first event
    then costs what the others do. Optional, never raises; writes nothing."""

    try:
        configure_mappers()
        for ev in all_events():
            default = templates.default_source(ev.template)
            if default is not None:
                with contextlib.suppress(ErpSmsError):
                    templates.compile_template(default.source)
        region = get_settings().default_region
        example = phonenumbers.example_number_for_type(region, _MOBILE)  # any region's
        if example is not None:
            classify(phonenumbers.format_number(example, _E164), region)
        with engine.connect() as conn:
            # Each statement both ways: SQLAlchemy's compiled cache (taken when a host
            # listens to statement events) and ``direct``'s compiled form (otherwise).
            def read(stmt: Any, params: dict[str, Any]) -> None:
                conn.execute(stmt, params).all()
                direct.rows(conn, stmt, params)

            for ev in all_events():
                for slots in (1, 2, 4, 8):
                    numbers = {f"number_{i}": "" for i in range(slots)}
                    params = numbers | {"org_ref": "", "program": ev.program}
                    read(_settings_statement(ev.template, slots), params)
            erased.key(conn)  # read once per process and database
            read(_opted_in_contacts(engine.dialect.name), {"org_id": -1})
            read(_organization_and_contacts(engine.dialect.name), {"org_id": -1})
            # The INSERT is compiled by running it in the transaction rolled back.
            base = {"event": "warm-up", "template": "", "order_ref": "", "order_number": ""}
            row = _row(_new_message(base, "erp-sms warm-up", Status.SKIPPED, None))
            host_insert(conn, [row], direct=False)
            host_insert(conn, [row], direct=True)
            conn.rollback()
    except Exception as exc:  # a warm-up that cannot finish costs the first event only
        log.warning("erp-sms: warm-up incomplete (%s); the first event pays for it", one_line(exc))


events.on_register(connect)  # every event registered for signals gets its receiver
