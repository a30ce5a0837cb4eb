"""The receiver: an order event becomes outbox rows in the host's own transaction.

Nothing here touches the network. Everything runs inside a SAVEPOINT of the host's
session (on SQLite, as statements that each undo themselves on error: ``_our_part``), so
an error in our tables rolls back our rows only, and no exception ever reaches the host's
``signal.send()`` (blinker would propagate it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from blinker import Signal
from sqlalchemy import Engine, Select, bindparam, event, inspect, literal, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, configure_mappers, object_session
from sqlalchemy.orm.instrumentation import manager_of_class

from . import consent, direct, events, options, rule_records, templates, wording
from .addresses import Address, classify, route
from .config import get_settings
from .db import one_line, utcnow
from .errors import AddressError, ErpSmsError, InputError, TemplateError
from .events import ONE_OFF_EVENT, EventType, all_events, get_event
from .models import Message, OptOut, SenderMap, Status, message_table
from .outbox import (
    add_event,
    add_planned,
    host_insert,
    insert_new,
    replace_plan,
    require,
    set_status,
)
from .recipients import (
    ContactView,
    Decision,
    OrderView,
    _opted_in_contacts,
    _organization_and_contacts,
    default_lookup,
    lookup_method,
    select_recipients,
)
from .sendwindow import Policy
from .sendwindow import now as clock

log = logging.getLogger(__name__)

# Sent (with ``settings=``) when the host path queued texts in a session: inline delivery
# (``erp_sms.inline``) listens, so the host path names no dispatcher.
texts_queued = Signal()


def connect(event: EventType) -> None:
    """Connect ``event``'s receiver (strongly: blinker holds receivers weakly by default
    and a closure would vanish)."""

    def receiver(sender: Any, **kwargs: Any) -> list[Message]:
        return notify(event, sender, **kwargs)

    event.signal.connect(receiver, weak=False)


def idempotency_key(event: str, order: str, subject: str | None, contact: str | None) -> str:
    key = f"{event}|{order}|{subject or '-'}|{contact or '-'}"
    if len(key) > 255:
        key = f"{event}|sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def notify(
    event: EventType, order: Any, *, session: Session | None = None, **kwargs: Any
) -> list[Message]:
    """Queue the event's texts in ``session``; never raises. Returns the new rows (as
    unattached objects: the rows themselves are written with one bulk INSERT)."""
    return guarded(event, order, session, kwargs, _notify)


Work = Callable[["EventType", Any, Session, Mapping[str, Any]], list[Message]]


def guarded(
    event: EventType,
    order: Any,
    session: Session | None,
    kwargs: Mapping[str, Any],
    work: Work,
) -> list[Message]:
    """Run ``work`` (queue an event's texts, start or stop a sequence) in the host's
    session the way every host call runs: never raising for our own problems, leaving a
    failed entry with the reason, and making the host's commit fail when the database
    aborted its transaction."""
    try:
        if session is None:
            session = object_session(order) if _is_mapped(order) else None
            if session is None:
                log.error(
                    "erp-sms: %s was fired without session= for order %r and the order is "
                    "in no session; no text was queued — pass session=<the host's Session>",
                    event.name,
                    getattr(order, "number", order),
                    extra={"event": event.name},
                )
                return []
            log.warning(
                "erp-sms: %s was fired without session=; using the order's own session",
                event.name,
                extra={"event": event.name},
            )
        return work(event, order, session, kwargs)
    except Exception as exc:
        aborted = aborts_host_transaction(exc)
        if session is not None and aborted is not None:
            # Not our problem to hide: the database threw the host's transaction away.
            # Touch nothing more; the host's commit raises this error.
            log.error(
                "erp-sms: the database aborted the transaction while %s texts were queued "
                "for order %r (%s); the host's commit will fail so that it can retry",
                event.name,
                getattr(order, "number", order),
                one_line(aborted),
                extra={"event": event.name},
            )
            _fail_host_commit(session, aborted)
            return []
        log.exception(
            "erp-sms: could not queue %s texts for order %r: %s",
            event.name,
            getattr(order, "number", order),
            exc,
            extra={"event": event.name},
        )
        if session is not None:
            _record_failure(event, order, session, kwargs, exc)
        return []


def _begin_sqlite_transaction(session: Session) -> None:
    """On SQLite, hold the write lock before our first read.

    pysqlite's legacy transaction handling opens no transaction before a SAVEPOINT (its
    RELEASE would commit our rows past the host's rollback), and a transaction that
    reads first and writes later fails at once ("database is locked") when another
    connection committed in between — the host's own commit would then fail because of
    our reads. So: no transaction yet → ``BEGIN IMMEDIATE``; a transaction that holds no
    write lock yet → take it with a write that changes nothing. Both wait for another
    writer (the busy timeout) as the host's own first write would."""
    conn = session.connection(bind_arguments={"mapper": Message})
    if conn.dialect.name != "sqlite":
        return
    driver = conn.connection.driver_connection
    if driver is not None and not getattr(driver, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("UPDATE sms_message SET id = id WHERE 0")


def _our_part(session: Session) -> contextlib.AbstractContextManager[Any]:
    """Where an event's statements run in the host's transaction: a SAVEPOINT, so that an
    error of ours undoes our rows only and leaves the host's transaction usable (on the
    driver's cursor when ``direct`` may send the statements, else the Session's).

    Not on SQLite: there a failed statement undoes itself and leaves the transaction as
    it was, our reads change nothing and our one write is one statement
    (``outbox.insert_new``), so the SAVEPOINT and its RELEASE would be two statements
    for nothing. (The errors after which SQLite rolls back the whole transaction — a
    full disk, I/O — are ``aborts_host_transaction``'s, with or without a SAVEPOINT.)"""
    conn = session.connection(bind_arguments={"mapper": Message})
    if conn.dialect.name == "sqlite":
        return contextlib.nullcontext()
    if direct.usable(conn):
        return direct.savepoint(conn)
    return session.begin_nested()


# Errors after which the database has rolled back (or lost) the host's whole transaction:
# the host must find out at its commit, exactly as it would without us.
_MYSQL_ABORTS = {1213, 1305, 1180, 1181, 2006, 2013, 1927, 4031}  # deadlock, savepoint gone…
# (A PostgreSQL deadlock inside our SAVEPOINT is undone by ROLLBACK TO SAVEPOINT: only a
# transaction left aborted (25P02) or a lost server counts.)
_PG_ABORTS = {"25P02", "57P01", "57P02", "57P03"}
_SQLITE_ABORTS = {5, 6, 7, 8, 10, 11, 13}  # busy, locked, nomem, readonly, ioerr, corrupt, full


def _aborts(e: DBAPIError) -> bool:
    if e.connection_invalidated:
        return True
    orig = e.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_ABORTS:
        return True
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str) and (sqlstate in _PG_ABORTS or sqlstate.startswith("08")):
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_ABORTS


def aborts_host_transaction(exc: BaseException) -> BaseException | None:
    """The error that shows the database aborted the host's transaction — a deadlock
    victim, a lost connection, a full disk — rather than a problem of ours inside our
    SAVEPOINT; None otherwise. Of a chain (a deadlock, then "SAVEPOINT does not exist"
    while undoing ours) it is the first cause, the one a host's retry logic knows."""
    found: BaseException | None = None
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DBAPIError) and _aborts(e):
            found = e
        e = e.__cause__ or e.__context__
    return found


