"""Reminder sequences (SMS dunning): steps N days from an anchor date (an invoice's due
date), each a template, sent in the customer's local send window.

``Sequence.start`` plans every step for the order's contacts at once, as queued texts
due at their step's time, and keeps what it planned so that staff's changes to the steps
can be planned again from it (``replan``) without the host. ``Sequence.stop`` cancels what
has not gone out.

- ``run``: a sequence, its steps, a run planned for a subject;
- ``replan``: steps planned again after staff's changes, a step retried;
- ``registry``: sequences registered by the host;
- ``edits``: staff's changes (steps, switches per organization, senders).
"""

from __future__ import annotations

from .edits import (
    find_organization,
    remove_step,
    set_step,
    switch,
    switches,
    upcoming,
)
from .registry import (
    all_sequences,
    get_sequence,
    register_sequence,
)
from .replan import (
    REPLANNABLE,
    replan,
    retry_step,
)
from .run import (
    NO_SUBJECT,
    Sequence,
    Step,
)

__all__ = [
    "NO_SUBJECT",
    "REPLANNABLE",
    "Sequence",
    "Step",
    "all_sequences",
    "find_organization",
    "get_sequence",
    "register_sequence",
    "remove_step",
    "replan",
    "retry_step",
    "set_step",
    "switch",
    "switches",
    "upcoming",
]
