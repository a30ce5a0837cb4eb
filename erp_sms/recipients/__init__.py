"""Who gets a text: the lookup a host implements (``RecipientLookup``, its views of an
order and a contact), the selection rules (SMSUPDATE, SMSONLYONE), and ``ErpLookup``, the
reference schema's lookup.

- ``lookup``: the protocol, the views, ``select_recipients``;
- ``reference``: ``ErpLookup`` on the reference tables (one statement per event);
- ``numbers``: phone numbers matched however they were typed;
- ``default``: the lookup in use (the host's, once it installs one).
"""

from __future__ import annotations

from .default import (
    default_lookup,
    lookup_installed,
    reset_default_lookup,
    set_default_lookup,
)
from .lookup import (
    ContactView,
    Decision,
    FindsOrders,
    FindsOrganizations,
    HasSamples,
    ListsGatewayContacts,
    ListsOpenOrders,
    ListsSubjects,
    OrderView,
    RecipientLookup,
    object_context,
    object_key,
    optional,
    select_recipients,
)
from .numbers import (
    number_filter,
    same_number,
)
from .reference import (
    ErpLookup,
    _opted_in_contacts,
    _organization_and_contacts,
)

__all__ = [
    "ContactView",
    "Decision",
    "ErpLookup",
    "FindsOrders",
    "FindsOrganizations",
    "HasSamples",
    "ListsGatewayContacts",
    "ListsOpenOrders",
    "ListsSubjects",
    "OrderView",
    "RecipientLookup",
    "_opted_in_contacts",
    "_organization_and_contacts",
    "default_lookup",
    "lookup_installed",
    "number_filter",
    "object_context",
    "object_key",
    "optional",
    "reset_default_lookup",
    "same_number",
    "select_recipients",
    "set_default_lookup",
]
