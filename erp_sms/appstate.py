"""erp-sms's state in a Flask app: the database and the settings the app was set up
with, in ``app.extensions`` (never on a blueprint). The webhooks and the staff pages
both read it; neither owns it."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from .config import Settings, get_settings
from .db import Database
from .host import load_host_module


@dataclass
class State:
    """What the webhooks and pages of one app share."""

    db: Database
    settings: Settings


def init_app(app: Flask, db: Database | None = None, settings: Settings | None = None) -> None:
    """Keep erp-sms's state in ``app.extensions``. Imports the host module
    (``ERP_SMS_HOST_MODULE``) first, so replies and opt-outs use the host's tables."""
    settings = settings or get_settings()
    load_host_module(settings)
    app.extensions["erp_sms"] = State(db or Database(settings.database_url), settings)


def state() -> State:
    """The state of the app handling the request."""
    found = current_app.extensions.get("erp_sms")
    if found is None:
        raise RuntimeError("erp_sms.webhooks.init_app(app) was not called")
    assert isinstance(found, State)
    return found