def _fail_host_commit(session: Session, exc: BaseException) -> None:
    """Make the host's ``commit()`` raise ``exc`` (its rollback clears this): a
    transaction the database aborted must never look committed."""
    session.info["erp_sms_aborted"] = exc
    if session.info.get("erp_sms_guard"):
        return
    session.info["erp_sms_guard"] = True

    def before_commit(sess: Session) -> None:
        aborted = sess.info.get("erp_sms_aborted")
        if aborted is not None:
            raise aborted

    def after_rollback(sess: Session, _previous: object = None) -> None:
        sess.info.pop("erp_sms_aborted", None)

    event.listen(session, "before_commit", before_commit)
    event.listen(session, "after_soft_rollback", after_rollback)


def _is_mapped(obj: Any) -> bool:
    return hasattr(obj, "_sa_instance_state")


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
        info = PlanInfo()
        new = _plan(event, order, session, kwargs, info, draft=draft)
        if send_at is not None:
            _schedule(new, send_at)
        _apply_window(event, new, info)
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


_COLUMNS = [c.key for c in message_table.columns if c.key != "id"]


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


def _row(msg: Message) -> dict[str, Any]:
    values = msg.__dict__  # the instance's own values (no attribute descriptor per column)
    return {k: values.get(k) for k in _COLUMNS}


