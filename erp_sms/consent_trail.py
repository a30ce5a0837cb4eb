"""The consent trail: every opt-in and opt-out with where it came from, for staff and
auditors (``report --consent``), and opt-ins collected elsewhere imported from CSV."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .codes import Program
from .consent import OPT_IN, OPT_OUT, opt_in, record_event
from .errors import InputError
from .models import ConsentEvent, Message
from .recipients import ContactView, RecipientLookup, default_lookup
from .sendwindow import now as clock_now

# -- the consent trail -----------------------------------------------------------------------

TRAIL_COLUMNS = (
    "at",
    "action",
    "source",
    "actor",
    "contact_id",
    "contact_name",
    "number",
    "address",
    "program",
    "detail",
)


def _window(
    q: Any, contact: Any, when: Any, contact_key: str | None, since: Any, until: Any
) -> Any:
    """``q`` limited to one contact and a time window, when given."""
    if contact_key is not None:
        q = q.where(contact == contact_key)
    if since is not None:
        q = q.where(when >= since)
    if until is not None:
        q = q.where(when <= until)
    return q


def trail(
    session: Session,
    *,
    contact_key: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[dict[str, str]]:
    """Every opt-in and opt-out (STOP/START replies, Twilio 21610, staff on the CLI or the
    pages, the host, imports), oldest first, as rows of ``TRAIL_COLUMNS`` for an auditor;
    times in UTC, ISO 8601."""
    q = select(ConsentEvent).order_by(ConsentEvent.at, ConsentEvent.id)
    q = _window(q, ConsentEvent.contact_ref, ConsentEvent.at, contact_key, since, until)
    return [
        {
            "at": e.at.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "action": e.action,
            "source": e.source,
            "actor": e.actor or "",
            "contact_id": e.contact_ref or "",
            "contact_name": e.contact_name or "",
            "number": e.number or "",
            "address": e.address or "",
            "program": e.program or "all",
            "detail": e.detail or "",
        }
        for e in session.scalars(q)
    ]


IMPORT_COLUMNS = ("contact", "date", "source")  # and optionally "note", "program"


@dataclass(frozen=True)
class Imported:
    """What ``import_opt_ins`` did: a line per row."""

    recorded: int
    lines: list[str]


def import_opt_ins(
    session: Session,
    rows: Iterable[dict[str, str]],
    *,
    by: str,
    today: dt.date | None = None,
    lookup: RecipientLookup | None = None,
    progress: Callable[[int], object] | None = None,
) -> Imported:
    """Record opt-ins collected elsewhere (a signed form, a web form…): each row names the
    contact (id), the date it was given (YYYY-MM-DD) and where (``source``; ``note``
    optional; ``program`` optional: orders, reminders or staff — empty, every program). Every row is checked before anything is written (``InputError`` naming the
    line). A consent older than the contact's last opt-out is not applied: the opt-out
    came later and stands. ``progress`` is told of each row checked and each applied."""
    lookup = lookup or default_lookup()
    today = today or clock_now().date()
    checked: list[tuple[int, ContactView, dt.date, str, str, str | None]] = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        missing = [c for c in IMPORT_COLUMNS if not (row.get(c) or "").strip()]
        if missing:
            raise InputError(
                f"line {line}: no {missing[0]}: each row needs contact, date (YYYY-MM-DD) "
                "and source; nothing was imported"
            )
        key, text, source = (row[c].strip() for c in IMPORT_COLUMNS)
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise InputError(
                f"line {line}: {text!r} is not a date: use YYYY-MM-DD; nothing was imported"
            ) from None
        if day > today:
            raise InputError(f"line {line}: {day} is in the future; nothing was imported")
        view = lookup.contact(session, key)
        if view is None:
            raise InputError(f"line {line}: no contact {key!r}; nothing was imported")
        program = (row.get("program") or "").strip().lower() or None
        if program is not None and program not in Program.ALL:
            raise InputError(
                f"line {line}: program {program!r}: use {', '.join(Program.ALL)} or leave it "
                "empty (every program); nothing was imported"
            )
        checked.append((line, view, day, source[:200], (row.get("note") or "").strip(), program))
        if progress is not None:
            progress(1)
    out, recorded = [], 0
    for line, view, day, source, note, program in checked:
        if progress is not None:
            progress(1)
        given = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
        last_out = session.scalar(
            select(ConsentEvent.at)
            .where(ConsentEvent.contact_ref == view.key, ConsentEvent.action == OPT_OUT)
            .order_by(ConsentEvent.at.desc())
            .limit(1)
        )
        if last_out is not None and last_out.astimezone(dt.UTC).date() >= day:
            out.append(
                f"line {line}: {view.name}: not applied — they opted out on "
                f"{last_out.astimezone(dt.UTC).date()}, after this consent of {day}"
            )
            continue
        detail = f"collected via {source} on {day}" + (f": {note}" if note else "")
        done = opt_in(
            session,
            contact_key=view.key,
            source="import",
            detail=detail,
            actor=by,
            at=given,
            program=program,
        )
        recorded += 1
        if done.changed:
            out.append(f"line {line}: {view.name}: opted in ({source}, {day})")
        else:  # already opted in: the evidence still belongs in the trail
            record_event(session, [view], done.number, OPT_IN, "import", detail, by, given, program)
            out.append(f"line {line}: {view.name}: already opted in; consent recorded")
    return Imported(recorded, out)


# -- consent evidence ---------------------------------------------------------------------------

EVIDENCE_COLUMNS = (
    "message_id",
    "sent_at",
    "order_number",
    "event",
    "program",
    "contact_id",
    "contact_name",
    "number",
    "consent",
    "consent_at",
    "consent_source",
    "consent_event_id",
)
_SENT = ("sent", "delivered", "read", "undelivered")


def evidence(
    session: Session,
    *,
    contact_key: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[dict[str, str]]:
    """Why each text that went out was allowed to: the consent it was sent under — the
    last opt-in recorded for its contact or number (and program) before it was sent, or
    the contact's SMSUPDATE in the ERP when erp-sms recorded none. A text sent after an
    opt-out says so (it should never happen; an auditor would ask). Two reads, whatever
    the number of texts: the texts, then the trail of their contacts and numbers."""
    q = select(Message).where(Message.status.in_(_SENT), Message.sent_at.is_not(None))
    q = _window(q, Message.contact_ref, Message.sent_at, contact_key, since, until)
    texts = list(session.scalars(q.order_by(Message.id)))
    refs = {m.contact_ref for m in texts if m.contact_ref}
    numbers = {m.recipient for m in texts if m.recipient}
    trail_rows = list(
        session.scalars(
            select(ConsentEvent)
            .where(or_(ConsentEvent.contact_ref.in_(refs), ConsentEvent.number.in_(numbers)))
            .order_by(ConsentEvent.at, ConsentEvent.id)
        )
    ) if refs or numbers else []  # fmt: skip
    # Each contact's and number's events, oldest first: a text looks at its own only.
    by_ref: dict[str, list[ConsentEvent]] = {}
    by_number: dict[str, list[ConsentEvent]] = {}
    for e in trail_rows:
        if e.contact_ref:
            by_ref.setdefault(e.contact_ref, []).append(e)
        if e.number:
            by_number.setdefault(e.number, []).append(e)
    out = []
    for m in texts:
        sent = m.sent_at
        mine = {e.id: e for e in by_ref.get(m.contact_ref or "", [])}
        mine.update((e.id, e) for e in by_number.get(m.recipient or "", []))
        before = [
            e
            for e in sorted(mine.values(), key=lambda e: (e.at, e.id))
            if e.program in (None, m.program) and sent is not None and e.at <= sent
        ]
        last = before[-1] if before else None
        if last is None:
            basis, at, source, ref = "SMSUPDATE on the contact in the ERP", "", "", ""
        elif last.action == OPT_IN:
            basis = "opt-in recorded"
            at = last.at.astimezone(dt.UTC).isoformat(timespec="seconds")
            source, ref = last.source, str(last.id)
        else:
            basis = "SENT AFTER AN OPT-OUT"
            at = last.at.astimezone(dt.UTC).isoformat(timespec="seconds")
            source, ref = last.source, str(last.id)
        out.append(
            {
                "message_id": str(m.id),
                "sent_at": sent.astimezone(dt.UTC).isoformat(timespec="seconds") if sent else "",
                "order_number": m.order_number,
                "event": m.event,
                "program": m.program or "",
                "contact_id": m.contact_ref or "",
                "contact_name": m.contact_name or "",
                "number": m.recipient or "",
                "consent": basis,
                "consent_at": at,
                "consent_source": source,
                "consent_event_id": ref,
            }
        )
    return out
