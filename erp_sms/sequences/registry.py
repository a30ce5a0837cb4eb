"""The sequences a host registered."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from typing import Any

from .. import templates
from ..codes import Program
from ..errors import InputError
from ..events import _NAME, EventType, add_sequence_event
from ..recipients import RecipientLookup
from .run import Sequence, Step

log = logging.getLogger(__name__)


# -- registry -------------------------------------------------------------------------------

_sequences: dict[str, Sequence] = {}


def register_sequence(
    name: str,
    *,
    subject: str | None,
    steps: Seq[tuple[int, str]],
    default_templates: Mapping[str, str] | None = None,
    lookup: RecipientLookup | None = None,
    sample_subject: Mapping[str, Any] | None = None,
) -> Sequence:
    """Register a reminder sequence: ``steps`` are ``(days, template)`` from an anchor
    date (negative = before it); ``default_templates`` the text of each template until
    staff change it. Registering the same name again with the same steps returns it."""
    if not _NAME.match(name):
        raise InputError(f"sequence name {name!r}: use lower-case letters, digits and _ (max 64)")
    parsed = []
    for i, item in enumerate(steps, start=1):
        try:
            days, template = item
            parsed.append(Step(i, int(days), str(template)))
        except (TypeError, ValueError):
            raise InputError(
                f"sequence {name}: step {i} must be (days, template), not {item!r}"
            ) from None
        if not template or len(template) > 64:
            raise InputError(f"sequence {name}: template names are 1 to 64 characters")
    existing = _sequences.get(name)
    if existing is not None:
        if existing.default_steps != tuple(parsed) or existing.subject != subject:
            raise InputError(f"sequence {name!r} is already registered with other steps")
        return existing
    for template, body in (default_templates or {}).items():
        templates.register_default(template, body)
    event = EventType(
        name=name,
        template=parsed[0].template if parsed else f"SMS {name.upper()}",
        signal=_no_signal(name),
        subject=subject,
        lookup=lookup,
        sample_subject=sample_subject,
        send_window=True,
        step_templates=tuple(dict.fromkeys(s.template for s in parsed)),
        program=Program.REMINDERS,
    )
    add_sequence_event(event)
    seq = Sequence(event, tuple(parsed))
    _sequences[name] = seq
    return seq


def _no_signal(name: str) -> Any:
    from blinker import NamedSignal

    return NamedSignal(f"erp_sms.sequence.{name}")  # never connected: start() plans


def get_sequence(name: str) -> Sequence:
    try:
        return _sequences[name]
    except KeyError:
        known = ", ".join(sorted(_sequences)) or "none registered (the host module registers them)"
        raise InputError(f"unknown sequence {name!r}; sequences: {known}") from None


def all_sequences() -> list[Sequence]:
    return list(_sequences.values())
