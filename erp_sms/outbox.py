"""The outbox, which is also the email log: every statement that creates, claims or
updates message rows lives here.

Claims follow the procrastinate model: one short transaction selects due rows
(``FOR UPDATE SKIP LOCKED`` where the database has it; SQLite renders no FOR UPDATE) and
moves them to ``sending`` in one UPDATE that takes only rows still due and stamps them
with a token: the rows that carry the token are the claim. The send happens outside any
transaction; a second short transaction records the outcome, again conditional on still
holding the claim. A claim carries a
lease: a row left in ``sending`` by a dead worker is claimed again after it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import random
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from . import direct as _direct
from .db import Database, database_now, is_lock_conflict, one_line, utcnow
from .errors import InputError
from .models import (
    PLANNED,
    Message,
    MessageEvent,
    Rule,
    Status,
    message_event_table,
    message_table,
    opt_out_table,
    sequence_run_table,
)
from .statuses import advance

log = logging.getLogger(__name__)


def _json(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str)


# -- ORM side (the host's session, staff commands) -------------------------------------


def add_event(
    session: Session,
    message: Message,
    *,
    kind: str,
    source: str,
    status: str | None = None,
    detail: str | None = None,
    raw: Any = None,
) -> MessageEvent:
    ev = MessageEvent(
        kind=kind,
        status=status,
        source=source,
        detail=detail,
        raw=_json(raw),
        provider_id=message.provider_id,
        at=utcnow(),
    )
    message.history.append(ev)
    return ev


def set_status(
    session: Session,
    message: Message,
    status: str,
    *,
    source: str,
    reason: str | None = None,
    raw: Any = None,
) -> None:
    """Change a message's status and append the change to its timeline."""
    message.status = status
    if reason is not None:
        message.reason = reason
    if status == Status.QUEUED:
        message.next_attempt_at = message.next_attempt_at or utcnow()
    add_event(session, message, kind="status", status=status, source=source, detail=reason, raw=raw)


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
    msg = session.scalar(
        select(Message).where(Message.provider_id == provider_id).with_for_update()
    )
    if msg is None:
        ev = message_event_table.c
        again = session.scalar(
            select(ev.id).where(
                ev.message_id.is_(None), ev.provider_id == provider_id, ev.raw == raw_json
            )
        )
        if again is not None:
            return False  # Twilio retried a report still waiting for its message
        log.info(
            "status %s for a message not recorded yet (%s): kept", provider_status, provider_id
        )
        session.add(
            MessageEvent(
                message_id=None,
                provider_id=provider_id,
                kind="callback",
                status=status,
                source="webhook",
                detail=detail + _EARLY,
                raw=raw_json,
                at=utcnow(),
            )
        )
        return False
    if any(h.kind == "callback" and h.raw == raw_json for h in msg.history):
        return True  # the same callback again (Twilio retries): nothing to do
    moved = status is not None and advance(msg.status, status)
    if not moved:
        detail += f" (kept {msg.status})"
    add_event(
        session, msg, kind="callback", source="webhook", status=status, detail=detail, raw=raw
    )
    if moved:
        assert status is not None
        msg.status = status
        if error_code:
            msg.error_code = error_code
        if reason:
            msg.reason = reason
        if price is not None:
            msg.price, msg.price_unit = price[0], price[1] or msg.price_unit
    return True


_EARLY = " (came before the send's outcome was recorded)"


def adopt_callbacks(db: Database | Connection, provider_ids: Iterable[str] | None) -> int:
    """Attach the status reports kept for these provider ids (None: any kept in the last
    day) to their messages, now recorded, and move each message forward; how many were
    attached. Safe to run twice at once: the message row is locked and a report is
    attached only while it is still unattached."""
    tx = db.engine.begin() if isinstance(db, Database) else _begun(db)
    with tx as conn:
        return _adopt(conn, None if provider_ids is None else sorted(set(provider_ids)))


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
        select(m.id, m.status, m.provider_id)
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


