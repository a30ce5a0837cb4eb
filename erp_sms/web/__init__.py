"""Staff web pages (Flask): the rule record, options, templates with a live preview, the
email log, timelines, replies, reminders and a dashboard — server-rendered, signed in,
CSRF on every form. Every action calls ``erp_sms.staff`` (or the module that owns the
rule), the same code as the CLI.

Mount them in a host's Flask app next to the webhooks::

    from erp_sms import web, webhooks
    webhooks.init_app(app)
    web.init_app(app)                                  # sign-in and CSRF
    app.register_blueprint(web.blueprint, url_prefix="/sms")

``erp-sms serve`` runs both under waitress (``erp_sms.webhooks.create_app``).
"""

from __future__ import annotations

# The page groups register their routes on the blueprint as they are imported.
from . import account, customers, dashboard, log, reminders, safety, settings_pages  # noqa: F401
from .base import blueprint, csrf, init_app, login_manager

__all__ = ["blueprint", "csrf", "init_app", "login_manager", "safety"]
