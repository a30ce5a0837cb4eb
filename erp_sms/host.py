"""The host's integration module (``ERP_SMS_HOST_MODULE``): one configuration for every
entry point.

A host with tables of its own writes one importable module that installs its recipient
lookup (``erp_sms.set_default_lookup``) and registers its events and sequences. Every
entry point — each ``erp-sms`` command, the worker, ``erp-sms serve`` — calls
``load_host_module()`` first, so opt-outs, replies, previews and staff commands all use
the host's tables. With a host module configured, nothing falls back to the reference
tables: a module that installs no lookup is a configuration error.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

from .config import Settings, get_settings
from .errors import ConfigurationError

log = logging.getLogger(__name__)

_loaded: dict[str, ModuleType] = {}


def load_host_module(settings: Settings | None = None) -> ModuleType | None:
    """Import the configured host module once per process (None when none is set).

    Raises ``ConfigurationError`` with a sentence saying what to fix when the module
    cannot be imported or installs no recipient lookup."""
    from .recipients import lookup_installed

    name = (settings or get_settings()).host_module
    if not name:
        return None
    if name in _loaded:
        return _loaded[name]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigurationError(
                f"ERP_SMS_HOST_MODULE={name}: no such module; install the host package or "
                "fix the module path (e.g. myerp.sms_integration)"
            ) from None
        raise ConfigurationError(
            f"ERP_SMS_HOST_MODULE={name}: importing it failed: {exc}"
        ) from None
    except Exception as exc:
        raise ConfigurationError(
            f"ERP_SMS_HOST_MODULE={name}: importing it failed: {type(exc).__name__}: {exc}"
        ) from None
    if not lookup_installed():
        sys.modules.pop(name, None)
        raise ConfigurationError(
            f"ERP_SMS_HOST_MODULE={name} installs no recipient lookup: call "
            "erp_sms.set_default_lookup(YourLookup()) in it (docs/host-integration.md, 'A host "
            "with its own tables')"
        )
    _loaded[name] = module
    log.info("erp-sms: host module %s loaded", name)
    return module


def host_configured(settings: Settings | None = None) -> bool:
    """Whether a host module is configured (the reference tables are then not used)."""
    return bool((settings or get_settings()).host_module)


def unload_host_module() -> None:
    """Forget the loaded host module and its lookup (tests, or a host switching
    configuration in one process); registered events stay registered."""
    from .recipients import reset_default_lookup

    for name in list(_loaded):
        sys.modules.pop(name, None)
    _loaded.clear()
    reset_default_lookup()
