"""One text per moment (SMSDIGESTMINUTES): an order's texts to one contact wait a few
minutes after the first of them, and the order's later events fold into the one still
waiting — a later stage supersedes an earlier one (sent to production < work order
complete < shipped < delivered, per shipping event), several work orders or shipments
are named together. The folded texts are kept in the log as ``merged``, naming the
message that carries them.

Reminders and one-off texts are never folded, nor texts the host scheduled
(``send_at=``): they have their own moments."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from .. import links, templates, wording
from ..config import get_settings
from ..errors import TemplateError
from ..events import EventType, get_event
from ..models import Message, Status
from ..outbox.fold import Carrier, CarrierChange, FoldRow, carriers, change_carriers, lock, save
from .reads import PlanInfo

log = logging.getLogger(__name__)

# The order's stages, in the order an order goes through them.
RANK = {
    "sent_to_production": 0,
    "work_order_completed": 1,
    "shipment_shipped": 2,
    "shipment_delivered": 3,
}
_SHIPPING_STAGE = {"shipment_shipped": "shipped", "shipment_delivered": "delivered"}


@dataclass(frozen=True)
class Carried:
    """What a window's text tells: the event whose template it uses, that event's own
    subject (the last one that happened), and the lists templates name them all with."""

    event: str
    subject_ref: str | None
    subject: Mapping[str, Any] | None
    work_orders: list[Mapping[str, Any]] = field(default_factory=list)
    shipping_events: list[Mapping[str, Any]] = field(default_factory=list)

    def context(self) -> dict[str, Any]:
        """The template variables it adds to the order, contact and sender."""
        ctx: dict[str, Any] = {
            "work_orders": self.work_orders,
            "shipping_events": self.shipping_events,
        }
        subject = get_event(self.event).subject
        if subject:
            ctx[subject] = self.subject or {}
        return ctx


def carried(items: Sequence[Mapping[str, Any]]) -> Carried:
    """What one text says for ``items`` (the folded events, in the order they happened:
    each with its ``event``, ``subject_ref`` and ``subject``). The latest stage wins;
    shipping events keep each their own latest stage (``stage``: shipped or delivered)."""
    top = max(RANK[i["event"]] for i in items)
    last = [i for i in items if RANK[i["event"]] == top][-1]
    if top < RANK["shipment_shipped"]:
        works = [i["subject"] for i in items if RANK[i["event"]] == top] if top else []
        return Carried(last["event"], last["subject_ref"], last["subject"], works, [])
    shipments: dict[str, tuple[int, dict[str, Any]]] = {}
    for i in items:
        rank = RANK[i["event"]]
        if rank < RANK["shipment_shipped"]:
            continue
        ref = str(i["subject_ref"])
        if ref not in shipments or rank >= shipments[ref][0]:
            stage = _SHIPPING_STAGE[i["event"]]
            shipments[ref] = (rank, {**i["subject"], "stage": stage})
    subject = shipments[str(last["subject_ref"])][1]
    return Carried(
        last["event"], last["subject_ref"], subject, [], [s for _, s in shipments.values()]
    )


def lists_for(event: str, subject: Mapping[str, Any] | None) -> dict[str, Any]:
    """The list variables of one order event's own text (empty for other events)."""
    if event not in RANK:
        return {}
    one = carried([{"event": event, "subject_ref": "1", "subject": dict(subject or {})}])
    return {"work_orders": one.work_orders, "shipping_events": one.shipping_events}


# What the template check folds together for an event's sample text (the editor shows it).
_SAMPLES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "work_order_completed": [
        ("work_order_completed", {"id": i, "number": f"WO-5821{i}", "status": "complete"})
        for i in (1, 2, 3)
    ],
    "shipment_shipped": [
        ("shipment_shipped", {"id": 1, "carrier": "UPS", "tracking_number": "1Z999AA10123456784"}),
        ("shipment_shipped", {"id": 2, "carrier": "FedEx", "tracking_number": "771234567890"}),
    ],
}
_SAMPLES["shipment_delivered"] = [
    *_SAMPLES["shipment_shipped"],
    *(("shipment_delivered", subject) for _, subject in _SAMPLES["shipment_shipped"]),
]


