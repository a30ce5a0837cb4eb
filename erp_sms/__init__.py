"""erp-sms: text customers as their sales orders move.

``import erp_sms`` connects the receivers of the four order events in
``erp_sms.signals``; a host fires them with its own Session and the texts are queued in
its transaction. See docs/ (the documentation site).
"""

from __future__ import annotations

# First: `erp-sms worker` keeps a stop asked while it starts (see _early); nothing else.
from . import _early, signals  # noqa: F401
from .consent import opt_in, opt_out
from .errors import ErpSmsError
from .events import EventType, all_events, fire, get_event, register_builtin_events, register_event
from .inline import join_inline
from .notifier import warm_up
from .recipients import ContactView, OrderView, RecipientLookup, set_default_lookup
from .retention import erase_contact
from .sequences import Sequence, get_sequence, register_sequence
from .version import __version__ as __version__

register_builtin_events()

__all__ = [
    "ContactView",
    "ErpSmsError",
    "EventType",
    "OrderView",
    "RecipientLookup",
    "Sequence",
    "all_events",
    "erase_contact",
    "fire",
    "get_event",
    "get_sequence",
    "join_inline",
    "opt_in",
    "opt_out",
    "register_event",
    "register_sequence",
    "set_default_lookup",
    "signals",
    "warm_up",
]
