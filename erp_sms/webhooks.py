"""Twilio webhooks (Flask): ``POST /twilio/status`` and ``POST /twilio/inbound``.

Each request is validated (``X-Twilio-Signature`` with the TWILIO AuthCode over the
configured public URL — behind a proxy the Host and scheme the request shows are not what
Twilio signed), parsed, normalised and applied in one transaction. A bad or missing
signature gets 403 and changes nothing; any other error 500, so Twilio retries.

Mount it in a host's Flask app::

    from erp_sms import webhooks
    webhooks.init_app(app)                       # once
    app.register_blueprint(webhooks.blueprint, url_prefix="/twilio")

or run it alone: ``erp-sms serve`` (waitress) / ``erp_sms.webhooks.create_app()`` under any
WSGI server. ``erp_sms.web`` adds the staff pages the same way.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from flask import Blueprint, Flask, Response, abort, request
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from . import appstate, outbox, rule_records, web
from .catalog import twilio_error_policies
from .config import Settings

# Re-exported for hosts that imported them here (the replies' handling: ``conversations``).
from .conversations.inbound import handle_inbound as handle_inbound
from .conversations.keywords import HELP as HELP
from .conversations.keywords import REPLY as REPLY
from .conversations.keywords import START as START
from .conversations.keywords import STOP as STOP
from .conversations.keywords import classify_reply as classify_reply
from .db import Database, one_line
from .errors import ConfigurationError
from .metrics import CONTENT_TYPE, scrape
from .models import Message
from .statuses import normalise
from .web.optout import public, short

log = logging.getLogger(__name__)

blueprint = Blueprint("erp_sms_twilio", __name__)
# Signature-checked, never sign-in or CSRF checked (Twilio has no token to send).
web.csrf.exempt(blueprint)

# The app's state (``init_app`` keeps its old name here for hosts).
init_app = appstate.init_app
_state = appstate.state


def create_app(db: Database | None = None, settings: Settings | None = None) -> Flask:
    """A WSGI app with the webhooks at ``/twilio/…`` and the staff pages at ``/``."""
    app = Flask("erp_sms")
    # Twilio's forms are a few hundred bytes, a template edit a few kB.
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    init_app(app, db, settings)
    web.init_app(app)
    app.register_blueprint(blueprint, url_prefix="/twilio")
    app.register_blueprint(web.blueprint)
    app.register_blueprint(public, url_prefix="/o")  # the customers' opt-out page
    app.register_blueprint(short, url_prefix="/l")  # the texts' short links
    # The pages' security headers on every answer of this app (webhooks, 404s) too.
    app.after_request(web.safety.add_headers)

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        """200 when the database answers (a process that cannot reach it is not healthy:
        webhooks would answer 500 and Twilio retry), 503 with the reason otherwise."""
        try:
            with _state().db.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            return f"database unreachable: {one_line(exc)}", 503
        return "ok", 200

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text format: counts and ages only (``erp_sms.metrics``)."""
        return Response(scrape(_state().db), mimetype=CONTENT_TYPE)

    return app


# -- validate ---------------------------------------------------------------------------------


def signed_url(settings: Settings) -> str:
    """The URL Twilio signed: the configured public URL, not what the request shows, and
    the query exactly as Twilio sent it (still percent-encoded: decoding it changes what
    was signed)."""
    query = request.query_string.decode("latin-1")
    if settings.public_url:
        # The path as Twilio called it (with or without a trailing slash), under the
        # public base URL (the proxy's), not the internal address the request shows.
        url = settings.public_url.rstrip("/") + request.path
    else:
        log.warning(
            "ERP_SMS_PUBLIC_URL is not set: validating against %s (wrong behind a proxy)",
            request.host_url,
        )
        url = request.host_url.rstrip("/") + quote(request.script_root + request.path)
    return f"{url}?{query}" if query else url


class ConfigurationFault(Exception):
    """The webhook cannot check signatures because erp-sms is misconfigured: answer 500
    so that Twilio retries once staff have fixed it (a 403 would make Twilio drop it)."""


