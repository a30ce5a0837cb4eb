"""Dispatch: claim due messages, send them outside any transaction, record the outcome.

``Dispatcher.run_once()`` delivers what is due and returns a summary (``erp-sms
dispatch``); ``Dispatcher.run_forever()`` keeps going until asked to stop (``erp-sms
worker``, SIGTERM/SIGINT), finishing the message in hand and handing back the rest.

- ``worker``: the loop (claims, lanes, leases); ``send``: each handover and its outcome;
- ``recorder``: outcomes written in groups; ``lanes``: a channel's threads;
- ``policy``: retry policy, summary, worker name, the adaptive window.
"""

from __future__ import annotations

from .policy import RetryPolicy, Summary, Window, default_worker_id
from .recorder import THROTTLED_IN_HAND
from .worker import Dispatcher

__all__ = [
    "THROTTLED_IN_HAND",
    "Dispatcher",
    "RetryPolicy",
    "Summary",
    "Window",
    "default_worker_id",
]
