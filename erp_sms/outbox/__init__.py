"""The outbox, which is also the email log: every statement that creates, claims or
updates message rows lives in this package — the only writer of message rows.

- ``values``: what a claim hands out and an outcome says (``Claimed``, ``Outcome``);
- ``write``: new rows, from the host path and staff (``insert_new``, ``host_insert``, ``add_planned``);
- ``claim``: due rows taken for sending under a lease (procrastinate's model);
- ``record``: outcomes written back, in groups, conditional on still holding the claim;
- ``callbacks``: provider status reports attached to their rows, also those that came first;
- ``changes``: staff's and the planner's changes (release, cancel, opt-out, retry).

Claims follow the procrastinate model: one short transaction selects due rows
(``FOR UPDATE SKIP LOCKED`` where the database has it; SQLite renders no FOR UPDATE) and
moves them to ``sending`` in one UPDATE that takes only rows still due and stamps them
with a token: the rows that carry the token are the claim. The send happens outside any
transaction; a second short transaction records the outcome, again conditional on still
holding the claim. A claim carries a lease: a row left in ``sending`` by a dead worker is
claimed again after it.
"""

from __future__ import annotations

from .callbacks import (
    adopt_callbacks,
    apply_callback,
    set_price,
)
from .changes import (
    apply_plan,
    cancel,
    cancel_for_opt_out,
    held_count,
    pause,
    release,
    release_channel,
    release_ready,
    replace_plan,
    require,
)
from .claim import (
    CLAIM_TRIES,
    claim_due,
    confirm_claim,
    renew_leases,
)
from .record import (
    finish,
    finish_many,
    finish_many_at_once,
)
from .values import (
    Claimed,
    Outcome,
    add_event,
    new_token,
    set_status,
)
from .write import (
    _one_statement,
    add_planned,
    existing_keys,
    find,
    host_insert,
    insert_new,
    insert_or_ignore_run,
)

__all__ = [
    "CLAIM_TRIES",
    "Claimed",
    "Outcome",
    "_one_statement",
    "add_event",
    "add_planned",
    "adopt_callbacks",
    "apply_callback",
    "apply_plan",
    "cancel",
    "cancel_for_opt_out",
    "claim_due",
    "confirm_claim",
    "existing_keys",
    "find",
    "finish",
    "finish_many",
    "finish_many_at_once",
    "held_count",
    "host_insert",
    "insert_new",
    "insert_or_ignore_run",
    "new_token",
    "pause",
    "release",
    "release_channel",
    "release_ready",
    "renew_leases",
    "replace_plan",
    "require",
    "set_price",
    "set_status",
]
