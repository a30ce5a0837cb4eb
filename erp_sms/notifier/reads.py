"""What the planner reads for an event in one statement: its options, the opt-out list
for the recipients' numbers, the sender's number; the addresses classified once."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, bindparam, literal, select
from sqlalchemy.orm import Session

from .. import consent, direct, erased, links, options, rule_records, templates, wording
from ..addresses import Address, classify
from ..config import get_settings
from ..errors import AddressError
from ..events import EventType
from ..models import Message, SenderMap
from ..recipients import (
    Decision,
    OrderView,
)

log = logging.getLogger(__name__)


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
        options.value_query("SMSDIGESTMINUTES"),
        # Whether any erased number's opt-out is kept: only then are hashes looked up.
        erased.any_query().label("erased_any"),
    )
    one = select(literal(1).label("one")).subquery()
    blocking = consent.blocking_query(bindparam("program")).subquery("blocking")
    numbers = [bindparam(f"number_{i}", type_=blocking.c.number.type) for i in range(slots)]
    columns = (blocking.c.number, blocking.c.at, blocking.c.source, blocking.c.program)
    return select(*settings, *columns).select_from(
        one.outerjoin(blocking, blocking.c.number.in_(numbers))
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
    session: Session, template: str, numbers: Sequence[str], info: PlanInfo, program: str
) -> tuple[str | None, bool | None, str | None, str | None, dict[str, Any]]:
    """SMSONLYONE, the TWILIO routing, the template override, the send-window options
    (into ``info``) and the opt-outs among ``numbers`` that stop a text of ``program``
    (of every program, and of that one), in one statement: one row of settings, joined
    with each opt-out."""
    conn = session.connection(bind_arguments={"mapper": Message})
    wanted = sorted(set(numbers))
    slots = _slots(len(wanted))
    wanted += [""] * (slots - len(wanted))  # "" matches no opt-out: still one settings row
    org_ref = (info.view.organization_key if info.view else None) or ""
    params: dict[str, Any] = {f"number_{i}": n for i, n in enumerate(wanted)}
    params["org_ref"] = org_ref
    params["program"] = program
    rows = direct.rows(conn, _settings_statement(template, slots), params)
    first = rows[0]
    blocked: dict[str, Any] = {r.number: r for r in rows if r.number is not None}
    if first.erased_any:  # an erased contact's opt-out, kept as its number's hash (rare)
        rest = [n for n in numbers if n and n not in blocked]
        blocked.update(erased.blocking(conn, rest, program))
    info.window = options.value_from("SMSSENDWINDOW", first[4])
    info.zone = options.value_from("SMSTIMEZONE", first[5])
    info.window_events = options.value_from("SMSWINDOWEVENTS", first[6])
    info.company = options.value_from("SMSCOMPANYNAME", first[8])
    info.rules = wording.Rules.from_values(
        {name: options.value_from(name, first[9 + i]) for i, name in enumerate(wording.OPTIONS)},
        links.base(get_settings()),
    )
    info.digest_minutes = int(
        options.value_from("SMSDIGESTMINUTES", first[9 + len(wording.OPTIONS)])
    )
    active, phone = first[1], first[2]
    view = info.view
    sender = (view.sender if view and view.sender_fixed else first[7]) or (
        view.sender if view else None
    )
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
    collect: bool = False  # fill ``contacts`` (sequences only)
    # For folding an order's texts (``fold``): SMSDIGESTMINUTES, whether the host
    # scheduled the texts (``send_at=``, never folded), the template's source and each
    # queued text's contact (by the text's key), to render a carrier's words again.
    digest_minutes: int = 0
    scheduled: bool = False
    source: str | None = None
    contact_contexts: dict[str, Any] = field(default_factory=dict)

    def windowed(self, event: EventType) -> bool:
        return event.send_window or event.name in self.window_events.split(",")
