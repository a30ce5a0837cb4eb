"""Customers and timelines (order, contact, invoice), consent and one-off texts from the
contact's page, and the replies inbox."""

from __future__ import annotations

import logging
from typing import Any

from flask import (
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import (
    login_required,
)
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as WResponse

from .. import consent, customers, staff
from ..codes import Program
from ..db import one_line
from ..errors import InputError
from ..recipients import default_lookup
from . import safety
from .base import act, blueprint, database, who

log = logging.getLogger(__name__)

# -- customers and timelines ----------------------------------------------------------------


@blueprint.get("/find")
@login_required  # type: ignore[untyped-decorator]
def find() -> str:
    """Customers by name, order number or phone number (from the email log and the host)."""
    q = request.args.get("q", "").strip()
    behind = 0
    if q:
        try:
            # What came into the log since the last search; a step or two at most, so
            # a page never waits for a whole backlog (`erp-sms db upgrade` reads it all).
            behind = customers.refresh(database(), steps=PAGE_STEPS).behind
        except SQLAlchemyError as exc:
            # Searching what the directory has is better than no answer.
            log.warning("customer directory not refreshed: %s", one_line(exc))
    with database().read_session() as s:
        found = customers.find(s, q)
    return render_template(
        "erp_sms/find.html", q=q, orders=found.orders, contacts=found.contacts, behind=behind
    )


PAGE_STEPS = 2


@blueprint.get("/timeline")
@login_required  # type: ignore[untyped-decorator]
def timeline() -> Any:
    from .. import timeline as tl

    order, contact, subject = (
        request.args.get(k, "").strip() for k in ("order", "contact", "subject")
    )
    title, error, entries, exists = "", None, [], False
    programs: list[tuple[str, str]] = []
    with database().read_session() as s:
        try:
            if order:
                title, entries = f"order {order}", tl.for_order(s, order)
            elif contact:
                view = default_lookup().contact(s, contact)
                exists = view is not None
                programs = consent.by_program(s, view) if view is not None else []
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
        programs=programs,
        program_names=Program.ALL,
    ), 404 if error else 200


@blueprint.post("/contacts/<key>/consent")
@login_required  # type: ignore[untyped-decorator]
def contact_consent(key: str) -> WResponse:
    opted_in = request.form.get("state") == "in"
    note = request.form.get("note") or None
    program = request.form.get("program") or None  # none: every program
    return act(
        lambda s: staff.change_consent(
            s, key, opted_in, by=who(), source="pages", note=note, program=program
        ),
        url_for(".timeline", contact=key),
    )


@blueprint.post("/contacts/<key>/text")
@login_required  # type: ignore[untyped-decorator]
def contact_text(key: str) -> WResponse:
    message = request.form.get("message", "")
    return act(
        lambda s: staff.text_contact(s, key, message, by=who()),
        url_for(".timeline", contact=key),
    )


@blueprint.post("/contacts/<key>/erase")
@login_required  # type: ignore[untyped-decorator]
def contact_erase(key: str) -> WResponse:
    """A person asked to be forgotten (admins only: not in ``safety.ACTIONS``)."""
    confirmed = request.form.get("confirm") == "yes"
    return act(
        lambda s: staff.erase_contact(s, key, by=who(), confirmed=confirmed),
        url_for(".timeline", contact=key),
    )


# -- replies ----------------------------------------------------------------------------------


@blueprint.get("/replies")
@login_required  # type: ignore[untyped-decorator]
def replies() -> str:
    show_done = request.args.get("done") == "1"
    with database().read_session() as s:
        rows = staff.replies(s, show_done=show_done)
        names = staff.contact_names(s, rows)
    return render_template("erp_sms/replies.html", rows=rows, names=names, show_done=show_done)


@blueprint.get("/conversation")
@login_required  # type: ignore[untyped-decorator]
def conversation() -> Any:
    """Texts to a number and replies from it, newest last, an answer box on each reply
    not done."""
    number = (request.args.get("number") or "").strip()
    try:
        with database().read_session() as s:
            turns = staff.conversation(s, number)
        error = None
    except InputError as exc:
        turns, error = [], exc.message
    return render_template(
        "erp_sms/conversation.html", number=number, turns=turns, error=error
    ), 400 if error else 200


@blueprint.post("/replies/<int:reply_id>/answer")
@login_required  # type: ignore[untyped-decorator]
def reply_answer(reply_id: int) -> WResponse:
    back = safety.same_site(request.form.get("back"), url_for(".replies"))
    message = request.form.get("message", "")
    return act(lambda s: staff.answer_reply(s, reply_id, message, by=who()), back)


@blueprint.post("/replies/<int:reply_id>/done")
@login_required  # type: ignore[untyped-decorator]
def reply_done(reply_id: int) -> WResponse:
    return act(lambda s: staff.mark_reply_done(s, reply_id, by=who()), url_for(".replies"))