_new_instance = manager_of_class(Message).new_instance
_MAPPER = inspect(Message)


def _new_message(base: Mapping[str, Any], key: str, status: str, reason: str | None) -> Message:
    """A planned row as an unattached ``Message``. Built the way the ORM builds an object
    it loads (values straight into the instance's dict): the declarative constructor's
    event per attribute cost ~35 µs a row, a tenth of an event with five contacts. The
    object behaves as any transient one (attributes set later are tracked as usual)."""
    if not _MAPPER.configured:  # the constructor would configure; this way does not
        configure_mappers()
    now = utcnow()
    msg = _new_instance()
    msg.__dict__.update(
        base,
        idempotency_key=key,
        status=status,
        reason=reason,
        created_at=now,
        updated_at=now,
        attempts=0,
        maybe_sent=False,
        send_window=False,
        body="",
        # No history row at creation: the message row itself is the first entry of its
        # timeline (created_at, initial status, reason); history holds the changes.
        next_attempt_at=now if status == Status.QUEUED else None,
    )
    return msg


def _sender_context(phone: str | None) -> dict[str, str]:
    if not phone:
        return {"phone_number": ""}
    try:
        num = phonenumbers.parse(phone, "US")
        fmt = phonenumbers.PhoneNumberFormat.NATIONAL
        return {"phone_number": phonenumbers.format_number(num, fmt), "e164": phone}
    except phonenumbers.NumberParseException:
        return {"phone_number": phone}


@dataclass(frozen=True)
class Draft:
    """What staff give the planner instead of what an event has: a template's text not
    saved yet (a preview) or typed for one contact (a one-off text), and the subject to
    use when the order has none of its own (sample data, a one-off's own key)."""

    source: str | None = None
    subject: tuple[str, Mapping[str, Any]] | None = None


