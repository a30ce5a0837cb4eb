"""What every page shares: the blueprint, sign-in and CSRF, the signed-in staff member
(name, zone, role), the guard every request passes (``safety``), and how an action's
outcome is flashed."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    flash,
    redirect,
    render_template,
    request,
)
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response as WResponse

from .. import appstate, templates, users
from ..config import get_settings
from ..db import Database
from ..errors import ErpSmsError
from . import safety

log = logging.getLogger(__name__)


blueprint = Blueprint(
    "erp_sms_pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/erp_sms",
)

PAGE_SIZE = 50

csrf = CSRFProtect()
login_manager = LoginManager()


class StaffMember(UserMixin):  # type: ignore[misc]
    """The signed-in staff member, as Flask-Login keeps them: id and session token, the
    time zone the pages show them and their role (read again on every request)."""

    def __init__(self, ident: str, name: str, zone: str | None, role: str) -> None:
        self.id, self.name, self.zone, self.role = ident, name, zone, role

    def get_id(self) -> str:
        return str(self.id)


@login_manager.user_loader  # type: ignore[untyped-decorator]
def _load_user(user_id: str) -> StaffMember | None:
    with database().read_session() as s:
        user = users.by_session_token(s, user_id)
        return StaffMember(user_id, user.name, user.time_zone, user.role) if user else None


def init_app(app: Flask) -> None:
    """Sign-in and CSRF for the pages (call after ``webhooks.init_app``). The webhooks
    stay signature-checked, never sign-in or CSRF checked."""
    # The settings the app was set up with (webhooks.init_app), as every entry point.
    state = app.extensions.get("erp_sms")
    settings = getattr(state, "settings", None) or get_settings()
    if not app.secret_key:
        # Sessions are signed with ERP_SMS_SECRET_KEY; without it, a key for this process
        # (staff sign in again after a restart).
        app.secret_key = settings.secret_key or secrets.token_hex(32)
    # Flask defines these keys (SameSite as None), so setdefault would never apply: a
    # host's own stricter choice is kept, an unset one becomes ours.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if app.config.get("SESSION_COOKIE_SAMESITE") not in ("Lax", "Strict"):
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if (settings.public_url or "").lower().startswith("https://"):
        # Behind a proxy the app sees http: the public URL says what the browser sees.
        app.config["SESSION_COOKIE_SECURE"] = True
        app.config["REMEMBER_COOKIE_SECURE"] = True
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the session's lifetime
    csrf.init_app(app)  # the webhooks' blueprint exempts itself (erp_sms.webhooks)
    login_manager.init_app(app)
    login_manager.login_view = "erp_sms_pages.sign_in"
    login_manager.login_message = "Sign in to see that page."


def database() -> Database:
    return appstate.state().db


def who() -> str:
    return str(getattr(current_user, "name", "staff"))


def _zone_name() -> str:
    """The signed-in staff member's zone, else ERP_SMS_DEFAULT_TIMEZONE."""
    return getattr(current_user, "zone", None) or get_settings().default_timezone


def _zone() -> ZoneInfo:
    return ZoneInfo(_zone_name())


@blueprint.app_template_filter("local")
def _local(value: dt.datetime | str | None) -> str:
    """A UTC time in the staff member's zone."""
    if not value:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return f"{value.astimezone(_zone()):%Y-%m-%d %H:%M}"


def _may(needed: str) -> bool:
    """Whether the signed-in staff member's role allows what needs ``needed``."""
    return users.may(getattr(current_user, "role", None), needed)


@blueprint.app_context_processor
def _globals() -> dict[str, Any]:
    return {
        "staff_zone": _zone_name(),
        "who": who(),
        "may": _may,
        "max_template": templates.MAX_SOURCE,
    }


@blueprint.before_request
def _guard() -> tuple[str, int] | None:
    """Every request of the pages, in one place: input no database takes, then the role
    the endpoint needs (``safety.ACTIONS``). A refused action changes nothing."""
    bad = safety.unreadable_input()
    if bad:
        return render_template("erp_sms/error.html", message=bad), 400
    why = safety.refused()
    if why:
        log.warning("%s refused %s %s: %s", who(), request.method, request.path, why)
        return render_template("erp_sms/error.html", message=why), 403
    return None


blueprint.after_request(safety.add_headers)


@blueprint.errorhandler(RequestEntityTooLarge)
def _too_large(exc: RequestEntityTooLarge) -> tuple[str, int]:
    limit = request.max_content_length or 0
    return render_template(
        "erp_sms/error.html",
        message=f"That form is larger than the {limit // 1024} kB the pages take: nothing "
        "was saved. Go back (your browser keeps what you typed) and shorten it.",
    ), 413


def act(done: Callable[[Session], list[str] | str], back: str) -> WResponse:
    """Run a staff action, flash its outcome (or its one-line error), go back."""
    try:
        with database().session() as s:
            out = done(s)
        for line in [out] if isinstance(out, str) else out:
            flash(line, "ok")
    except ErpSmsError as exc:
        flash(exc.message, "error")
    return redirect(back)


@blueprint.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> tuple[str, int]:
    return render_template("erp_sms/error.html", message=f"{exc.description} Reload the page."), 400