def folded_sample(event: str) -> dict[str, Any] | None:
    """The variables of a sample text that carries several of ``event``'s subjects (three
    work orders, two shipments), or None for an event that names one at most."""
    if event not in _SAMPLES:
        return None
    items = [
        {"event": e, "subject_ref": str(subject["id"]), "subject": subject}
        for e, subject in _SAMPLES[event]
    ]
    return carried(items).context()


def fold_key(order_ref: str, contact_ref: str) -> str:
    key = f"{order_ref}|{contact_ref}"
    return key if len(key) <= 255 else f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def apply(session: Session, event: EventType, new: Sequence[Message], info: PlanInfo) -> None:
    """Fold ``new`` (an event's rows, not yet written) into their order's waiting texts:
    a row whose contact has a text of this order still waiting becomes ``merged`` into
    it, and that text gets the words for everything it carries; any other queued row
    starts a window of its own and waits ``SMSDIGESTMINUTES``. Locks the fold rows in
    the host's transaction (see ``outbox.fold``): a bounded number of statements."""
    if info.digest_minutes <= 0 or event.name not in RANK or info.scheduled:
        return
    rows = [m for m in new if m.status == Status.QUEUED and m.contact_ref is not None]
    if not rows:
        return
    now = rows[0].created_at
    items: dict[str, dict[str, Any]] = {}
    wanted: dict[str, tuple[str, dict[str, Any]]] = {}
    for m in rows:
        # Nothing of the contact in it: the fold rows of an order's contacts read alike
        # and are written back with one statement (``outbox.fold.save``).
        item = {
            "ref": f"{event.name}|{m.subject_ref or '-'}",
            "event": event.name,
            "subject_ref": m.subject_ref,
            "subject": dict(info.context.get(event.subject, {})) if event.subject else {},
            "window": 0,  # a fold row's texts: one window after another
            "at": now.isoformat(),
        }
        items[m.idempotency_key] = item
        wanted[fold_key(m.order_ref, str(m.contact_ref))] = (m.idempotency_key, item)
    folds = lock(session, wanted, uuid.uuid4().hex)
    older = [f.carrier_key for f in folds.values() if not f.fresh and f.carrier_key]
    # An event fired again finds its row in the log (also from before folding was on, or
    # not folded: skipped then); the insert leaves it alone, and so does the fold.
    found, logged = carriers(session, older, [m.idempotency_key for m in rows])
    changes: list[CarrierChange] = []
    saves: list[tuple[str, str | None, list[dict[str, Any]]]] = []
    words: dict[Any, Any] = {}  # what the contacts' alike folds share, made once
    for m in rows:
        key = fold_key(m.order_ref, str(m.contact_ref))
        fold, item = folds.get(key), items[m.idempotency_key]
        if fold is None:  # not read back (no locking read here): it goes out on its own
            continue
        if m.idempotency_key in logged or (
            not fold.fresh and any(i.get("ref") == item["ref"] for i in fold.items)
        ):
            continue  # fired again (the fold row knows it first when that was concurrent)
        carrier = found.get(fold.carrier_key or "")
        if fold.fresh or carrier is None or not carrier.waiting:
            _wait(m, info)
            if not fold.fresh:  # a new window, carried by this text
                started = {**item, "window": fold.window + 1}
                saves.append((key, m.idempotency_key, [*fold.items, started]))
            continue
        item = {**item, "window": fold.window}
        change = _merge(session, event, m, item, fold, carrier, info, words)
        if change is not None:
            changes.append(change)
            saves.append((key, None, [*fold.items, item]))
    change_carriers(session, changes)
    save(session, saves)


