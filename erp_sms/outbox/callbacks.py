"""Provider status reports attached to their rows — also those that came before the
send's outcome was recorded (kept, then adopted) — and prices fetched later."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from .. import feedback
from ..db import Database, utcnow
from ..models import (
    Message,
    message_event_table,
    message_table,
)
from ..statuses import advance
from .values import _begun, _json, told_of

log = logging.getLogger(__name__)


def apply_callback(
    session: Session,
    provider_id: str,
    *,
    status: str | None,
    provider_status: str,
    error_code: int | None,
    reason: str | None,
    price: tuple[str, str | None] | None,
    raw: dict[str, str],
) -> bool:
    """A provider's status report: on the message's timeline, and its status moved
    forward when the report is newer (never back). The same report twice changes nothing.

    A report can beat the send's outcome (the worker is still writing it): it is kept
    unattached and False is returned — the caller then calls ``adopt_callbacks`` after
    its commit, as the outcome's writer does after its own, so whichever commits last
    links it (CONTRACT.md: a status callback is never lost)."""
    raw_json = _json(raw)
    detail = f"Twilio: {provider_status}" + (f" — {reason}" if reason else "")
    # Core statements built once (module level), not the ORM: a callback is the busiest
    # request erp-sms answers (one per status of every text), and loading the message as
    # objects, then building the statements each time, was most of its time (issue 27).
    # Three statements: lock, record unless already there, move.
    conn = session.connection()
    found = conn.execute(_LOCK, {"provider_id": provider_id}).first()
    if found is None:
        kept = _record_once(conn, None, provider_id, status, detail + _EARLY, raw_json)
        if kept:
            log.info(
                "status %s for a message not recorded yet (%s): kept",
                provider_status,
                provider_id,
            )
        return False  # kept (or a retry of a report kept before) for its message
    message_id, current = found.id, found.status
    moved = status is not None and advance(current, status)
    if not moved:
        detail += f" (kept {current})"
    if not _record_once(conn, message_id, provider_id, status, detail, raw_json):
        return True  # the same callback again (Twilio retries): nothing to do
    if moved:
        conn.execute(
            _MOVE,
            {
                "message_id": message_id,
                "status": status,
                "updated_at": utcnow(),
                # Each kept as it was unless the report carries one (COALESCE).
                "error_code": error_code or None,
                "reason": reason or None,
                "price": price[0] if price else None,
                "price_unit": price[1] if price else None,
            },
        )
        if feedback.wanted():
            feedback.note(session, told_of(found, str(status), current))
    return True


_m, _ev = message_table.c, message_event_table.c
_LOCK = (
    select(_m.id, _m.status, _m.order_number, _m.contact_ref, _m.event)
    .where(_m.provider_id == bindparam("provider_id"))
    .with_for_update()
)
_MOVE = (
    update(message_table)
    .where(_m.id == bindparam("message_id"))
    .values(
        status=bindparam("status"),
        updated_at=bindparam("updated_at"),
        error_code=func.coalesce(bindparam("error_code", type_=_m.error_code.type), _m.error_code),
        reason=func.coalesce(bindparam("reason", type_=_m.reason.type), _m.reason),
        price=func.coalesce(bindparam("price", type_=_m.price.type), _m.price),
        price_unit=func.coalesce(bindparam("price_unit", type_=_m.price_unit.type), _m.price_unit),
    )
)
_EVENT_COLUMNS = ("message_id", "provider_id", "kind", "status", "source", "detail", "raw", "at")


def _record_statement(attached: bool) -> Any:
    """INSERT … SELECT … WHERE NOT EXISTS the same report (on its message, or kept for its
    provider id when ``attached`` is False)."""
    same = [_ev.kind == "callback", _ev.raw == bindparam("raw")]
    if attached:
        same.append(_ev.message_id == bindparam("message_id"))
    else:
        same += [_ev.message_id.is_(None), _ev.provider_id == bindparam("provider_id")]
    row = select(*(bindparam(k, type_=_ev[k].type).label(k) for k in _EVENT_COLUMNS)).where(
        ~exists().where(*same)
    )
    return insert(message_event_table).from_select(list(_EVENT_COLUMNS), row)


_RECORD = {True: _record_statement(True), False: _record_statement(False)}


def _record_once(
    conn: Connection,
    message_id: int | None,
    provider_id: str,
    status: str | None,
    detail: str,
    raw_json: str | None,
) -> bool:
    """A status report on its message's timeline (``message_id`` None: kept for later),
    unless the same report is there already (Twilio retries); whether it went in. One
    statement: INSERT … SELECT … WHERE NOT EXISTS (the message's row is locked, so two
    copies of one report cannot both pass)."""
    params = {
        "message_id": message_id,
        "provider_id": provider_id,
        "kind": "callback",
        "status": status,
        "source": "webhook",
        "detail": detail,
        "raw": raw_json,
        "at": utcnow(),
    }
    stmt = _RECORD[message_id is not None]
    if conn.dialect.insert_returning:
        # What went in, as the database says it (psycopg gives no rowcount for an
        # INSERT … SELECT: -1).
        return conn.execute(stmt.returning(_ev.id), params).first() is not None
    return bool(conn.execute(stmt, params).rowcount == 1)


_EARLY = " (came before the send's outcome was recorded)"


def adopt_callbacks(db: Database | Connection, provider_ids: Iterable[str] | None) -> int:
    """Attach the status reports kept for these provider ids (None: any kept in the last
    day) to their messages, now recorded, and move each message forward; how many were
    attached. Safe to run twice at once: the message row is locked and a report is
    attached only while it is still unattached."""
    tx = db.engine.begin() if isinstance(db, Database) else _begun(db)
    with feedback.collecting() as told, tx as conn:
        adopted = _adopt(conn, None if provider_ids is None else sorted(set(provider_ids)))
    feedback.send(told)
    return adopted


def _adopt(conn: Connection, provider_ids: list[str] | None) -> int:
    ev = message_event_table.c
    m = message_table.c
    q = select(ev.id, ev.status, ev.provider_id, ev.detail, ev.raw).where(
        ev.message_id.is_(None), ev.kind == "callback"
    )
    if provider_ids is not None:
        if not provider_ids:
            return 0
        q = q.where(ev.provider_id.in_(provider_ids))
    else:
        q = q.where(ev.at >= utcnow() - dt.timedelta(days=1))
    orphans = conn.execute(q.order_by(ev.id)).all()
    if not orphans:
        return 0
    targets = conn.execute(
        select(m.id, m.status, m.provider_id, m.order_number, m.contact_ref, m.event)
        .where(m.provider_id.in_(sorted({o.provider_id for o in orphans})))
        .order_by(m.id)
        .with_for_update()
    ).all()
    adopted = 0
    for t in targets:
        mine = [o for o in orphans if o.provider_id == t.provider_id]
        res = conn.execute(
            update(message_event_table)
            .where(ev.id.in_([o.id for o in mine]), ev.message_id.is_(None))
            .values(message_id=t.id)
        )
        if res.rowcount != len(mine):
            continue  # another writer attached them meanwhile
        adopted += len(mine)
        current, values = t.status, {}
        for o in mine:
            if o.status and advance(current, o.status):
                current = o.status
                values = _reported(o.detail, o.raw)
        if current != t.status:
            conn.execute(update(message_table).where(m.id == t.id).values(status=current, **values))
            feedback.collect(told_of(t, current, t.status))
    return adopted


def _reported(detail: str | None, raw: str | None) -> dict[str, Any]:
    """The error code and reason a kept report carries, for its message."""
    values: dict[str, Any] = {}
    try:
        code = str(json.loads(raw or "{}").get("ErrorCode") or "")
    except (ValueError, AttributeError):
        code = ""
    if code.isascii() and code.isdecimal() and int(code) < 2**31:
        values["error_code"] = int(code)
    reason = (detail or "").removesuffix(_EARLY).partition(" — ")[2]
    if reason:
        values["reason"] = reason
    return values


def set_price(db: Database, message_id: int, price: str, unit: str | None) -> bool:
    """The provider's price, fetched after sending; False when it was already known."""
    with db.session() as s:
        msg = s.get(Message, message_id)
        if msg is None or msg.price is not None:
            return False
        msg.price, msg.price_unit = price, unit
        return True