def insert_new(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert message rows, skipping any whose idempotency key is already in the log —
    one statement, no read first, no IntegrityError: PostgreSQL and SQLite ``ON CONFLICT
    DO NOTHING``, MariaDB ``ON DUPLICATE KEY UPDATE`` with a no-op (it takes the
    exclusive lock at once, so concurrent firings of one event wait in line instead of
    deadlocking on a shared-to-exclusive upgrade). Rows go in key order for the same
    reason."""
    if not rows:
        return
    ordered = sorted(rows, key=lambda r: str(r["idempotency_key"]))
    conn = session.connection(bind_arguments={"mapper": Message})
    name = conn.dialect.name
    stmt = _insert_or_ignore(name)
    if stmt is None:  # no upsert syntax known here: read, then insert what is missing
        have = existing_keys(session, [str(r["idempotency_key"]) for r in ordered])
        ordered = [r for r in ordered if r["idempotency_key"] not in have]
        if not ordered:
            return
        stmt = insert(message_table)
    one = _one_statement(conn, stmt, len(ordered), len(ordered[0]))
    if one is None:
        with session.begin_nested():
            # asked again: the SAVEPOINT is emitted when the nested transaction's
            # connection is first asked for, not by begin_nested() itself
            session.connection(bind_arguments={"mapper": Message}).execute(stmt, ordered)
        return
    _direct.insert(conn, one, ordered)  # SQLAlchemy's execute where it must (SQLite)


def _one_statement(conn: Connection, stmt: Any, rows: int, columns: int) -> Any | None:
    """The statement that writes ``rows`` rows as one statement, or None (then they go
    inside a SAVEPOINT of their own).

    Only SQLite needs this: the host path runs no SAVEPOINT there
    (``notifier._our_part``), and SQLite undoes a failed statement whole, but plain
    executemany is a statement per row, so a failure could keep an event's first rows.
    With RETURNING, SQLAlchemy sends executemany as multi-row INSERTs
    ("insertmanyvalues", compiled once) up to its page of rows and its cap on
    parameters — and this SQLite's own cap (999 before SQLite 3.32)."""
    dialect = conn.dialect
    if dialect.name != "sqlite":
        return stmt
    if not dialect.insert_executemany_returning:  # SQLite before 3.35: no RETURNING
        return None
    getlimit = getattr(conn.connection.driver_connection, "getlimit", None)  # Python 3.11+
    own = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else 999
    limit = min(dialect.insertmanyvalues_max_parameters, own)
    if rows > dialect.insertmanyvalues_page_size or rows * columns > limit:
        return None
    return _returning(stmt)


@functools.cache
def _returning(stmt: Any) -> Any:
    return stmt.returning(message_table.c.id)


def host_insert(conn: Connection, rows: Sequence[dict[str, Any]], *, direct: bool) -> None:
    """Run the statement an event's rows go in with, for ``notifier.warm_up``: it
    compiles it (the caller rolls back) — through ``direct`` or through SQLAlchemy."""
    stmt = _insert_or_ignore(conn.dialect.name)
    if stmt is not None:
        one = _one_statement(conn, stmt, len(rows), len(rows[0]))
        one = stmt if one is None else one
        if direct:
            _direct.insert(conn, one, rows)
        else:
            conn.execute(one, list(rows))


@functools.cache
def _insert_or_ignore(name: str) -> Any:
    """The insert-or-ignore statement of dialect ``name`` (built once), or None."""
    stmt: Any
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(message_table).on_conflict_do_nothing(index_elements=["idempotency_key"])
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(message_table).on_conflict_do_nothing(
            index_elements=["idempotency_key"]
        )
    elif name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(message_table).on_duplicate_key_update(id=message_table.c.id)
    else:
        return None
    return stmt


def existing_keys(session: Session, keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    if not keys:
        return set()
    rows = session.execute(
        select(Message.idempotency_key).where(Message.idempotency_key.in_(keys))
    ).scalars()
    return set(rows)


def find(
    session: Session, status: str | None = None, ids: Sequence[int] | None = None
) -> list[Message]:
    """Messages (of one status, or these ids; an empty id list finds none)."""
    q = select(Message).order_by(Message.id)
    if status:
        q = q.where(Message.status == status)
    if ids is not None:
        q = q.where(Message.id.in_(ids))
    return list(session.scalars(q))


# -- dispatch side (own short transactions) --------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A message claimed for sending: everything the channel needs, detached from any
    session."""

    id: int
    token: str
    channel: str | None
    address: str | None
    raw_address: str | None
    body: str
    attempts: int
    claimed_at: dt.datetime
    contact_ref: str | None
    contact_name: str | None
    order_number: str
    reclaimed_after: dt.datetime | None  # the earlier claim's time, when its lease expired
    created_at: dt.datetime | None = None
    segments: int | None = None
    recipient: str | None = None  # E.164
    maybe_sent: bool = False  # the previous attempt may have reached the provider
    sender: str | None = None  # the TWILIO record to send from (None: TWILIO)

    @property
    def may_have_been_sent(self) -> bool:
        """An earlier attempt may have reached the provider (lease lost, timeout, dropped
        connection, unreadable answer): look before sending again."""
        return self.reclaimed_after is not None or self.maybe_sent


@dataclass(frozen=True)
class Outcome:
    """What happened to a claimed message."""

    status: str
    reason: str | None = None
    provider_id: str | None = None
    provider_status: str | None = None
    error_code: int | None = None
    segments: int | None = None
    price: str | None = None
    price_unit: str | None = None
    next_attempt_at: dt.datetime | None = None
    channel: str | None = None
    address: str | None = None
    raw: Any = None
    detail: str | None = None  # for the timeline, when it differs from reason
    released: bool = False  # handed back unsent (worker shutdown): the attempt does not count
    callbacks: bool = False  # status callbacks may have come in before this outcome
    maybe_sent: bool = False  # for a retry: the provider may have it; ask before re-sending


def new_token(worker_id: str) -> str:
    return f"{worker_id[:48]}:{uuid.uuid4().hex[:12]}"


def claim_due(
    db: Database,
    worker_id: str,
    *,
    limit: int,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due messages for ``worker_id``.

    Workers claiming at the same moment can deadlock on InnoDB (gap locks taken by the
    ordered scan): the loser is tried again a few times, then gets nothing this round —
    a race between workers, not an error."""
    now = now or utcnow()
    for attempt in range(CLAIM_TRIES):
        try:
            return _claim(db, worker_id, limit=limit, lease_seconds=lease_seconds, now=now)
        except DBAPIError as exc:
            if not is_lock_conflict(exc):
                raise
            log.debug("claim lost a race with another worker (try %d): %s", attempt + 1, exc.orig)
            time.sleep(random.uniform(0.0, 0.02 * (attempt + 1)))  # let the winner commit
    log.info("worker %s: claims kept colliding with other workers; trying next round", worker_id)
    return []


CLAIM_TRIES = 5


def _claim(
    db: Database, worker_id: str, *, limit: int, lease_seconds: float, now: dt.datetime
) -> list[Claimed]:
    """``now`` is the planning clock (is a queued text due?); leases are the database's
    clock alone (``database_now``): a worker whose clock is off neither takes a text
    whose lease is still running nor hands out a lease that has already run out."""
    m = message_table.c
    conn_cm = db.engine.connect().execution_options(erp_sms_begin_immediate=True)
    with conn_cm as conn, conn.begin():
        clock = database_now(conn)
        due = or_(
            and_(m.status == Status.QUEUED, m.next_attempt_at <= now),
            and_(m.status == Status.SENDING, m.lease_expires_at < clock),
        )
        # An opt-out may have come in after the text was queued (or while it was held):
        # such a row is canceled here instead of being sent.
        opted_out = exists().where(opt_out_table.c.number == m.recipient).label("opted_out")
        candidates = (
            select(
                m.id, m.status, m.claimed_by, m.claimed_at, m.recipient, m.send_window, opted_out
            )
            .where(due)
            .order_by(m.next_attempt_at, m.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        lease_until = clock + dt.timedelta(seconds=lease_seconds)
        window: _WindowCheck | None = None
        wanted: list[Any] = []
        for row in conn.execute(candidates).all():
            if row.opted_out:
                _cancel_opted_out(conn, row, now)
                continue
            if row.send_window and row.status == Status.QUEUED:
                # Due, but perhaps outside the send window (released at night, a worker
                # that was down): it waits for the next opening instead.
                window = window or _WindowCheck(conn)
                if window.defer(conn, row, now):
                    continue
            wanted.append(row)
        if not wanted:
            return []
        # The whole batch in one UPDATE under one token: a statement per text held the
        # claim's transaction (on SQLite the file's write lock, which the recorder needs)
        # for a round trip per text. The rows are locked (SKIP LOCKED) or the file is
        # (SQLite); "still due" is checked again anyway, and only the rows that now carry
        # this token are ours.
        token = new_token(worker_id)
        ids = [r.id for r in wanted]
        conn.execute(
            update(message_table)
            .where(m.id.in_(ids), due)
            .values(
                status=Status.SENDING,
                claimed_by=token,
                claimed_at=clock,
                lease_expires_at=lease_until,
                attempts=m.attempts + 1,
                updated_at=now,
            )
        )
        rows = {
            r.id: r
            for r in conn.execute(select(message_table).where(m.id.in_(ids), m.claimed_by == token))
        }
        claimed_ids: list[tuple[int, dt.datetime | None]] = []
        lines: list[dict[str, Any]] = []
        for row in wanted:
            if row.id not in rows:
                continue  # another worker got it first
            reclaimed = row.claimed_at if row.status == Status.SENDING else None
            claimed_ids.append((row.id, reclaimed))
            detail = f"claimed by {token}"
            if reclaimed is not None:
                detail = f"reclaimed by {token}: the lease of {row.claimed_by} expired"
            lines.append(_history_row(row.id, now, Status.SENDING, detail))
        if lines:
            conn.execute(insert(message_event_table), lines)
    out = []
    for mid, reclaimed in claimed_ids:
        r = rows[mid]
        out.append(
            Claimed(
                id=mid,
                token=token,
                channel=r.channel,
                address=r.address,
                raw_address=r.raw_address,
                body=r.body,
                attempts=r.attempts,
                claimed_at=clock,
                contact_ref=r.contact_ref,
                contact_name=r.contact_name,
                order_number=r.order_number,
                reclaimed_after=reclaimed,
                created_at=r.created_at,
                segments=r.segments,
                recipient=r.recipient,
                maybe_sent=bool(r.maybe_sent),
                sender=r.sender,
            )
        )
    return out


def confirm_claim(db: Database, claimed: Claimed, *, lease_seconds: float) -> bool:
    """Right before a send: True when ``claimed`` is still ours, its lease renewed for
    the send; False when the claim was lost (another worker has the text now). One
    conditional UPDATE: its rowcount proves the claim."""
    m = message_table.c
    with db.engine.begin() as conn:
        lease_until = database_now(conn) + dt.timedelta(seconds=lease_seconds)
        res = conn.execute(
            update(message_table)
            .where(m.id == claimed.id, m.claimed_by == claimed.token, m.status == Status.SENDING)
            .values(lease_expires_at=lease_until)
        )
        return res.rowcount == 1


def renew_leases(
    db: Database,
    claims: Sequence[Claimed],
    *,
    lease_seconds: float,
) -> tuple[set[int], set[int]]:
    """The heartbeat of a live worker: extend the lease of the texts it still holds
    (one statement). Returns the ids whose claim is still its own, and the ids another
    worker now holds (its lease ran out and the text was claimed again) — a text whose
    outcome was just recorded is neither, and is no cause for alarm."""
    if not claims:
        return set(), set()
    m = message_table.c
    mine = or_(*[and_(m.id == c.id, m.claimed_by == c.token) for c in claims])
    tokens = {c.id: c.token for c in claims}
    with db.engine.begin() as conn:
        lease_until = database_now(conn) + dt.timedelta(seconds=lease_seconds)
        # A text being handed over is share-locked on MariaDB (send_guard.SendGuard): the
        # heartbeat passes it by rather than wait (its handover is shorter than a lease).
        free = conn.execute(
            select(m.id)
            .where(mine, m.status == Status.SENDING)
            .with_for_update(skip_locked=True, key_share=True)
        ).scalars()
        conn.execute(
            update(message_table)
            .where(m.id.in_(list(free)), m.status == Status.SENDING)
            .values(lease_expires_at=lease_until)
        )
        rows = conn.execute(
            select(m.id, m.claimed_by).where(m.id.in_(list(tokens)), m.status == Status.SENDING)
        ).all()
    held = {r.id for r in rows if r.claimed_by == tokens[r.id]}
    taken = {r.id for r in rows if r.claimed_by != tokens[r.id]}
    return held, taken


class _WindowCheck:
    """The send window as the options say now, read once per claim."""

    def __init__(self, conn: Any) -> None:
        from .models import Option
        from .options import value_from
        from .sendwindow import Policy

        names = ["SMSSENDWINDOW", "SMSTIMEZONE"]
        q = select(Option.name, Option.value).where(Option.name.in_(names))
        stored = dict(conn.execute(q).all())
        self.policy = Policy.from_options(
            *(value_from(n, stored.get(n)) for n in names)  # window, default zone
        )

    def defer(self, conn: Any, row: Any, now: dt.datetime) -> bool:
        """Move ``row`` to the window's next opening when it is closed now."""
        deferred = self.policy.deferral(row.recipient, now)
        if deferred is None:
            return False
        at, reason = deferred
        m = message_table.c
        res = conn.execute(
            update(message_table)
            .where(m.id == row.id, m.status == Status.QUEUED)
            .values(next_attempt_at=at, reason=reason, updated_at=now)
        )
        if res.rowcount == 1:
            _history(conn, row.id, now, Status.QUEUED, reason)
        return True


def _cancel_opted_out(conn: Any, row: Any, now: dt.datetime) -> None:
    m = message_table.c
    reason = f"canceled: {row.recipient} opted out before it was sent"
    res = conn.execute(
        update(message_table)
        .where(m.id == row.id, m.status == row.status)
        .values(status=Status.CANCELED, reason=reason, claimed_by=None, updated_at=now)
    )
    if res.rowcount == 1:
        _history(conn, row.id, now, Status.CANCELED, reason)


def _history(
    conn: Any, message_id: int, at: dt.datetime, status: str, detail: str | None, **more: Any
) -> None:
    """One status line of a message's timeline, from the dispatcher's own transaction."""
    conn.execute(
        insert(message_event_table).values(_history_row(message_id, at, status, detail, **more))
    )


def _history_row(
    message_id: int, at: dt.datetime, status: str, detail: str | None, **more: Any
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "at": at,
        "kind": "status",
        "status": status,
        "source": more.pop("source", "dispatch"),
        "detail": detail,
        **more,
    }


def finish(
    db: Database,
    claimed: Claimed,
    outcome: Outcome,
    *,
    source: str = "dispatch",
    now: dt.datetime | None = None,
) -> bool:
    """Record the outcome of a send; False when the claim was lost meanwhile."""
    return claimed.id in finish_many(db, [(claimed, outcome)], source=source, now=now)


def finish_many(
    db: Database | Connection,
    items: Sequence[tuple[Claimed, Outcome]],
    *,
    source: str = "dispatch",
    now: dt.datetime | None = None,
) -> set[int]:
    """Record several outcomes in one transaction (the dispatcher's group commit); the
    ids recorded. An outcome whose claim was lost meanwhile is left out (its new owner
    decides); the transaction is all or nothing, so a failed commit can be tried again.
    ``db`` may be a connection kept open by the caller (the recorder's own)."""
    now = now or utcnow()
    m = message_table.c
    recorded: set[int] = set()
    history: list[dict[str, Any]] = []
    sent: list[str] = []
    tx = db.engine.begin() if isinstance(db, Database) else _begun(db)
    with tx as conn:
        # In id order, as an opt-out locks them (``_wait_for_handovers``): no circle.
        for claimed, outcome in sorted(items, key=lambda item: item[0].id):
            res = conn.execute(
                update(message_table)
                .where(
                    m.id == claimed.id,
                    m.status == Status.SENDING,
                    m.claimed_by == claimed.token,
                )
                .values(**_outcome_values(outcome, now))
            )
            if res.rowcount != 1:
                log.warning(
                    "message %s: claim %s was lost before its outcome (%s) was recorded",
                    claimed.id,
                    claimed.token,
                    outcome.status,
                    extra={"message_id": claimed.id, "status": outcome.status},
                )
                continue
            recorded.add(claimed.id)
            history.append(
                {
                    "message_id": claimed.id,
                    "at": now,
                    "kind": "status",
                    "status": outcome.status,
                    "source": source,
                    "detail": outcome.detail or outcome.reason,
                    "provider_id": outcome.provider_id,
                    "raw": _json(outcome.raw),
                }
            )
            if outcome.provider_id and outcome.status == Status.SENT and outcome.callbacks:
                sent.append(outcome.provider_id)
        if history:
            conn.execute(insert(message_event_table), history)
    if sent:
        # After the commit, not inside it: a report stored while this transaction was
        # open was not visible to it (and it saw no message then); the webhook looks again
        # after its own commit. Whichever commits last attaches it.
        try:
            adopt_callbacks(db, sent)
        except DBAPIError as exc:
            log.warning("cannot attach early status reports now (%s): retried", one_line(exc))
    return recorded


def finish_many_at_once(
    conn: Connection,
    items: Sequence[tuple[Claimed, Outcome]],
    *,
    source: str = "dispatch",
    now: dt.datetime | None = None,
) -> set[int]:
    """``finish_many`` as ONE statement on PostgreSQL — a data-modifying CTE updates the
    rows still claimed and adds their history lines, the group passed as arrays — run on a
    connection in autocommit: one round trip for a group instead of four (BEGIN, UPDATE,
    INSERT, COMMIT), atomic as any single statement, and the same SQL text every time (so
    it is prepared once). For outcomes with no provider callbacks to adopt (the
    gateway's): ``finish_many`` handles those."""
    stamp = (now or utcnow()).astimezone(dt.UTC).replace(tzinfo=None)  # stored as UTC
    params: dict[str, Any] = {"now": stamp, "source": source}
    for name, _sql in _GROUP_COLUMNS:
        params[name] = []
    for c, o in sorted(items, key=lambda item: item[0].id):  # id order: see finish_many
        due = (o.next_attempt_at or now or utcnow()) if o.status == Status.QUEUED else None
        row = {
            "id": c.id,
            "token": c.token,
            "status": o.status,
            "reason": o.reason,
            "provider_id": o.provider_id,
            "error_code": o.error_code,
            "segments": o.segments,
            "price": o.price,
            "price_unit": o.price_unit,
            "channel": o.channel,
            "address": o.address,
            "next_attempt_at": due.astimezone(dt.UTC).replace(tzinfo=None) if due else None,
            "released": 1 if o.released else 0,
            "maybe_sent": o.maybe_sent,
            "detail": o.detail or o.reason,
            "raw": _json(o.raw),
        }
        for name, _sql in _GROUP_COLUMNS:
            params[name].append(row[name])
    recorded = set(conn.execute(_GROUP_WRITE, params).scalars())
    for c, o in items:
        if c.id not in recorded:
            log.warning(
                "message %s: claim %s was lost before its outcome (%s) was recorded",
                c.id,
                c.token,
                o.status,
                extra={"message_id": c.id, "status": o.status},
            )
    return recorded


_GROUP_COLUMNS = (
    ("id", "integer"),
    ("token", "varchar"),
    ("status", "varchar"),
    ("reason", "text"),
    ("provider_id", "varchar"),
    ("error_code", "integer"),
    ("segments", "integer"),
    ("price", "varchar"),
    ("price_unit", "varchar"),
    ("channel", "varchar"),
    ("address", "varchar"),
    ("next_attempt_at", "timestamp"),
    ("released", "integer"),
    ("maybe_sent", "boolean"),
    ("detail", "text"),
    ("raw", "text"),
)
_KEPT = ("provider_id", "error_code", "segments", "price", "price_unit", "channel", "address")
# Built from constants only (column names, statuses): nothing from outside reaches it.
_GROUP_WRITE = text(
    "WITH v AS (SELECT * FROM unnest("  # noqa: S608
    + ", ".join(f"CAST(:{n} AS {t}[])" for n, t in _GROUP_COLUMNS)
    + ") AS v("
    + ", ".join(n for n, _t in _GROUP_COLUMNS)
    + ")), u AS (UPDATE sms_message AS m SET status = v.status, reason = v.reason, "  # noqa: S608
    "claimed_by = NULL, lease_expires_at = NULL, updated_at = :now, "
    "maybe_sent = v.maybe_sent, attempts = m.attempts - v.released, "
    f"next_attempt_at = CASE WHEN v.status = '{Status.QUEUED}' THEN v.next_attempt_at "
    "ELSE m.next_attempt_at END, "
    f"sent_at = CASE WHEN v.status = '{Status.SENT}' THEN :now ELSE m.sent_at END, "
    + ", ".join(f"{k} = COALESCE(v.{k}, m.{k})" for k in _KEPT)
    + f" FROM v WHERE m.id = v.id AND m.status = '{Status.SENDING}' AND m.claimed_by = v.token"  # noqa: S608
    " RETURNING m.id) "
    "INSERT INTO sms_message_event (message_id, at, kind, status, source, detail, provider_id, "
    "raw) SELECT v.id, :now, 'status', v.status, :source, v.detail, v.provider_id, v.raw "
    "FROM v JOIN u ON u.id = v.id RETURNING message_id"
)


@contextlib.contextmanager
def _begun(conn: Connection) -> Iterator[Connection]:
    with conn.begin():
        yield conn


def _outcome_values(outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    m = message_table.c
    values: dict[str, Any] = {
        "status": outcome.status,
        "reason": outcome.reason,
        "claimed_by": None,
        "lease_expires_at": None,
        "updated_at": now,
        "maybe_sent": outcome.maybe_sent,
    }
    for name in (
        "provider_id",
        "error_code",
        "segments",
        "price",
        "price_unit",
        "channel",
        "address",
    ):
        value = getattr(outcome, name)
        if value is not None:
            values[name] = value
    if outcome.status == Status.QUEUED:
        values["next_attempt_at"] = outcome.next_attempt_at or now
    if outcome.released:
        values["attempts"] = m.attempts - 1
    if outcome.status == Status.SENT:
        values["sent_at"] = now
    return values


def require(
    session: Session, ids: Sequence[int], statuses: Sequence[str], action: str
) -> list[Message]:
    """The messages ``ids`` for a staff ``action``: ``InputError`` (and nothing changed)
    when one is unknown or not in one of ``statuses``."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    rows = find(session, None, wanted)
    known = {m.id: m for m in rows}
    unknown = [str(i) for i in wanted if i not in known]
    if unknown:
        raise InputError(
            f"unknown message id(s) {', '.join(unknown)}: nothing was changed "
            "(`erp-sms report` lists the ids)"
        )
    wrong = [f"#{m.id} is {m.status}" for m in rows if m.status not in statuses]
    if wrong:
        raise InputError(
            f"cannot {action}: {'; '.join(wrong)} (only {' or '.join(statuses)} texts); "
            "nothing was changed"
        )
    return [known[i] for i in wanted]


def release(
    session: Session, ids: Sequence[int] | None = None, *, by: str = "staff"
) -> list[Message]:
    """Held messages (all held ones, or these ids) go back to the queue."""
    rows = (
        find(session, Status.HELD)
        if ids is None
        else require(session, ids, [Status.HELD], "release")
    )
    for msg in rows:
        msg.next_attempt_at = utcnow()
        set_status(session, msg, Status.QUEUED, source=by, reason=None)
        msg.reason = None
    return rows


def release_channel(session: Session, channel: str, *, by: str) -> list[Message]:
    """Release the held messages of one channel (e.g. after TWILIO credentials are fixed)."""
    ids = [m.id for m in find(session, Status.HELD) if m.channel == channel]
    return release(session, ids, by=by) if ids else []


def release_ready(session: Session, *, by: str = "dispatch") -> list[Message]:
    """Twilio texts still held though their TWILIO record is active and not flagged go
    back to the queue. Staff's switching the record on releases what is held then; an
    outcome written a moment later (a worker that had routed the text while the record
    was off, its write delayed) would otherwise stay held for good. The worker runs
    this before each run."""
    ready = {
        name
        for name, active, flagged in session.execute(
            select(Rule.rule_type, Rule.active, Rule.rejected_at).where(
                Rule.rule_type.like("TWILIO%")
            )
        )
        if active and flagged is None
    }
    if not ready:
        return []
    m = message_table.c
    ids = list(
        session.scalars(
            select(m.id)
            .where(
                m.status == Status.HELD,
                m.channel == "twilio",
                func.coalesce(m.sender, "TWILIO").in_(sorted(ready)),
            )
            .order_by(m.id)
        )
    )
    return release(session, ids, by=by) if ids else []


def cancel(
    session: Session, ids: Sequence[int], *, by: str = "staff", reason: str | None = None
) -> list[Message]:
    """Cancel queued or held messages; sent ones are past canceling."""
    rows = require(session, ids, [Status.QUEUED, Status.HELD], "cancel")
    for msg in rows:
        set_status(session, msg, Status.CANCELED, source=by, reason=reason or f"canceled by {by}")
    return rows


def cancel_for_opt_out(
    session: Session,
    *,
    numbers: Sequence[str],
    contact_refs: Sequence[str],
    reason: str,
    by: str,
) -> list[int]:
    """An opt-out takes effect at once: cancel the texts still queued or held for these
    numbers or contacts — and only those. One conditional statement, not a read then
    updates by id: a text a worker claimed in between is ``sending`` and stays so (the
    worker checks the opt-out list again right before it sends; CONTRACT.md "The email
    log tells the truth"). The ids canceled, in order."""
    conds = []
    m = message_table.c
    if numbers:
        conds.append(m.recipient.in_(list(numbers)))
    if contact_refs:
        conds.append(m.contact_ref.in_(list(contact_refs)))
    if not conds:
        return []
    waiting = and_(m.status.in_([Status.QUEUED, Status.HELD]), or_(*conds))
    now = utcnow()
    values = {
        "status": Status.CANCELED,
        "reason": reason,
        "next_attempt_at": None,
        "updated_at": now,
    }
    conn = session.connection(bind_arguments={"mapper": Message})
    if conn.dialect.update_returning:
        stmt = update(message_table).where(waiting).values(**values).returning(m.id)
        ids = sorted(conn.execute(stmt).scalars())
    else:
        # MariaDB has no UPDATE … RETURNING: lock the rows first. A row a worker is
        # claiming is waited for, then read as it is now (sending) and left alone; the
        # locked rows are then exactly the ones the UPDATE changes.
        ids = list(conn.execute(select(m.id).where(waiting).order_by(m.id).with_for_update()))
        ids = [i for (i,) in ids]
        if ids:
            conn.execute(update(message_table).where(m.id.in_(ids), waiting).values(**values))
    _wait_for_handovers(conn, or_(*conds))
    if not ids:
        return []
    conn.execute(
        insert(message_event_table),
        [_history_row(i, now, Status.CANCELED, reason, source=by) for i in ids],
    )
    # The host's session may hold some of these rows: they must not show the old status.
    gone = set(ids)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Message) and obj.id in gone:
            session.expire(obj)
    return ids


def _wait_for_handovers(conn: Connection, theirs: Any) -> None:
    """Before an opt-out commits: wait until no text of the number is being handed to a
    provider. A sender holds a share lock on its row across the handover and reads the
    opt-out list after taking it (``send_guard.SendGuard``), so a handover either
    finishes before this commits, or starts after and sees the opt-out. Rows in id order,
    as the recorder writes them, so the two never wait on each other in a circle. SQLite
    has no row locks (its sender reads the list right before the send)."""
    if conn.dialect.name == "sqlite":
        return
    m = message_table.c
    conn.execute(
        select(m.id).where(theirs, m.status == Status.SENDING).order_by(m.id).with_for_update()
    ).all()


def replace_plan(session: Session, message: Message, planned: Message, *, by: str) -> Message:
    """Staff retried ``message``: it takes the newly planned status, route and text
    (same idempotency key) and starts its attempts afresh. A text never changed before
    first gets a timeline line saying how it was planned (skipped, and why): the row is
    about to forget it.

    A text the provider took (it has the provider's id: undelivered, or failed at the
    provider) keeps its row as the provider left it — rewriting it would contradict
    what the provider got and orphan its late callbacks. The retry is then a new text,
    once per such row (``planned is message``: nobody to send to, only a line).
    Returns the message that carries the retry."""
    if message.provider_id is not None:
        return _send_again(session, message, planned, by=by)
    if not message.history:
        first = add_event(
            session,
            message,
            kind="status",
            status=message.status,
            source=PLANNED,
            detail=message.reason,
        )
        first.at = message.created_at
    for name in (
        "status",
        "reason",
        "body",
        "encoding",
        "segments",
        "channel",
        "address",
        "recipient",
        "raw_address",
        "contact_name",
        "organization_name",
        "next_attempt_at",
    ):
        setattr(message, name, getattr(planned, name))
    message.attempts = 0
    message.error_code = None
    message.provider_id = None
    add_event(
        session,
        message,
        kind="status",
        status=message.status,
        source=by,
        detail=f"retried by {by}" + (f": {message.reason}" if message.reason else ""),
    )
    return message


def _send_again(session: Session, message: Message, planned: Message, *, by: str) -> Message:
    if planned is message:
        add_event(
            session,
            message,
            kind="status",
            status=message.status,
            source=by,
            detail=f"retried by {by}: {message.reason}",
        )
        return message
    planned.idempotency_key = f"{message.idempotency_key[:200]}:again:{message.id}"
    new = add_planned(session, [planned])
    if not new:  # retried before: the text that carries it
        earlier = session.scalar(
            select(Message).where(Message.idempotency_key == planned.idempotency_key)
        )
        assert earlier is not None
        return earlier
    add_event(
        session,
        message,
        kind="status",
        status=message.status,
        source=by,
        detail=f"retried by {by}: sent again as #{new[0].id}",
    )
    return new[0]


def apply_plan(session: Session, message: Message, row: Mapping[str, Any], *, by: str) -> bool:
    """A text not sent yet takes what its sequence step plans now (staff changed the
    steps or a switch): status, reason, text and time. False when nothing changed."""
    names = ("status", "reason", "body", "encoding", "segments", "template", "next_attempt_at")
    if all(getattr(message, n) == row[n] for n in names):
        return False
    status_changed = message.status != row["status"]
    for n in names:
        setattr(message, n, row[n])
    detail = f"planned again by {by}" + (f": {message.reason}" if message.reason else "")
    if not status_changed and message.next_attempt_at is not None:
        detail += f" (goes out {message.next_attempt_at:%Y-%m-%d %H:%M} UTC)"
    add_event(session, message, kind="status", status=message.status, source=by, detail=detail)
    return True


def insert_or_ignore_run(session: Session, run: Mapping[str, Any]) -> bool:
    """Record the start of a sequence run; False when this subject's run already exists
    (started before, or by a concurrent call — no IntegrityError either way)."""
    conn = session.connection(bind_arguments={"mapper": Message})
    t = sequence_run_table
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        upsert = pg_insert if name == "postgresql" else sqlite_insert
        # RETURNING says whether the row went in (a single-row INSERT's rowcount does not).
        stmt = upsert(t).on_conflict_do_nothing().returning(t.c.id)
        return conn.execute(stmt, dict(run)).first() is not None
    if name in ("mysql", "mariadb"):
        # Not ON DUPLICATE KEY UPDATE: MariaDB counts that no-op as a found row. Every value
        # here is ours and fits its column, so IGNORE hides no other error.
        return bool(conn.execute(insert(t).prefix_with("IGNORE"), dict(run)).rowcount == 1)
    key = (t.c.sequence == run["sequence"], t.c.order_ref == run["order_ref"])
    if conn.execute(select(t.c.id).where(*key, t.c.subject_ref == run["subject_ref"])).first():
        return False
    conn.execute(insert(t), dict(run))
    return True


def add_planned(session: Session, planned: Sequence[Message]) -> list[Message]:
    """Add newly planned messages whose keys are not in the log yet."""
    have = existing_keys(session, [m.idempotency_key for m in planned])
    new = [m for m in planned if m.idempotency_key not in have]
    session.add_all(new)
    session.flush()
    return new