def _wait(m: Message, info: PlanInfo) -> None:
    """A window's first text: it waits for the order's later events."""
    until = m.created_at + dt.timedelta(minutes=info.digest_minutes)
    if m.next_attempt_at is None or m.next_attempt_at < until:
        m.next_attempt_at = until
        m.reason = (
            f"waiting {info.digest_minutes} min for more updates of order {m.order_number} "
            "to fold into one text (SMSDIGESTMINUTES)"
        )


def _merge(
    session: Session,
    event: EventType,
    m: Message,
    item: dict[str, Any],
    fold: FoldRow,
    carrier: Carrier,
    info: PlanInfo,
    words: dict[Any, Any],
) -> CarrierChange | None:
    """Fold ``m`` into ``carrier``: the carrier's new words (when what it tells changes)
    and ``m`` merged. None when the folded text cannot be rendered: ``m`` then goes out
    on its own, as it would without folding."""
    told = words.get(("told", fold.raw, item["ref"]))  # the contacts' folds read alike
    if told is None:
        window = [i for i in fold.items if i.get("window") == fold.window]
        after = carried([*window, item])
        told = words[("told", fold.raw, item["ref"])] = (
            after,
            not window or after != carried(window),
        )
    after, changed = told
    values: dict[str, Any] = {}
    if changed:
        try:
            values = dict(_words(session, event, m, after, carrier, info, words))
        except (TemplateError, wording.NotSendable) as exc:
            reason = exc.message if isinstance(exc, TemplateError) else exc.reason
            log.warning("erp-sms: %s not folded into message %s: %s", m.event, carrier.id, reason)
            return None
    if m.send_window and not carrier.send_window:
        values["send_window"] = True
    if (
        m.next_attempt_at
        and carrier.next_attempt_at
        and m.next_attempt_at > carrier.next_attempt_at
    ):
        values["next_attempt_at"] = m.next_attempt_at  # the send window's opening
    m.status, m.reason = Status.MERGED, f"merged into message {carrier.id}"
    m.merged_into, m.next_attempt_at = carrier.id, None
    return CarrierChange(carrier.id, values)


def _words(
    session: Session,
    event: EventType,
    m: Message,
    what: Carried,
    carrier: Carrier,
    info: PlanInfo,
    words: dict[Any, Any],
) -> dict[str, Any]:
    """The carrier's text for everything it carries, rendered and finished for its
    channel as any text is (the template staff set for that event, the length rules).
    A template that names no ``contact`` reads the same for each contact's text: the
    words are made once per channel and fold (``words``)."""
    told = get_event(what.event)
    channel = carrier.channel or str(m.channel)
    if told.name == event.name and info.source is not None:
        source = info.source
    else:  # another event's template (once per event's fold)
        if ("template", told.template) not in words:
            words[("template", told.template)] = templates.load(session, told.template).source
        source = str(words[("template", told.template)])
    same = (
        None if templates.refers_to(source, "contact") else ("words", channel, source, repr(what))
    )
    if same is not None and same in words:
        return _own(dict(words[same]), m, carrier)
    context = {
        **info.context,
        **what.context(),
        "contact": info.contact_contexts.get(m.idempotency_key, {}),
    }
    rendered = templates.render(source, context, told.template)
    body, urls = links.shorten(get_settings(), rendered.body)
    done = wording.finish(body, channel, info.rules, wording.keep_from(context))
    values = {
        "body": done.body,
        "encoding": done.encoding,
        "segments": done.segments,
        "event": told.name,
        "template": told.template,
        "subject_ref": what.subject_ref,
        "link_urls": json.dumps(urls) if urls else None,
    }
    if same is not None:
        words[same] = values
    return _own(dict(values), m, carrier)


def _own(values: dict[str, Any], m: Message, carrier: Carrier) -> dict[str, Any]:
    """The words with the recipient's own opt-out link and the carrier's own short-link
    code (``links``), when they carry them."""
    settings = get_settings()
    body, mine = links.fill(settings, values["body"], m.recipient)
    if mine is not None:
        values["body"], values["link_token"] = body, mine
    body, code = links.fill_code(settings, values["body"], carrier.key)
    values["body"], values["link_code"] = body, code
    return values
