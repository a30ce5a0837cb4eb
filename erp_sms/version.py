"""The installed version (``erp-sms --version``, the worker's heartbeat row)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("erp-sms")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