def _validate(session: Session, state: appstate.State, endpoint: str) -> dict[str, str]:
    """Check ``X-Twilio-Signature`` and return the request's parameters (form fields,
    or the JSON body's fields when Twilio signed the body's hash)."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        log.warning("twilio %s: no X-Twilio-Signature; refused", endpoint)
        abort(403)
    # The record whose account sent it: TWILIO, or a site's (TWILIO:WEST) whose SID is
    # the request's AccountSid.
    account = request.values.get("AccountSid", "")
    try:
        found = rule_records.signing_rules(session)
    except ConfigurationError as exc:
        log.error("twilio %s: cannot check signatures: %s", endpoint, exc.message)
        raise ConfigurationFault(exc.message) from None
    rules = sorted(
        found,
        key=lambda r: (r.sid != account, r.name != rule_records.TWILIO),
    )
    rule = rules[0] if rules else None
    if rule is None or not rule.auth_code:
        log.error("twilio %s: no TWILIO AuthCode to check the signature with", endpoint)
        raise ConfigurationFault("no TWILIO AuthCode is set")
    url = signed_url(state.settings)
    # An account that signs webhooks with a Shared Key says so in this header; the
    # signature is then HMAC-SHA256 with the key's secret, not HMAC-SHA1 with the token.
    settings_header = request.headers.get(SIGNATURE_SETTINGS_HEADER, "")
    algorithm = get_signature_algorithm(settings_header)
    secret = rule.auth_code
    if settings_header:
        if algorithm not in (HMAC_SHA1, HMAC_SHA256):
            log.warning("twilio %s: unknown signature algorithm %r; refused", endpoint, algorithm)
            abort(403)
        if not rule.webhook_key:
            log.error("twilio %s: signed with a Shared Key, but no WebhookKey is set", endpoint)
            raise ConfigurationFault(
                f"Twilio signs webhooks with a Shared Key: set its secret with `erp-sms rules "
                f"set {rule.name} --webhook-key -`"
            )
        secret = rule.webhook_key
    validator = RequestValidator(secret)
    if request.mimetype == "application/x-www-form-urlencoded" or not request.content_length:
        # The MultiDict itself: Twilio signs every value of a repeated key.
        if not validator.validate(url, request.form, signature, algorithm=algorithm):
            log.warning("twilio %s: bad X-Twilio-Signature for %s; refused", endpoint, url)
            abort(403)
        return {k: request.form.get(k, "") for k in request.form}
    # Any other body (JSON): Twilio signs the URL, whose bodySHA256 is the body's hash.
    body = request.get_data(as_text=True)
    if "bodySHA256" not in request.args or not validator.validate(
        url, body, signature, algorithm=algorithm
    ):
        log.warning("twilio %s: bad signature or body hash for %s; refused", endpoint, url)
        abort(403)
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        abort(400)
    if not isinstance(parsed, dict):
        abort(400)
    return {str(k): "" if v is None else str(v) for k, v in parsed.items()}


_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")
_INT_MAX = 2**31 - 1  # the error_code column is a 32-bit integer on every database
_PRICE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,10})?")  # fits the price column (32)


def _message_sid(form: dict[str, str]) -> str:
    """The request's MessageSid — 34 characters, two letters and 32 hex digits — or a
    400: Twilio does not retry a 4xx, and a request without a valid one cannot be told
    apart from a replay."""
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    if not _SID.match(sid):
        log.warning("twilio webhook without a valid MessageSid (%r…); refused", sid[:40])
        abort(400, "MessageSid is missing or is not a Twilio message SID")
    return sid


def _clean(form: dict[str, str]) -> dict[str, str]:
    """Keep what fits: no NUL characters (PostgreSQL text cannot hold them)."""
    return {k.replace("\x00", ""): v.replace("\x00", "") for k, v in form.items()}


def error_code(text: str) -> int | None:
    """A callback's ErrorCode as a number we can store, or None (kept in the raw text)."""
    text = text.strip()
    # isdigit() alone takes '²', which int() refuses
    if not (text.isascii() and text.isdecimal()) or int(text) > _INT_MAX:
        return None
    return int(text)


