"""Replies that need a person, mailed to staff (SMSREPLYALERT) by the worker: the replies
that came in since the last run in one mail, through the SMTP relay the gateway texts use.

At least once: a run takes the replies (a token and the time, in one UPDATE: another
worker leaves them alone), mails them, then marks them mailed; a run that dies between
the two leaves them to be taken again after ``RETAKE``."""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sqlalchemy import and_, or_, select, update

from .. import options
from ..addresses import mask
from ..channels.email_gateway import connect_smtp
from ..config import Settings
from ..conversations.keywords import NEEDS_A_PERSON
from ..db import Database, utcnow
from ..errors import ErpSmsError
from ..models import InboundMessage, inbound_table

log = logging.getLogger(__name__)

RETAKE = dt.timedelta(minutes=5)  # a run that took replies and died: others take them then
MOST = 50  # replies in one mail; the rest go in the next run's


def mail_replies(db: Database, settings: Settings, *, now: dt.datetime | None = None) -> int:
    """Mail the replies that need a person and were not mailed yet to SMSREPLYALERT;
    how many were mailed (0 when the option is empty or nothing waits). Never raises
    for the relay: a refusal is logged and the replies are mailed by a later run."""
    now = now or utcnow()
    with db.read_session() as s:
        to = options.get(s, "SMSREPLYALERT")
    if not to:
        return 0
    token = uuid.uuid4().hex
    t = inbound_table.c
    with db.session() as s:
        waiting = select(t.id).where(
            t.alerted_at.is_(None),
            t.kind.in_(sorted(NEEDS_A_PERSON)),
            or_(t.alert_claimed_at.is_(None), t.alert_claimed_at < now - RETAKE),
        )
        ids = list(s.scalars(waiting.order_by(t.id).limit(MOST)))
        if not ids:
            return 0
        s.execute(
            update(InboundMessage)
            .where(
                t.id.in_(ids),
                t.alerted_at.is_(None),
                or_(t.alert_claimed_at.is_(None), t.alert_claimed_at < now - RETAKE),
            )
            .values(alert_token=token, alert_claimed_at=now)
        )
    with db.read_session() as s:
        rows = list(
            s.scalars(
                select(InboundMessage)
                .where(InboundMessage.alert_token == token)
                .order_by(InboundMessage.id)
            )
        )
        company = options.get(s, "SMSCOMPANYNAME")
    if not rows:
        return 0  # another worker took them
    mail = _mail(rows, to, settings, company)
    try:
        smtp = connect_smtp(settings)
        try:
            smtp.send_message(mail)
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
    except (ErpSmsError, OSError, smtplib.SMTPException) as exc:
        log.warning(
            "could not mail %d repl(ies) to SMSREPLYALERT (%s); a later run tries again",
            len(rows),
            exc,
        )
        return 0
    with db.session() as s:
        s.execute(
            update(InboundMessage)
            .where(and_(t.alert_token == token, t.alerted_at.is_(None)))
            .values(alerted_at=utcnow())
        )
    log.info("mailed %d repl(ies) to SMSREPLYALERT %s", len(rows), mask(to))
    return len(rows)


def _mail(rows: list[InboundMessage], to: str, settings: Settings, company: str) -> EmailMessage:
    """One plain-text mail listing the replies, each with where to answer it."""
    em = EmailMessage()
    who = f"{company} " if company else ""
    em["Subject"] = (
        f"{who}SMS: {len(rows)} customer repl{'y' if len(rows) == 1 else 'ies'} to answer"
    )
    em["From"] = settings.smtp_from or "erp-sms@localhost"
    em["To"] = to
    em["Date"] = formatdate(localtime=False)
    em["Message-ID"] = make_msgid(domain="erp-sms.local")
    base = (settings.public_url or "").rstrip("/")
    lines = []
    for r in rows:
        order = f" about order {r.order_number}" if r.order_number else ""
        lines.append(
            f"Reply #{r.id} from {r.from_number}{order}, {r.received_at:%Y-%m-%d %H:%M} UTC"
        )
        if r.kind != "reply":
            lines.append(f"  ({r.kind.replace('_', ' ')})")
        lines.append(f"  {' '.join(r.body.split())}")
        if base:
            lines.append(
                f"  Answer: {base}/conversation?number={r.from_number.replace('+', '%2B')}"
            )
        lines.append(f'  Or: erp-sms replies answer {r.id} --message "…"')
        lines.append("")
    em.set_content("\n".join(lines))
    return em