def _plan(
    event: EventType,
    order: Any,
    session: Session,
    kwargs: Mapping[str, Any],
    info: PlanInfo | None = None,
    *,
    draft: Draft | None = None,
) -> list[Message]:
    """The rows of one event: a text per contact to text, and an entry with the reason
    for every contact (or order) that cannot be texted. ``draft``: staff's unsaved text
    or subject (previews and one-off texts plan with this same code)."""
    info = info if info is not None else PlanInfo()
    draft = draft or Draft()
    lookup = event.lookup or default_lookup()
    view: OrderView = lookup.order(session, order)
    base: dict[str, Any] = {
        "event": event.name,
        "template": event.template,
        "order_ref": view.key,
        "order_number": view.number,
        "organization_name": view.organization_name,
    }
    subject_ref: str | None = None
    subject_ctx: Mapping[str, Any] = {}
    if draft.subject is not None:
        subject_ref, subject_ctx = draft.subject
    elif event.subject:
        obj = kwargs.get(event.subject)
        if obj is None:
            key = idempotency_key(event.name, view.key, None, None)
            what = event.subject.replace("_", " ")
            reason = (
                f"{event.name} was fired without {event.subject}=: pass the {what} to "
                f"signal.send() so the text can name it"
            )
            return [_new_message(base, key, Status.FAILED, reason)]
        subject_ref, subject_ctx = lookup.subject(event.subject, obj)
    base["subject_ref"] = subject_ref
    info.view, info.subject_ref = view, subject_ref

    # SMSONLYONE decides which contacts the lookup returns, so it is known before the
    # settings are read: this process's last reading of it. The settings (SMSONLYONE, the
    # TWILIO routing, the template's override) then come in one statement with the
    # opt-outs of the contacts' numbers — always current; when SMSONLYONE has changed
    # since, the contacts are asked again (once, right after staff flip it).
    only_one = _last_read.only_one
    decisions = select_recipients(
        view, lookup.contacts(session, order, listed_only=only_one), only_listed=only_one
    )
    region = get_settings().default_region
    addresses = _classify_all(decisions, region)
    numbers = [a.e164 for a in addresses.values() if isinstance(a, Address)]
    stored_only_one, active, sender_phone, override, blocked = _settings_and_opt_outs(
        session, event.template, numbers, info
    )
    if (options.value_from("SMSONLYONE", stored_only_one) == "on") != only_one:
        only_one = not only_one
        _last_read.only_one = only_one
        decisions = select_recipients(
            view, lookup.contacts(session, order, listed_only=only_one), only_listed=only_one
        )
        addresses = _classify_all(decisions, region)
        numbers = [a.e164 for a in addresses.values() if isinstance(a, Address)]
        blocked = consent.opted_out(session, numbers)
    twilio_active = bool(active)
    source: str | None = None
    template_error: str | None = None
    try:
        source = draft.source or templates.source_from(event.template, override).source
    except TemplateError as exc:
        template_error = exc.message
    sender_ctx = {**_sender_context(sender_phone), "name": info.company}
    context: dict[str, Any] = {"order": view.context, "sender": sender_ctx}
    if event.subject:
        context[event.subject] = subject_ctx
    if info.collect:
        info.context = context
    keep = wording.keep_from(context)  # what shortening a too-long text must not cut
    # A template that names no ``contact`` reads the same for every contact: rendered
    # and finished once per channel (the packaged templates are all like that).
    same_for_all = source is not None and not templates.refers_to(source, "contact")
    finished: dict[str | None, wording.Finished] = {}

    out = []
    for i, d in enumerate(decisions):
        contact: ContactView | None = d.contact
        key = idempotency_key(event.name, view.key, subject_ref, contact.key if contact else None)
        if contact is None:
            out.append(_skip(info, base, key, Status.SKIPPED, d.skip_reason))
            continue
        who = {
            "contact_ref": contact.key,
            "contact_name": contact.name,
            "raw_address": contact.address,
        }
        if d.skip_reason:
            out.append(_skip(info, {**base, **who}, key, Status.SKIPPED, d.skip_reason))
            continue
        address = addresses[i]
        if not isinstance(address, Address):
            out.append(_skip(info, {**base, **who}, key, Status.SKIPPED, address))
            continue
        r = route(address, twilio_active)
        who |= {"channel": r.channel, "address": r.address, "recipient": address.e164}
        who["sender"] = info.sender
        if r.channel is None:
            out.append(_skip(info, {**base, **who}, key, Status.SKIPPED, r.reason))
            continue
        if address.e164 in blocked:
            # Numbers on the opt-out list get nothing.
            reason = consent.describe(blocked[address.e164])
            out.append(_skip(info, {**base, **who}, key, Status.SKIPPED, reason))
            continue
        if info.collect:
            info.contacts.append({**who, "status": Status.QUEUED, "context": dict(contact.context)})
        if template_error or source is None:
            out.append(_new_message({**base, **who}, key, Status.FAILED, template_error))
            continue
        try:
            done = finished.get(r.channel) if same_for_all else None
            if done is None:
                rendered = templates.render(
                    source, {**context, "contact": contact.context}, event.template
                )
                done = wording.finish(rendered.body, r.channel, info.rules, keep)
                if same_for_all:
                    finished[r.channel] = done
        except TemplateError as exc:
            out.append(_new_message({**base, **who}, key, Status.FAILED, exc.message))
            continue
        except wording.NotSendable as exc:
            out.append(_new_message({**base, **who}, key, exc.status, exc.reason))
            continue
        msg = _new_message({**base, **who}, key, Status.QUEUED, None)
        msg.body, msg.encoding, msg.segments = done.body, done.encoding, done.segments
        out.append(msg)
    return out