def price_of(text: str) -> str | None:
    """A callback's Price as we store it (a decimal of at most 32 characters), or None
    (it stays in the raw callback on the timeline)."""
    text = text.strip()
    return text if _PRICE.fullmatch(text) else None


# -- status callbacks -----------------------------------------------------------------------------


def error_reason(code: int) -> str:
    policy = twilio_error_policies().get(code)
    return policy.reason if policy else f"Twilio error {code} (see twilio.com/docs/errors/{code})"


@blueprint.post("/status", strict_slashes=False)
def status_callback() -> Response:
    state = _state()
    with state.db.session() as s:
        form = _clean(_validate(s, state, "status"))
        sid = _message_sid(form)
        provider_status = form.get("MessageStatus") or form.get("SmsStatus") or ""
        attached = apply_status(s, sid, provider_status[:64], form)
    if not attached:
        # Kept unattached: the send's outcome may have committed meanwhile (its writer
        # looked before this report was visible). Look again, now that it is.
        outbox.adopt_callbacks(state.db, [sid])
    return Response(status=204)


def apply_status(session: Session, sid: str, provider_status: str, raw: dict[str, str]) -> bool:
    """Record a callback and move the message forward if the status is newer; False when
    its message is not recorded yet (the report is kept: ``outbox.adopt_callbacks``)."""
    new = normalise(provider_status)
    code_text = raw.get("ErrorCode") or ""
    code = error_code(code_text)
    reason = error_reason(code) if code else None
    if code is None and code_text:
        reason = f"Twilio error {code_text[:40]!r} (not a code erp-sms knows)"
    price = price_of(raw.get("Price") or "")
    unit = (raw.get("PriceUnit") or "")[:8] or None
    attached = outbox.apply_callback(
        session,
        sid,
        status=new,
        provider_status=provider_status,
        error_code=code,
        reason=reason,
        price=(price, unit) if price else None,
        raw=raw,
    )
    policy = twilio_error_policies().get(code) if code else None
    if policy is not None and policy.action == "config":
        # The sender itself is refused (an unregistered 10DLC number, 30034): every
        # other text from it would fail alike, so the record is flagged and they are held.
        sender = session.scalar(select(Message.sender).where(Message.provider_id == sid))
        rule_records.flag_rejected(
            session,
            sender or rule_records.TWILIO,
            f"TWILIO rule: {policy.reason}; {policy.fix or ''}".rstrip("; "),
            by="webhook",
        )
    return attached


# -- inbound -----------------------------------------------------------------------------------


def twiml(message: str | None = None) -> Response:
    inner = f"<Message>{escape(message)}</Message>" if message else ""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>'
    return Response(body, mimetype="application/xml")


@blueprint.post("/inbound", strict_slashes=False)
def inbound() -> Response:
    state = _state()
    with state.db.session() as s:
        form = _clean(_validate(s, state, "inbound"))
        _message_sid(form)
        answer = handle_inbound(s, form)
    return twiml(answer)


@blueprint.errorhandler(ConfigurationFault)
def _configuration_fault(exc: ConfigurationFault) -> tuple[str, int]:
    return f"erp-sms is not configured to check Twilio signatures: {exc}", 500


def serve(
    host: str, port: int, app: Any = None, *, on_listening: Any = None, threads: int = 8
) -> None:  # pragma: no cover - blocking
    """Serve ``app`` (webhooks and staff pages) with waitress, a production WSGI server.
    ``on_listening(url)`` is called once the socket is bound."""
    from waitress import create_server

    server = create_server(app or create_app(), host=host, port=port, threads=threads)
    if on_listening is not None:
        on_listening(f"http://{host}:{server.effective_port}")
    server.run()


def stop_server(server: Any) -> None:
    """Stop a waitress server whose ``run()`` is in another thread. It is closed from its
    own loop (through its trigger): closing it from outside races the loop's select.
    Open keep-alive connections are closed too, so the loop ends."""

    def close_all() -> None:
        server.task_dispatcher.shutdown()
        for dispatcher in list(server._map.values()):
            dispatcher.close()

    server.trigger.pull_trigger(close_all)
