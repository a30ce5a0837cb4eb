"""Outcomes written back conditional on still holding the claim: one at a time, or in
groups (one statement per group where the database allows)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    insert,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError

from .. import feedback
from ..db import Database, one_line, utcnow
from ..models import (
    Status,
    message_event_table,
    message_table,
)
from .callbacks import adopt_callbacks
from .values import Claimed, Outcome, _begun, _json, told_of

log = logging.getLogger(__name__)


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
    told: list[Any] = []
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
            if feedback.wanted():
                told.append(told_of(claimed, outcome.status, Status.SENDING, now))
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
        feedback.write(conn, told)  # the host's outbox, in this same transaction
    feedback.send(told)  # committed: the host hears of each outcome
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
    # One statement in autocommit: committed once it returned.
    if feedback.wanted():
        feedback.send(
            [told_of(c, o.status, Status.SENDING, now) for c, o in items if c.id in recorded]
        )
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
