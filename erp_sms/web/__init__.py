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

import datetime as dt
import io
import logging
import secrets
import tempfile
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response as WResponse

from .. import appstate, customers, report, rule_records, sequences, staff, templates, users
from ..config import get_settings
from ..db import Database
from ..errors import ErpSmsError, InputError
from ..models import Channel, InboundMessage, Message, RuleAudit, Status
from ..recipients import default_lookup
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


class _Staff(UserMixin):  # type: ignore[misc]
    """The signed-in staff member, as Flask-Login keeps them: id and session token, the
    time zone the pages show them and their role (read again on every request)."""

    def __init__(self, ident: str, name: str, zone: str | None, role: str) -> None:
        self.id, self.name, self.zone, self.role = ident, name, zone, role

    def get_id(self) -> str:
        return str(self.id)


@login_manager.user_loader  # type: ignore[untyped-decorator]
def _load_user(user_id: str) -> _Staff | None:
    with _db().read_session() as s:
        user = users.by_session_token(s, user_id)
        return _Staff(user_id, user.name, user.time_zone, user.role) if user else None


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


def _db() -> Database:
    return appstate.state().db


def _who() -> str:
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
        "who": _who(),
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
        log.warning("%s refused %s %s: %s", _who(), request.method, request.path, why)
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


def _act(done: Callable[[Session], list[str] | str], back: str) -> WResponse:
    """Run a staff action, flash its outcome (or its one-line error), go back."""
    try:
        with _db().session() as s:
            out = done(s)
        for line in [out] if isinstance(out, str) else out:
            flash(line, "ok")
    except ErpSmsError as exc:
        flash(exc.message, "error")
    return redirect(back)


@blueprint.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> tuple[str, int]:
    return render_template("erp_sms/error.html", message=f"{exc.description} Reload the page."), 400


# -- sign-in ----------------------------------------------------------------------------------


