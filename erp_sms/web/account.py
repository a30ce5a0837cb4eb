"""Signing in and out, and the staff member's own account (time zone, role)."""

from __future__ import annotations

import logging
from typing import Any

from flask import (
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import (
    current_user,
    login_required,
    login_user,
    logout_user,
)
from werkzeug.wrappers import Response as WResponse

from .. import users
from ..config import get_settings
from . import safety
from .base import StaffMember, act, blueprint, database, who

log = logging.getLogger(__name__)

# -- sign-in ----------------------------------------------------------------------------------


@blueprint.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    error = None
    if request.method == "POST":
        outcome = users.authenticate(
            database(), request.form.get("name", ""), request.form.get("password", "")
        )
        if (user := outcome.user) is not None:
            login_user(
                StaffMember(f"{user.id}:{user.session_token}", user.name, user.time_zone, user.role)
            )
            log.info("staff %s signed in", user.name)
            return redirect(safety.same_site(request.args.get("next"), url_for(".dashboard")))
        error = outcome.error
        log.warning("sign-in refused for %r: %s", request.form.get("name", "")[:64], outcome.why)
    return render_template("erp_sms/sign_in.html", error=error), 401 if error else 200


@blueprint.post("/sign-out")
def sign_out() -> WResponse:
    logout_user()
    flash("Signed out.", "ok")
    return redirect(url_for(".sign_in"))


@blueprint.get("/account")
@login_required  # type: ignore[untyped-decorator]
def account() -> str:
    import zoneinfo

    zones = sorted(z for z in zoneinfo.available_timezones() if "/" in z)
    return render_template(
        "erp_sms/account.html",
        zones=zones,
        default=get_settings(),
        role_says=users.ROLE_SAYS.get(current_user.role, ""),
    )


@blueprint.post("/account")
@login_required  # type: ignore[untyped-decorator]
def account_save() -> WResponse:
    zone = request.form.get("zone", "")
    return act(
        lambda s: f"times are shown in {users.set_time_zone(s, who(), zone)}",
        url_for(".account"),
    )