def _skip(
    info: PlanInfo, fields: Mapping[str, Any], key: str, status: str, reason: str | None
) -> Message:
    """A row that says why this contact (or the order) gets no text; noted in ``info``."""
    if info.collect:
        who = {k: fields.get(k) for k in CONTACT_FIELDS}
        info.contacts.append({**who, "status": status, "reason": reason})
    return _new_message(fields, key, status, reason)


# What a message row records of its contact and route (a sequence's run keeps it too).
CONTACT_FIELDS = (
    "contact_ref",
    "contact_name",
    "raw_address",
    "channel",
    "address",
    "recipient",
    "sender",
)


def _slots(count: int) -> int:
    """The opt-out read's number of slots for ``count`` numbers: the next power of two,
    so a handful of statements serve every organization (the spare slots hold "")."""
    slots = 1
    while slots < count:
        slots *= 2
    return slots


@functools.lru_cache(maxsize=256)
def _settings_statement(template: str, slots: int) -> Select[Any]:
    """The statement of ``_settings_and_opt_outs`` for ``slots`` numbers, built once per
    template and size: building it (a dozen subqueries and a join) cost more than
    running it. The numbers are ``slots`` plain parameters, not an expanding IN, so the
    statement's SQL is fixed (``direct`` sends it as compiled once)."""
    settings: tuple[Any, ...] = (
        options.value_query("SMSONLYONE"),
        *rule_records.routing_query(),
        templates.override_query(template),
        options.value_query("SMSSENDWINDOW"),
        options.value_query("SMSTIMEZONE"),
        options.value_query("SMSWINDOWEVENTS"),
        select(SenderMap.rule_type)
        .where(SenderMap.organization_ref == bindparam("org_ref"))
        .scalar_subquery(),
        options.value_query("SMSCOMPANYNAME"),
        *(options.value_query(name) for name in wording.OPTIONS),
    )
    opt_out = OptOut.__table__
    one = select(literal(1).label("one")).subquery()
    numbers = [bindparam(f"number_{i}", type_=opt_out.c.number.type) for i in range(slots)]
    return select(*settings, opt_out.c.number, opt_out.c.at, opt_out.c.source).select_from(
        one.outerjoin(opt_out, opt_out.c.number.in_(numbers))
    )


class _LastRead:
    """SMSONLYONE as this process last read it (see ``_plan``): a guess checked by every
    event, so a stale value costs one statement, never a wrong text."""

    only_one = False


_last_read = _LastRead()


def _classify_all(decisions: Sequence[Decision], region: str) -> dict[int, Address | str]:
    """The address of each decision that has a contact to text (or why it has none)."""
    out: dict[int, Address | str] = {}
    for i, d in enumerate(decisions):
        if d.contact is None or d.skip_reason:
            continue
        try:
            out[i] = classify(d.contact.address, region)
        except AddressError as exc:
            out[i] = exc.message
    return out


