"""The hosted opt-out page (``{ERP_SMS_PUBLIC_URL}/o/<token>``): a customer's link from a
text, no sign-in. It names the sender and the programs, opts out of one of them or all
with one button, says what happened, and works on a phone. The form is CSRF-safe without
a session: it carries a key only this page could have made for this token (``links``),
and the token itself is the capability (unguessable, nothing personal in it). Each
opt-out is recorded with source ``link``, as any other."""

from __future__ import annotations

import hmac
import json
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request
from sqlalchemy import select

from .. import appstate, consent, links, options
from ..codes import Program
from ..db import utcnow
from ..models import Click, Message, OptOut, ProgramOptOut
from .base import csrf

public = Blueprint("erp_sms_public", __name__, template_folder="templates")
csrf.exempt(public)  # no session to tie a token to: the form key does that work


def _number(token: str) -> str | None:
    """The number a token was made for (the texts that carried it), or None."""
    state = appstate.state()
    if len(token) != links.TOKEN_LENGTH:
        return None
    with state.db.read_session() as s:
        number = s.scalar(select(Message.recipient).where(Message.link_token == token).limit(1))
    if number is None or not links.matches(state.settings, number, token):
        return None
    return number


def _page(token: str, number: str, done: str | None = None) -> Any:
    state = appstate.state()
    with state.db.read_session() as s:
        company = options.get(s, "SMSCOMPANYNAME")
        every = s.get(OptOut, number) is not None
        out = {p for p in Program.ALL if every or s.get(ProgramOptOut, (number, p)) is not None}
    return render_template(
        "erp_sms/optout.html",
        company=company or "the sender",
        programs=[(p, consent.PROGRAM_WORDS[p], p in out) for p in Program.ALL],
        all_out=every or len(out) == len(Program.ALL),
        form_key=links.form_key(state.settings, token),
        token=token,
        done=done,
    )


@public.get("/<token>")
def page(token: str) -> Any:
    number = _number(token)
    if number is None:
        return render_template("erp_sms/optout.html", invalid=True), 404
    return _page(token, number)


@public.post("/<token>")
def opt_out(token: str) -> Any:
    number = _number(token)
    if number is None:
        return render_template("erp_sms/optout.html", invalid=True), 404
    state = appstate.state()
    given = request.form.get("form_key", "")
    if not hmac.compare_digest(given, links.form_key(state.settings, token)):
        abort(400, "This form did not come from this page: open the link from the text again.")
    choice = request.form.get("program") or "all"
    program = None if choice == "all" else choice
    if program is not None and program not in Program.ALL:
        abort(400, "Choose one of the options on the page.")
    with state.db.session() as s:
        consent.opt_out(s, number=number, source="link", detail="the opt-out page", program=program)
    what = "all texts" if program is None else consent.PROGRAM_WORDS[program]
    return _page(token, number, done=f"Done: you will get no more {what} from us.")


# -- short links --------------------------------------------------------------------------------

short = Blueprint("erp_sms_short", __name__)


@short.route("/<code>", methods=["GET", "HEAD"])
def follow(code: str) -> Any:
    """A text's short link: 302 to the original URL. A person's click is recorded (the
    text's first click, each on its timeline); a preview or a link scanner (HEAD, a known
    User-Agent) is kept as fetched, not counted."""
    state = appstate.state()
    mine, place = code[: links.CODE_LENGTH], code[links.CODE_LENGTH :]
    with state.db.session() as s:
        msg = s.scalar(select(Message).where(Message.link_code == mine).limit(1))
        urls = json.loads(msg.link_urls or "[]") if msg is not None else []
        if (
            msg is None
            or not place.isdigit()
            or not 1 <= int(place) <= len(urls)
            or not hmac.compare_digest(links.code(state.settings, msg.idempotency_key), mine)
        ):
            return render_template("erp_sms/optout.html", invalid=True), 404
        url = urls[int(place) - 1]
        agent = (request.headers.get("User-Agent") or "")[:255]
        counted = not links.is_scanner(request.method, agent)
        s.add(Click(message_id=msg.id, url=url, user_agent=agent or None, counted=counted))
        if counted and msg.clicked_at is None:
            msg.clicked_at = utcnow()
    return redirect(url, code=302)
