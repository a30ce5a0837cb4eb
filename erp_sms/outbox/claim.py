"""Claims: due rows moved to ``sending`` under a lease judged by the database's clock;
the send window and the opt-out list checked as they are taken."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    and_,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from .. import feedback
from ..db import Database, database_now, is_lock_conflict, utcnow
from ..models import (
    Option,
    Status,
    message_event_table,
    message_table,
    opt_out_table,
    program_opt_out_table,
)
from ..options import value_from
from ..sendwindow import Policy, next_opening, start_of_day
from ..signals import CAP_EXEMPT, ORDER_EVENTS
from .values import Claimed, _history, _history_row, new_token, told_of

log = logging.getLogger(__name__)


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


def due_batch(
    *, limit: int, now: dt.datetime | None = None, lease_clock: dt.datetime | None = None
) -> Any:
    """One branch of a claim: up to ``limit`` queued texts due at ``now`` (by when they
    are due), or texts whose lease ran out before ``lease_clock`` — locked, skipping rows
    another worker holds. Each reads its index in order and stops at ``limit``; the
    opt-out list is checked for those rows only (an opt-out that came in after the text
    was queued cancels it here)."""
    m = message_table.c
    per = program_opt_out_table.c
    opted_out = or_(
        exists().where(opt_out_table.c.number == m.recipient),
        exists().where(per.number == m.recipient, per.program == m.program),
    ).label("opted_out")
    q = select(
        m.id,
        m.status,
        m.claimed_by,
        m.claimed_at,
        m.recipient,
        m.send_window,
        m.event,
        m.created_at,
        m.next_attempt_at,
        m.order_number,
        m.contact_ref,
        opted_out,
    )
    if lease_clock is not None:
        q = q.where(m.status == Status.SENDING, m.lease_expires_at < lease_clock).order_by(
            m.lease_expires_at, m.id
        )
    else:
        q = q.where(m.status == Status.QUEUED, m.next_attempt_at <= now).order_by(
            m.next_attempt_at, m.id
        )
    return q.limit(limit).with_for_update(skip_locked=True)


def _claim(
    db: Database, worker_id: str, *, limit: int, lease_seconds: float, now: dt.datetime
) -> list[Claimed]:
    """``now`` is the planning clock (is a queued text due?); leases are the database's
    clock alone (``database_now``): a worker whose clock is off neither takes a text
    whose lease is still running nor hands out a lease that has already run out."""
    with feedback.collecting() as told:
        claimed = _claim_batch(db, worker_id, limit=limit, lease_seconds=lease_seconds, now=now)
    feedback.send(told)  # committed: the host hears of the texts taken, skipped, canceled
    return claimed


def _claim_batch(
    db: Database, worker_id: str, *, limit: int, lease_seconds: float, now: dt.datetime
) -> list[Claimed]:
    m = message_table.c
    conn_cm = db.engine.connect().execution_options(erp_sms_begin_immediate=True)
    with conn_cm as conn, conn.begin():
        clock = database_now(conn)
        due = or_(
            and_(m.status == Status.QUEUED, m.next_attempt_at <= now),
            and_(m.status == Status.SENDING, m.lease_expires_at < clock),
        )
        # Two branches, each read in its index's order and stopped at the batch: leases
        # that ran out first (their texts were in hand), then queued texts by when they
        # are due. One OR over both made the database read every due row and sort them
        # to keep a batch (175 ms at 100,000 due on PostgreSQL).
        expired = conn.execute(due_batch(lease_clock=clock, limit=limit)).all()
        queued = (
            conn.execute(due_batch(now=now, limit=limit - len(expired))).all()
            if (len(expired) < limit)
            else []
        )
        lease_until = clock + dt.timedelta(seconds=lease_seconds)
        rules: _ClaimRules | None = None
        wanted: list[Any] = []
        for row in [*expired, *queued]:
            if row.opted_out:
                _cancel_opted_out(conn, row, now)
                continue
            if row.status == Status.QUEUED and row.event in ORDER_EVENTS:
                # An order's stage hours late ("shipped" after "delivered", after an
                # outage) is worse than none: skipped with the reason instead.
                rules = rules or _ClaimRules(conn)
                if rules.skip_stale(conn, row, now):
                    continue
            if row.send_window and row.status == Status.QUEUED:
                # Due, but perhaps outside the send window (released at night, a worker
                # that was down): it waits for the next opening instead.
                rules = rules or _ClaimRules(conn)
                if rules.defer(conn, row, now):
                    continue
            if row.status == Status.QUEUED and row.event not in CAP_EXEMPT and row.recipient:
                rules = rules or _ClaimRules(conn)
                if rules.over_cap(conn, row, now):
                    continue
            wanted.append(row)
        if not wanted:
            feedback.write_collected(conn)  # the texts skipped or canceled here
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
            if reclaimed is None and feedback.wanted():
                feedback.collect(told_of(row, Status.SENDING, Status.QUEUED, now))
            detail = f"claimed by {token}"
            if reclaimed is not None:
                detail = f"reclaimed by {token}: the lease of {row.claimed_by} expired"
            lines.append(_history_row(row.id, now, Status.SENDING, detail))
        if lines:
            conn.execute(insert(message_event_table), lines)
        feedback.write_collected(conn)  # the host's outbox, in this same transaction
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
                event=r.event,
                program=r.program,
                reclaimed_after=reclaimed,
                created_at=r.created_at,
                valid_until=_valid_until(r, rules),
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


def _valid_until(row: Any, rules: _ClaimRules | None) -> dt.datetime | None:
    """When an order text stops being worth sending (None: no limit). ``rules`` were read
    by this claim whenever it held an order text."""
    if rules is None or not rules.stale_hours or row.event not in ORDER_EVENTS:
        return None
    return due_since(row) + stale_after(rules.stale_hours)


def due_since(row: Any) -> dt.datetime:
    """When a text became due: queued, or the time the host scheduled it for (``send_at``)
    or a send window moved it to — those waits were meant. A worker that was down does
    not move it."""
    created: dt.datetime = row.created_at
    return max(created, row.next_attempt_at or created)


def stale_after(hours: int) -> dt.timedelta:
    """How long an order text may wait before it is no longer worth sending."""
    return dt.timedelta(hours=hours)


class _ClaimRules:
    """The send window and the freshness limit as the options say now, read once per
    claim (one statement)."""

    def __init__(self, conn: Any) -> None:
        names = ["SMSSENDWINDOW", "SMSTIMEZONE", "SMSSTALEHOURS", "SMSMAXPERDAY"]
        q = select(Option.name, Option.value).where(Option.name.in_(names))
        stored = dict(conn.execute(q).all())
        window, zone, stale, cap = (value_from(n, stored.get(n)) for n in names)
        self.policy = Policy.from_options(window, zone)
        self.stale_hours = int(stale) if stale.isdigit() else 0
        self.cap = int(cap) if cap.isdigit() else 0
        self.taken: dict[str, int] = {}  # texts this claim let through, per number

    def over_cap(self, conn: Any, row: Any, now: dt.datetime) -> bool:
        """Move ``row`` to the next day when its number has had SMSMAXPERDAY texts in its
        local day (those sent, and those this claim already lets through)."""
        if not self.cap:
            return False
        zones = self.policy.zones(row.recipient)
        today = now.astimezone(zones[0]).date()
        m = message_table.c
        sent = conn.execute(
            select(func.count())
            .select_from(message_table)
            .where(m.recipient == row.recipient, m.sent_at >= start_of_day(today, zones))
        ).scalar_one()
        if sent + self.taken.get(row.recipient, 0) < self.cap:
            self.taken[row.recipient] = self.taken.get(row.recipient, 0) + 1
            return False
        at = start_of_day(today + dt.timedelta(days=1), zones)
        if self.policy.window is not None:
            at = next_opening(at, self.policy.window, zones, self.policy.default_zone).at
        local = at.astimezone(zones[0])
        reason = (
            f"deferred: {self.cap} texts a day to this number (SMSMAXPERDAY) reached; goes out "
            f"{local:%Y-%m-%d %H:%M} {zones[0].key}"
        )
        _change_queued(conn, row.id, now, Status.QUEUED, reason, next_attempt_at=at)
        return True

    def skip_stale(self, conn: Any, row: Any, now: dt.datetime) -> bool:
        """Skip ``row`` when it is older than SMSSTALEHOURS (0: never)."""
        if not self.stale_hours or due_since(row) > now - stale_after(self.stale_hours):
            return False
        reason = (
            f"skipped: not sent within {self.stale_hours} hours of when it was due "
            "(SMSSTALEHOURS); a late order update would arrive after the fact"
        )
        if _change_queued(conn, row.id, now, Status.SKIPPED, reason, claimed_by=None):
            feedback.collect(told_of(row, Status.SKIPPED, Status.QUEUED, now))
        return True

    def defer(self, conn: Any, row: Any, now: dt.datetime) -> bool:
        """Move ``row`` to the window's next opening when it is closed now."""
        deferred = self.policy.deferral(row.recipient, now)
        if deferred is None:
            return False
        at, reason = deferred
        _change_queued(conn, row.id, now, Status.QUEUED, reason, next_attempt_at=at)
        return True


def _change_queued(
    conn: Any, message_id: int, now: dt.datetime, status: str, reason: str, **values: Any
) -> bool:
    """Move a queued text (still queued: nobody took it meanwhile) to ``status`` with the
    reason, and say so on its timeline; whether it moved."""
    m = message_table.c
    res = conn.execute(
        update(message_table)
        .where(m.id == message_id, m.status == Status.QUEUED)
        .values(status=status, reason=reason, updated_at=now, **values)
    )
    if res.rowcount == 1:
        _history(conn, message_id, now, status, reason)
        return True
    return False


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
        feedback.collect(told_of(row, Status.CANCELED, row.status, now))