def _settings_and_opt_outs(
    session: Session, template: str, numbers: Sequence[str], info: PlanInfo
) -> tuple[str | None, bool | None, str | None, str | None, dict[str, Any]]:
    """SMSONLYONE, the TWILIO routing, the template override, the send-window options
    (into ``info``) and the opt-outs among ``numbers``, in one statement: one row of
    settings, joined with each opt-out."""
    wanted = sorted(set(numbers))
    slots = _slots(len(wanted))
    wanted += [""] * (slots - len(wanted))  # "" matches no opt-out: still one settings row
    conn = session.connection(bind_arguments={"mapper": Message})
    org_ref = (info.view.organization_key if info.view else None) or ""
    params: dict[str, Any] = {f"number_{i}": n for i, n in enumerate(wanted)}
    params["org_ref"] = org_ref
    rows = direct.rows(conn, _settings_statement(template, slots), params)
    first = rows[0]
    blocked = {r.number: r for r in rows if r.number is not None}
    info.window = options.value_from("SMSSENDWINDOW", first[4])
    info.zone = options.value_from("SMSTIMEZONE", first[5])
    info.window_events = options.value_from("SMSWINDOWEVENTS", first[6])
    info.company = options.value_from("SMSCOMPANYNAME", first[8])
    info.rules = wording.Rules.from_values(
        {name: options.value_from(name, first[9 + i]) for i, name in enumerate(wording.OPTIONS)}
    )
    active, phone = first[1], first[2]
    sender = first[7] or (info.view.sender if info.view else None)
    if sender and sender != rule_records.TWILIO:
        # A site's own number: its record decides the routing (one more statement, for
        # organizations mapped to a site only).
        info.sender = sender
        active, phone = rule_records.twilio_routing(session, sender)
    return first[0], active, phone, first[3], blocked


@dataclass
class PlanInfo:
    """What planning learned besides the rows: the send-window settings, and for a
    reminder sequence the contexts and each contact's route, decided before any
    template (a sequence renders several)."""

    window: str = "off"
    zone: str = "UTC"
    window_events: str = ""
    company: str = ""  # SMSCOMPANYNAME: the template's sender.name
    rules: wording.Rules = field(default_factory=wording.Rules)
    sender: str | None = None  # a site's TWILIO record (None: TWILIO)
    view: OrderView | None = None
    subject_ref: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    collect: bool = False  # fill ``context`` and ``contacts`` (sequences only)

    def windowed(self, event: EventType) -> bool:
        return event.send_window or event.name in self.window_events.split(",")


def _apply_window(event: EventType, new: Sequence[Message], info: PlanInfo) -> None:
    """When ``event`` keeps to the send window, its queued texts wait for the window's
    next opening in the recipient's local time (the reason says until when); the worker
    checks again when it claims them."""
    if not info.windowed(event):
        return

    now = clock()
    policy = Policy.from_options(info.window, info.zone)
    for m in new:
        if m.status != Status.QUEUED:
            continue
        m.send_window = True
        deferred = policy.deferral(m.recipient, max(m.next_attempt_at or now, now))
        if deferred is not None:
            m.next_attempt_at, m.reason = deferred


def _order_identity(event: EventType, order: Any, session: Session) -> tuple[str, str]:
    """(key, number) of the order an event was fired for, however the lookup fails."""
    try:
        view = (event.lookup or default_lookup()).order(session, order)
        return view.key, view.number
    except Exception:
        log.debug("erp-sms: the lookup cannot describe %r either", order, exc_info=True)
    for attr in ("id", "pk", "key", "number"):
        value = order.get(attr) if isinstance(order, Mapping) else getattr(order, attr, None)
        if value is not None:
            return str(value)[:64], str(getattr(order, "number", value))[:64]
    text = repr(order)
    return f"repr:{hashlib.sha256(text.encode()).hexdigest()[:32]}", text[:64]


