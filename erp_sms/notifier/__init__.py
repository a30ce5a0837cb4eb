"""The host path: an event's receiver plans its texts and queues them in the host's own
transaction, never raising for erp-sms's own problems.

- ``receiver``: the signal's receiver, ``notify``, scheduling, warm-up;
- ``transaction``: our part of the host's transaction (a SAVEPOINT), and what aborts it;
- ``plan``: who gets which text, over which route, with which words (the planner);
- ``reads``: the settings, opt-outs and contacts the planner reads in one statement;
- ``fold``: an order's texts to one contact folded into one (SMSDIGESTMINUTES);
- ``staff_texts``: staff's one-off texts and retries, planned the same way.
"""

from __future__ import annotations

from .fold import folded_sample, lists_for
from .plan import (
    _COLUMNS,
    Draft,
    _new_message,
    _plan,
    _row,
    idempotency_key,
    preview,
)
from .reads import (
    CONTACT_FIELDS,
    PlanInfo,
    _settings_statement,
)
from .receiver import (
    connect,
    notify,
    texts_queued,
    warm_up,
)
from .staff_texts import (
    RETRYABLE,
    OneOff,
    StepRetry,
    retried,
    retry,
    text_contact,
)
from .transaction import (
    Work,
    _begin_sqlite_transaction,
    _our_part,
    aborts_host_transaction,
    guarded,
)

__all__ = [
    "CONTACT_FIELDS",
    "RETRYABLE",
    "_COLUMNS",
    "Draft",
    "OneOff",
    "PlanInfo",
    "StepRetry",
    "Work",
    "_begin_sqlite_transaction",
    "_new_message",
    "_our_part",
    "_plan",
    "_row",
    "_settings_statement",
    "aborts_host_transaction",
    "connect",
    "folded_sample",
    "guarded",
    "idempotency_key",
    "lists_for",
    "notify",
    "preview",
    "retried",
    "retry",
    "text_contact",
    "texts_queued",
    "warm_up",
]
