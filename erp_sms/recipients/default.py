"""The lookup in use: the reference schema's until a host installs its own."""

from __future__ import annotations

from .. import addresses
from .lookup import RecipientLookup
from .reference import ErpLookup

_default_lookup: RecipientLookup = ErpLookup()
_installed = False


def default_lookup() -> RecipientLookup:
    return _default_lookup


def set_default_lookup(lookup: RecipientLookup) -> None:
    """Use the host's own lookup for every event that was not registered with one (and
    for replies, opt-outs, previews and staff commands)."""
    global _default_lookup, _installed
    _default_lookup = lookup
    _installed = True
    # Hints name the host's own field, not the reference schema's "Email 2".
    addresses.set_field_name(getattr(lookup, "address_field", None) or addresses.GENERIC_FIELD)


def reset_default_lookup() -> None:
    """Back to the reference schema's lookup, as before any ``set_default_lookup``."""
    global _default_lookup, _installed
    _default_lookup, _installed = ErpLookup(), False
    addresses.set_field_name(addresses.REFERENCE_FIELD)


def lookup_installed() -> bool:
    """Whether a host installed its lookup with ``set_default_lookup``."""
    return _installed