def _record_failure(
    event: EventType, order: Any, session: Session, kwargs: Mapping[str, Any], exc: Exception
) -> None:
    """Leave a failed order-level row explaining what went wrong, in the host's
    transaction, when our tables can still be written."""
    try:
        order_ref, number = _order_identity(event, order, session)
        key = idempotency_key(event.name, order_ref, None, "!error")
        reason = f"erp-sms could not queue texts: {type(exc).__name__}: {exc}"[:2000]
        with session.begin_nested():
            base = {
                "event": event.name,
                "template": event.template,
                "order_ref": order_ref,
                "order_number": number,
                "organization_name": None,
            }
            insert_new(session, [_row(_new_message(base, key, Status.FAILED, reason))])
    except Exception as exc2:
        aborted = aborts_host_transaction(exc2)
        if aborted is not None:
            _fail_host_commit(session, aborted)
        log.exception("erp-sms: could not record the failure of %s either", event.name)


def preview(
    event: EventType,
    order: Any,
    session: Session,
    kwargs: Mapping[str, Any],
    draft: Draft,
) -> list[Message]:
    """What the event would queue for ``order`` now — the host path's own planning (who,
    which route, the opt-out list, the send window, the sender) with ``draft``'s text —
    written nowhere."""
    info = PlanInfo()
    planned = _plan(event, order, session, kwargs, info, draft=draft)
    _apply_window(event, planned, info)
    return planned


# -- one-off texts from staff -----------------------------------------------------------------


@dataclass(frozen=True)
class OneOff:
    """The "order" of a one-off text: the contact it is for, in the organization it is
    sent for (whose site number it goes out from)."""

    contact: ContactView
    organization_key: str


class _OneContact:
    """The recipient lookup of a one-off text: the one contact, as the listed contact of
    an order of its organization — so every rule of "Who gets a text" applies to it."""

    def order(self, session: Session, order: OneOff) -> OrderView:
        c = order.contact
        return OrderView(
            key=f"contact:{c.key}",
            number="",
            organization_key=order.organization_key,
            organization_name=None,
            sms_update=True,
            listed_contact_key=c.key,
        )

    def contacts(self, session: Session, order: OneOff, *, listed_only: bool) -> list[ContactView]:
        return [order.contact]


def text_contact(
    session: Session, contact: ContactView, organization_key: str, source: str, *, by: str
) -> Message:
    """Queue a one-off text from staff to ``contact`` (``source``: a template, rendered
    with the contact and sender), planned and logged like any event's text: SMSUPDATE,
    the opt-out list, the address and route, the send window when SMSWINDOWEVENTS names
    ``staff_text``, the organization's sender. Returns the row (queued, or skipped or
    failed with the reason); its history names ``by``."""
    from dataclasses import replace

    event = replace(get_event(ONE_OFF_EVENT), lookup=_OneContact())  # type: ignore[arg-type]
    ref = f"one-off:{utcnow():%Y%m%d%H%M%S}:{secrets.token_hex(6)}"
    draft = Draft(source=source, subject=(ref, {}))
    planned = _notify(event, OneOff(contact, organization_key), session, {}, draft=draft)
    msg = session.scalars(
        select(Message).where(Message.idempotency_key == planned[0].idempotency_key)
    ).one()
    add_event(session, msg, kind="note", source="staff", detail=f"one-off text written by {by}")
    session.flush()
    return msg


RETRYABLE = (Status.SKIPPED, Status.FAILED, Status.UNDELIVERED)


def retried(msg: Message, carrier: Message) -> str:
    """What became of a retried text, in a sentence: ``carrier`` is the text that now
    carries it (``msg`` itself, or a new one when the provider had taken ``msg``)."""
    now = f"#{msg.id}" if carrier is msg else f"#{msg.id} sent again as #{carrier.id}:"
    if carrier.status == Status.QUEUED:
        return f"{now} queued ({carrier.channel} {carrier.address})"
    return f"{now} {'still ' if carrier is msg else ''}{carrier.status}: {carrier.reason}"