@blueprint.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    error = None
    if request.method == "POST":
        outcome = users.authenticate(
            _db(), request.form.get("name", ""), request.form.get("password", "")
        )
        if (user := outcome.user) is not None:
            login_user(
                _Staff(f"{user.id}:{user.session_token}", user.name, user.time_zone, user.role)
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
    return _act(
        lambda s: f"times are shown in {users.set_time_zone(s, _who(), zone)}",
        url_for(".account"),
    )


# -- dashboard --------------------------------------------------------------------------------


@blueprint.get("/")
@login_required  # type: ignore[untyped-decorator]
def dashboard() -> str:
    from . import charts

    today = dt.datetime.now(dt.UTC).date()
    days = [(today - dt.timedelta(days=i)).isoformat() for i in range(13, -1, -1)]
    since = dt.datetime.combine(today - dt.timedelta(days=13), dt.time(), dt.UTC)
    with _db().read_session() as s:
        day = func.date(Message.created_at)
        per_day = {
            (str(d)[:10], st): n
            for d, st, n in s.execute(
                select(day, Message.status, func.count())
                .where(Message.created_at >= since)
                .group_by(day, Message.status)
            )
        }
        by_channel = list(
            s.execute(
                select(Message.channel, Message.status, func.count())
                .where(Message.channel.is_not(None))
                .group_by(Message.channel, Message.status)
            )
        )
        # One expression object in both clauses: PostgreSQL matches GROUP BY to the
        # select list by its bound parameters, and two substr() calls bind two sets.
        reason = func.substr(Message.reason, 1, 60)
        reasons = list(
            s.execute(
                select(reason, func.count())
                .where(Message.status.in_([Status.FAILED, Status.UNDELIVERED]))
                .group_by(reason)
                .order_by(func.count().desc())
                .limit(8)
            )
        )
        held = s.scalar(select(func.count()).where(Message.status == Status.HELD)) or 0
        months = report.grouped(s, report.Filters(), "month")[-12:]
        replies = (
            s.scalar(
                select(func.count()).where(
                    InboundMessage.kind == "reply", InboundMessage.done_at.is_(None)
                )
            )
            or 0
        )
        sunset, sunset_error = _sunset_rows(s)
    rate_rows = _delivery_rates(by_channel)
    cost_rows = [(name, float(t.cost), f"{t.cost:.2f} {t.cost_unit}") for name, t in months]
    return render_template(
        "erp_sms/dashboard.html",
        per_day=charts.stacked_days(days, per_day),
        rate=charts.bars(rate_rows, unit="delivery rate by channel", maximum=1.0),
        failures=charts.bars([(r or "(none)", n, str(n)) for r, n in reasons], unit="failures"),
        cost=charts.bars(cost_rows, unit="cost by month"),
        held=held,
        replies=replies,
        sunset=sunset,
        sunset_error=sunset_error,
    )


def _delivery_rates(by_channel: list[Any]) -> list[tuple[str, float, str]]:
    """(channel, share delivered, in words) — a gateway never reports delivery, so its
    row says how many were handed over instead of a 0 % that reads as a failure."""
    rate: dict[str, list[int]] = {}
    for channel, status, n in by_channel:
        done = rate.setdefault(channel or "none", [0, 0])
        if status in (
            Status.DELIVERED,
            Status.READ,
            Status.UNDELIVERED,
            Status.FAILED,
            Status.SENT,
        ):
            done[1] += n
            if status in (Status.DELIVERED, Status.READ):
                done[0] += n
    rows = []
    for ch, (d, t) in sorted(rate.items()):
        if ch == Channel.EMAIL_GATEWAY:
            rows.append(
                ("Carrier gateways", 0.0, f"{t} handed over; gateways never confirm delivery")
            )
        else:
            name = "Twilio" if ch == Channel.TWILIO else ch
            rows.append(
                (name, d / t if t else 0.0, f"{100 * d / t:.0f}% of {t}" if t else "none yet")
            )
    return rows


def _sunset_rows(s: Session) -> tuple[list[tuple[str, str, int]], str | None]:
    """(carrier, its state, contacts) for gateways shut down or sunsetting — the
    contacts of ``erp-sms contacts gateways`` — or why they cannot be listed."""
    try:
        found = staff.gateway_contacts(s)
    except InputError as exc:
        return [], exc.message
    counts: dict[tuple[str, str], int] = {}
    for c in found:
        said = c.carrier.describe()
        counts[(c.carrier.name, said)] = counts.get((c.carrier.name, said), 0) + 1
    return sorted((name, said, n) for (name, said), n in counts.items()), None


# -- the TWILIO rule record -----------------------------------------------------------------


@blueprint.get("/rules")
@login_required  # type: ignore[untyped-decorator]
def rules() -> str:
    name = request.args.get("name", rule_records.TWILIO)
    try:
        rtype, full = rule_records.record(name)
    except InputError as exc:
        abort(404, exc.message)
    with _db().read_session() as s:
        rule = rule_records.get_rule(s, full)
        fields = []
        for f in rtype.fields:
            if f.kind == "logic":
                continue
            value = rule.get(f.name) if rule else None
            changed = rule.changed_at(f.name) if rule else None
            fields.append(
                {
                    "name": f.name,
                    "secret": f.secret,
                    "value": value,
                    "changed": changed,
                    "help": getattr(f, "help", ""),
                }
            )
        audit = list(
            s.scalars(
                select(RuleAudit)
                .where(RuleAudit.rule_type == full)
                .order_by(RuleAudit.id.desc())
                .limit(20)
            )
        )
        records = rule_records.senders(s)
        mapping = rule_records.sender_map(s)
        held = s.scalar(select(func.count()).where(Message.status == Status.HELD)) or 0
        version = staff.rule_version(s, full)
    return render_template(
        "erp_sms/rules.html",
        version=version,
        full=full,
        description=rtype.description,
        rule=rule,
        fields=fields,
        audit=audit,
        records=records,
        mapping=mapping,
        held=held,
    )


@blueprint.post("/rules")
@login_required  # type: ignore[untyped-decorator]
def rules_save() -> WResponse:
    full = request.form.get("record", rule_records.TWILIO)
    # A blank field leaves the value as it is (the AuthCode is never shown, so always
    # blank unless replaced); MessagingServiceSid blank stops using one, as in the CLI.
    values = {
        k: request.form[k].strip()
        for k in ("SID", "AuthCode", "PhoneNumber", "MessagingServiceSid", "WebhookKey", "UseCode")
        if k in request.form and (request.form[k].strip() or k == "MessagingServiceSid")
    }
    current = request.form.get("Active")
    active = None if current is None else current == "on"

    def save(s: Session) -> list[str]:
        saved = staff.set_rule(
            s, full, values, active, by=_who(), version=request.form.get("version")
        )
        out = saved.lines()
        if saved.stored_unencrypted:
            out.append("warning: " + staff.UNENCRYPTED)
        return out

    return _act(save, url_for(".rules", name=full))


@blueprint.post("/rules/test")
@login_required  # type: ignore[untyped-decorator]
def rules_test() -> WResponse:
    full = request.form.get("record", rule_records.TWILIO)
    try:
        with _db().session() as s:
            ok, sentence = staff.test_credentials(s, full, by=_who())
        flash(sentence, "ok" if ok else "error")
    except ErpSmsError as exc:
        flash(exc.message, "error")
    return redirect(url_for(".rules", name=full))


# -- options ----------------------------------------------------------------------------------


@blueprint.get("/options")
@login_required  # type: ignore[untyped-decorator]
def options_page() -> str:
    with _db().read_session() as s:
        rows = staff.option_rows(s)
    return render_template("erp_sms/options.html", rows=rows)


@blueprint.post("/options")
@login_required  # type: ignore[untyped-decorator]
def options_save() -> WResponse:
    name, value = request.form.get("name", ""), request.form.get("value", "")
    version = request.form.get("version")
    return _act(
        lambda s: f"{name} = {staff.set_option(s, name, value, by=_who(), version=version)}",
        url_for(".options_page"),
    )


# -- templates ------------------------------------------------------------------------------


@blueprint.get("/templates")
@login_required  # type: ignore[untyped-decorator]
def templates_page() -> str:
    with _db().read_session() as s:
        rows = staff.template_rows(s)
    return render_template("erp_sms/templates.html", rows=rows)


@blueprint.get("/templates/<name>")
@login_required  # type: ignore[untyped-decorator]
def template_edit(name: str) -> str:
    with _db().read_session() as s:
        try:
            name = templates.canonical_name(s, name)
        except InputError as exc:
            abort(404, exc.message)
        src = templates.load(s, name)
        checked = staff.check_template(s, name, src.source)
        version = staff.template_version(s, name)
        recent = s.scalar(
            select(Message.order_number)
            .where(Message.template == name)
            .order_by(Message.id.desc())
            .limit(1)
        )
    return render_template(
        "erp_sms/template_edit.html",
        name=name,
        source=src.source,
        origin=src.origin,
        check=checked,
        variables=staff.variables(name),
        order=request.args.get("order") or recent or "",
        version=version,
    )


@blueprint.post("/templates/<name>")
@login_required  # type: ignore[untyped-decorator]
def template_save(name: str) -> Any:
    source = request.form.get("source", "")
    try:
        with _db().session() as s:
            checked = staff.save_template(
                s, name, source, by=_who(), version=request.form.get("version")
            )
        flash(f"{checked.name} saved: {checked.encoding}, {checked.segments} segment(s)", "ok")
        return redirect(url_for(".template_edit", name=checked.name))
    except ErpSmsError as exc:
        with _db().read_session() as s:
            checked = staff.check_template(s, name, source)
            # The version now: saving again, knowing what changed, is deliberate.
            version = staff.template_version(s, checked.name)
        flash(exc.message, "error")
        return render_template(
            "erp_sms/template_edit.html",
            name=checked.name,
            source=source,
            origin="unsaved",
            check=checked,
            variables=staff.variables(checked.name),
            order=request.form.get("order", ""),
            version=version,
        ), 400


@blueprint.post("/templates/<name>/reset")
@login_required  # type: ignore[untyped-decorator]
def template_reset(name: str) -> WResponse:
    version = request.form.get("version")
    return _act(
        lambda s: staff.reset_template(s, name, version=version),
        url_for(".template_edit", name=name),
    )


@blueprint.post("/templates/<name>/preview")
@login_required  # type: ignore[untyped-decorator]
def template_preview(name: str) -> WResponse:
    """The live preview: the check with sample data and, given an order, each recipient."""
    source = request.form.get("source", "")
    number = request.form.get("order", "").strip()
    with _db().read_session() as s:
        try:
            checked = staff.check_template(s, name, source)
        except InputError as exc:
            return jsonify({"error": exc.message}), 404  # type: ignore[return-value]
        lines: list[dict[str, Any]] = []
        notes: list[str] = []
        if number and not checked.error:
            try:
                p = staff.preview(s, name, number, source)
                notes = p.notes
                lines = [vars(line) for line in p.lines]
            except ErpSmsError as exc:
                notes = [exc.message]
    return jsonify(
        {
            "body": checked.body,
            "encoding": checked.encoding,
            "segments": checked.segments,
            "units": checked.units,
            "characters": len(checked.body),
            "ucs2": list(checked.ucs2_characters),
            "warnings": list(checked.warnings),
            "error": checked.error,
            "notes": notes,
            "lines": lines,
        }
    )


# -- the email log ----------------------------------------------------------------------------


FILTERS = ("since", "until", "order", "contact", "status", "event", "channel")


def _filters() -> report.Filters:
    return report.make_filters(**{k: request.args.get(k) or None for k in FILTERS})


@blueprint.get("/log")
@login_required  # type: ignore[untyped-decorator]
def log_page() -> Any:
    page = max(1, request.args.get("page", 1, type=int) or 1)
    try:
        f = _filters()
        error = None
    except InputError as exc:
        f, error = report.Filters(), exc.message
    with _db().read_session() as s:
        total = report.count(s, f)
        # A page past the last (a typed ?page=100000000000000000000) shows the last one:
        # such an offset is past every database's integer.
        page = min(page, max(1, -(-total // PAGE_SIZE)))
        rows = report.page(s, f, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        events = sorted(e for (e,) in s.execute(select(Message.event).distinct()))
    args = {k: request.args.get(k, "") for k in FILTERS}
    return render_template(
        "erp_sms/log.html",
        rows=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        args=args,
        error=error,
        statuses=Status.ALL,
        events=events,
    ), 400 if error else 200


@blueprint.get("/log.csv")
@login_required  # type: ignore[untyped-decorator]
def log_csv() -> WResponse:
    """Exactly the filtered rows, as the CLI's ``report --format csv`` writes them."""
    try:
        f = _filters()
    except InputError as exc:
        abort(400, exc.message)

    def stream() -> Iterator[bytes]:
        # The CLI's streamed exporter writes to a spooled file (memory up to 1 MB, then
        # disk), sent on in chunks: a million rows never sit in memory.
        with tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b") as spool:
            text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
            with _db().read_session() as s:
                report.export_csv(s, f, text)
            text.flush()
            spool.seek(0)
            while chunk := spool.read(1 << 16):
                yield chunk
            text.detach()

    return Response(
        stream_with_context(stream()),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=erp-sms-log.csv"},
    )


@blueprint.post("/log/action")
@login_required  # type: ignore[untyped-decorator]
def log_action() -> WResponse:
    action = request.form.get("action", "")
    ids = [int(i) for i in request.form.getlist("id") if i.isdigit()]
    back = safety.same_site(request.form.get("back"), url_for(".log_page"))
    if not ids:
        flash("Tick the texts first.", "error")
        return redirect(back)
    if action == "release":
        return _act(lambda s: f"{staff.release(s, ids, by=_who())} text(s) released", back)
    if action == "cancel":
        reason = request.form.get("reason") or None
        return _act(
            lambda s: f"{staff.cancel(s, ids, by=_who(), reason=reason)} text(s) canceled", back
        )
    if action == "retry":
        return _act(lambda s: staff.retry(s, ids, by=_who()), back)
    flash(f"unknown action {action!r}", "error")
    return redirect(back)


# -- customers and timelines ----------------------------------------------------------------


@blueprint.get("/find")
@login_required  # type: ignore[untyped-decorator]
def find() -> str:
    """Customers by name, order number or phone number (from the email log and the host)."""
    q = request.args.get("q", "").strip()
    with _db().read_session() as s:
        found = customers.find(s, q)
    return render_template("erp_sms/find.html", q=q, orders=found.orders, contacts=found.contacts)


@blueprint.get("/timeline")
@login_required  # type: ignore[untyped-decorator]
def timeline() -> Any:
    from .. import timeline as tl

    order, contact, subject = (
        request.args.get(k, "").strip() for k in ("order", "contact", "subject")
    )
    title, error, entries, exists = "", None, [], False
    with _db().read_session() as s:
        try:
            if order:
                title, entries = f"order {order}", tl.for_order(s, order)
            elif contact:
                view = default_lookup().contact(s, contact)
                exists = view is not None
                entries = tl.for_contact(s, contact)
                title = f"{view.name} (contact {contact})" if view else f"contact {contact}"
                if not exists and not entries:
                    raise InputError(
                        f"no contact {contact!r}: find customers by name, order or number"
                    )
            elif subject:
                kind, _, ref = subject.partition(":")
                entries = tl.for_subject(s, kind, ref)
                title = tl.subject_title(s, kind, ref)
            else:
                return redirect(url_for(".find"))
        except InputError as exc:
            error = exc.message
    return render_template(
        "erp_sms/timeline.html",
        title=title,
        entries=entries,
        error=error,
        contact=contact,
        contact_exists=exists,
    ), 404 if error else 200


@blueprint.post("/contacts/<key>/consent")
@login_required  # type: ignore[untyped-decorator]
def contact_consent(key: str) -> WResponse:
    opted_in = request.form.get("state") == "in"
    note = request.form.get("note") or None
    return _act(
        lambda s: staff.change_consent(s, key, opted_in, by=_who(), source="pages", note=note),
        url_for(".timeline", contact=key),
    )


@blueprint.post("/contacts/<key>/text")
@login_required  # type: ignore[untyped-decorator]
def contact_text(key: str) -> WResponse:
    message = request.form.get("message", "")
    return _act(
        lambda s: staff.text_contact(s, key, message, by=_who()),
        url_for(".timeline", contact=key),
    )


# -- replies ----------------------------------------------------------------------------------


@blueprint.get("/replies")
@login_required  # type: ignore[untyped-decorator]
def replies() -> str:
    show_done = request.args.get("done") == "1"
    with _db().read_session() as s:
        q = select(InboundMessage).where(InboundMessage.kind == "reply")
        q = q.where(
            InboundMessage.done_at.is_not(None) if show_done else InboundMessage.done_at.is_(None)
        )
        rows = list(s.scalars(q.order_by(InboundMessage.received_at.desc()).limit(200)))
    return render_template("erp_sms/replies.html", rows=rows, show_done=show_done)


@blueprint.post("/replies/<int:reply_id>/done")
@login_required  # type: ignore[untyped-decorator]
def reply_done(reply_id: int) -> WResponse:
    def done(s: Session) -> str:
        row = s.get(InboundMessage, reply_id)
        if row is None:
            raise InputError(f"no reply #{reply_id}")
        if row.done_at is None:
            from ..db import utcnow

            row.done_at, row.done_by = utcnow(), _who()
        return f"reply #{reply_id} from {row.from_number} marked done"

    return _act(done, url_for(".replies"))


# -- reminders --------------------------------------------------------------------------------


@blueprint.get("/reminders")
@login_required  # type: ignore[untyped-decorator]
def reminders() -> str:
    from .. import options
    from ..sendwindow import zones_for

    with _db().read_session() as s:
        zone = options.get(s, "SMSTIMEZONE")
        seqs = []
        for seq in sequences.all_sequences():
            upcoming = []
            for m in sequences.upcoming(s, seq):
                local_zone = zones_for(m.recipient, zone)[0]
                assert m.next_attempt_at is not None
                upcoming.append(
                    (
                        m,
                        f"{m.next_attempt_at.astimezone(local_zone):%Y-%m-%d %H:%M} {local_zone.key}",
                    )
                )
            seqs.append(
                {
                    "seq": seq,
                    "steps": seq.steps(s),
                    "switches": sequences.switches(s, seq),
                    "upcoming": upcoming,
                }
            )
        window = options.get(s, "SMSSENDWINDOW")
        records = rule_records.senders(s)
        mapping = rule_records.sender_map(s)
        names = templates.known_names(s)
    return render_template(
        "erp_sms/reminders.html",
        seqs=seqs,
        window=window,
        zone=zone,
        records=records,
        mapping=mapping,
        templates=names,
    )


def _int(name: str) -> int | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name} {raw!r} is not a whole number of days") from None


@blueprint.post("/reminders/step")
@login_required  # type: ignore[untyped-decorator]
def reminders_step() -> WResponse:
    def save(s: Session) -> str:
        seq = sequences.get_sequence(request.form.get("sequence", ""))
        step = _int("step")
        days = _int("days")
        template = request.form.get("template") or None
        sms = request.form.get("sms")
        if request.form.get("remove"):
            if step is None:
                raise InputError("which step?")
            n = sequences.remove_step(s, seq, step, by=_who())
            return f"{seq.name} step {step} removed; {n} text(s) canceled"
        saved, n = sequences.set_step(
            s,
            seq,
            step,
            days=days,
            template=template,
            sms=None if sms is None else sms == "on",
            by=_who(),
        )
        verb = "added" if step is None else "saved"
        return f"{seq.name} {saved.describe()} {verb}; {n} text(s) not sent yet planned again"

    return _act(save, url_for(".reminders"))


@blueprint.post("/reminders/switch")
@login_required  # type: ignore[untyped-decorator]
def reminders_switch() -> WResponse:
    def save(s: Session) -> str:
        seq = sequences.get_sequence(request.form.get("sequence", ""))
        enabled = request.form.get("state") == "on"
        key, name = sequences.find_organization(s, request.form.get("organization", ""))
        n = sequences.switch(s, seq, key, name, enabled, by=_who())
        return f"{seq.name} is {'on' if enabled else 'off'} for {name or key}; {n} text(s) changed"

    return _act(save, url_for(".reminders"))


@blueprint.post("/reminders/sender")
@login_required  # type: ignore[untyped-decorator]
def reminders_sender() -> WResponse:
    def save(s: Session) -> str:
        key, name = sequences.find_organization(s, request.form.get("organization", ""))
        full = rule_records.map_sender(s, key, name, request.form.get("record", ""), by=_who())
        return f"{name or key}: texts go out from {full} from now on"

    return _act(save, url_for(".reminders"))