#: Plans a reminder step again (``sequences.retry_step``, handed in by the staff
#: actions: sequences build on this module, not the other way round).
StepRetry = Callable[[Session, Message, Any, Mapping[str, Any]], str]


def retry(
    session: Session, ids: list[int], *, by: str, step_retry: StepRetry | None = None
) -> list[tuple[Message, str]]:
    """``erp-sms messages retry``: plan skipped or failed texts again with today's data
    and rules (the same planning as the host path) — the contact, its address and
    consent, the routing, the template; a reminder step through ``step_retry``. Returns
    each message with a sentence on what became of it. ``InputError`` (nothing changed)
    for unknown ids or other statuses."""

    rows = require(session, ids, RETRYABLE, "retry")
    out = []
    for msg in rows:
        event = get_event(msg.event)
        if event.name == ONE_OFF_EVENT:
            raise InputError(
                f"cannot retry #{msg.id}: it is a one-off text; write it again on the "
                "contact's page or with `erp-sms contacts text`; nothing was changed"
            )
        lookup = event.lookup or default_lookup()
        purpose = "retry texts"
        order = lookup_method(lookup, "find_order", purpose)(session, msg.order_number)
        if order is None:
            raise InputError(
                f"cannot retry #{msg.id}: order {msg.order_number} no longer exists; nothing "
                "was changed"
            )
        if msg.step is not None and step_retry is not None:
            # A reminder step: its subject (the invoice) is the run's, as it was started.
            out.append((msg, step_retry(session, msg, order, {})))
            continue
        kwargs: dict[str, Any] = {}
        if event.subject and msg.subject_ref is not None:
            subjects = lookup_method(lookup, "subjects", purpose)(session, order, event.subject)
            match = [o for o in subjects if lookup.subject(event.subject, o)[0] == msg.subject_ref]
            if not match:
                what = event.subject.replace("_", " ")
                raise InputError(
                    f"cannot retry #{msg.id}: the {what} {msg.subject_ref} of order "
                    f"{msg.order_number} no longer exists; nothing was changed"
                )
            kwargs[event.subject] = match[-1]
        planned = {m.idempotency_key: m for m in _plan(event, order, session, kwargs)}
        again = planned.pop(msg.idempotency_key, None)
        if msg.contact_ref is None:
            # An order-level entry (nobody could be texted): the texts planned now replace it.
            new = add_planned(session, [m for m in planned.values() if m.contact_ref])
            if again is not None or not new:
                replace_plan(session, msg, again or msg, by=by)
                out.append((msg, f"#{msg.id} still {msg.status}: {msg.reason}"))
                continue
            ids_text = ", ".join(f"#{m.id} {m.status}" for m in new)
            reason = f"retried by {by}: replaced by {ids_text}"
            set_status(session, msg, Status.CANCELED, source=by, reason=reason)
            out.append((msg, f"#{msg.id} replaced by {ids_text}"))
            continue
        if again is None:
            msg.reason = (
                f"on retry by {by}: {msg.contact_name} is no longer among the order's recipients "
                "(opted out, unlinked or not listed)"
            )
            replace_plan(session, msg, msg, by=by)
            out.append((msg, f"#{msg.id} still {msg.status}: {msg.reason}"))
            continue
        out.append((msg, retried(msg, replace_plan(session, msg, again, by=by))))
    session.flush()
    return out


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
        classify("2125550100", get_settings().default_region)
        with engine.connect() as conn:
            # Each statement both ways: SQLAlchemy's compiled cache (taken when a host
            # listens to statement events) and ``direct``'s compiled form (otherwise).
            def read(stmt: Any, params: dict[str, Any]) -> None:
                conn.execute(stmt, params).all()
                direct.rows(conn, stmt, params)

            for ev in all_events():
                for slots in (1, 2, 4, 8):
                    numbers = {f"number_{i}": "" for i in range(slots)}
                    read(_settings_statement(ev.template, slots), numbers | {"org_ref": ""})
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
