"""``erp-sms doctor``: what stops or endangers texts, one line each with its fix.

Each check reads the configuration or a bounded part of the database; none sends a
text. The checks run in the order a problem blocks the next (no database, no tables:
nothing else can be asked).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import smtplib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .. import health, migrate, options, outbox, rule_records
from ..channels.email_gateway import connect_smtp
from ..codes import Channel
from ..config import Settings, unknown_variables
from ..db import Database, describe_error
from ..errors import ErpSmsError
from ..host import host_configured, load_host_module
from ..models import HostEvent, Message, Rule

#: A due text that has waited this long with a worker running: the worker is behind.
OVERDUE = dt.timedelta(minutes=15)
#: Due texts waiting this long with no worker seen are reported (a moment's gap between
#: polls is not a problem).
NO_WORKER_GRACE = dt.timedelta(minutes=1)
#: A host webhook event still undelivered after this long.
WEBHOOK_LATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Finding:
    """A problem that stops or endangers texts, and what to do about it."""

    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}"


@dataclass
class Report:
    """What the doctor found, and what it checked without finding anything."""

    findings: list[Finding] = field(default_factory=list)
    healthy: list[str] = field(default_factory=list)


def examine(
    settings: Settings,
    *,
    now: Callable[[], dt.datetime] | None = None,
    smtp: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Report:
    """Run every check against ``settings``' database; ``smtp``: also connect to the
    relay when gateway texts are sent (``--offline`` skips it)."""
    report = Report()
    clock = now or (lambda: dt.datetime.now(dt.UTC))
    for var, meant in unknown_variables(os.environ if environ is None else environ):
        report.findings.append(
            Finding(
                f"{var} is not an erp-sms setting, so it is ignored",
                f"did you mean {meant}?" if meant else "remove it (docs/operations.md lists them)",
            )
        )
    try:
        load_host_module(settings)
    except ErpSmsError as exc:
        report.findings.append(Finding(str(exc), "fix ERP_SMS_HOST_MODULE, then restart"))
    try:
        db = Database(settings.database_url)
    except ErpSmsError as exc:
        report.findings.append(Finding(str(exc), "fix ERP_SMS_DATABASE_URL"))
        return report
    try:
        if _schema(db, settings, report):
            with db.read_session() as s:
                for finding in _checks(s, settings, clock(), report, smtp=smtp):
                    report.findings.append(finding)
    except SQLAlchemyError as exc:
        report.findings.append(Finding(describe_error(exc, settings.database_url), "fix it first"))
    finally:
        db.dispose()
    return report


def _schema(db: Database, settings: Settings, report: Report) -> bool:
    """Whether the tables are there and current (else a finding, and no more checks)."""
    plugin_only = host_configured(settings)
    have = migrate.current(db.engine)
    need = migrate.heads(plugin_only=plugin_only)
    if not have:
        report.findings.append(
            Finding("the database has no erp-sms tables", "run `erp-sms db upgrade`")
        )
        return False
    missing = need - have
    if missing:
        report.findings.append(
            Finding(
                f"the database is at {', '.join(sorted(have))} but this erp-sms needs "
                f"{', '.join(sorted(need))}",
                "run `erp-sms db upgrade` (texts and pages fail until then)",
            )
        )
        return False
    report.healthy.append(f"database up to date ({', '.join(sorted(have & need))})")
    return True


def _checks(
    s: Session, settings: Settings, now: dt.datetime, report: Report, *, smtp: bool
) -> Iterator[Finding]:
    yield from _twilio(s, settings)
    gateway = _gateway_in_use(s, now)
    if gateway:
        yield from _gateway_opt_out(s, settings)
        if smtp:
            yield from _relay(settings, report)
    yield from _worker(s, now, report)
    held = outbox.held_count(s)
    if held:
        yield Finding(
            f"{held} text(s) are held",
            "see why with `erp-sms messages list --status held`, fix it, then "
            "`erp-sms messages release ID`",
        )
    if settings.host_webhook_url:
        yield from _host_webhook(s, now)


def _twilio(s: Session, settings: Settings) -> Iterator[Finding]:
    for name in rule_records.senders(s):
        rule = s.get(Rule, name)
        if rule is None:
            continue
        auth = rule.get("AuthCode") or ""
        sealed = rule_records.is_sealed(auth)
        if auth and not sealed:
            yield Finding(
                f"the {name} AuthCode is stored unencrypted",
                "set ERP_SMS_SECRET_KEY (the same in every process) and save the AuthCode "
                f"again: `erp-sms rules set {name} --auth-code …`",
            )
        elif sealed and not settings.secret_key:
            yield Finding(
                f"the {name} AuthCode is stored encrypted but ERP_SMS_SECRET_KEY is not set: "
                "texts through Twilio are held",
                "set ERP_SMS_SECRET_KEY to the key it was saved with",
            )
        if not rule.active:
            continue
        if not settings.public_url:
            yield Finding(
                f"{name} is active but ERP_SMS_PUBLIC_URL is not set: Twilio cannot send "
                "delivery reports or replies (STOP) back",
                "set ERP_SMS_PUBLIC_URL to the address Twilio reaches `erp-sms serve` at",
            )
        if rule.rejected_at is not None:
            yield Finding(
                f"Twilio refused the {name} credentials ({rule.rejected_reason}); its texts "
                "are held",
                f"set them again (`erp-sms rules set {name} --sid … --auth-code …`), then "
                f"`erp-sms rules test {name}`",
            )


def _gateway_in_use(s: Session, now: dt.datetime) -> bool:
    """Whether texts go to carrier gateways: TWILIO is not active, or some did lately."""
    active, _phone = rule_records.twilio_routing(s)
    if not active:
        return True
    recent = s.scalar(
        select(Message.id)
        .where(
            Message.created_at >= now - dt.timedelta(days=7),
            Message.channel == Channel.EMAIL_GATEWAY,
        )
        .limit(1)
    )
    return recent is not None


def _gateway_opt_out(s: Session, settings: Settings) -> Iterator[Finding]:
    if options.get(s, "SMSOPTOUTCONTACT"):
        return
    if settings.public_url and settings.secret_key:
        return  # each gateway text links to the hosted opt-out page
    yield Finding(
        "carrier-gateway texts have no way to opt out, so they are skipped",
        "set SMSOPTOUTCONTACT (`erp-sms options set SMSOPTOUTCONTACT 312-555-0100`), or "
        "ERP_SMS_PUBLIC_URL and ERP_SMS_SECRET_KEY for the hosted opt-out page",
    )


def _relay(settings: Settings, report: Report) -> Iterator[Finding]:
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        conn = connect_smtp(settings)
    except ErpSmsError as exc:
        yield Finding(
            f"the SMTP relay {where} does not take mail ({exc})",
            "fix the ERP_SMS_SMTP_* settings or the relay; gateway texts wait until then",
        )
        return
    with contextlib.suppress(OSError, smtplib.SMTPException):
        conn.quit()
    report.healthy.append(f"SMTP relay {where} answers")


def _worker(s: Session, now: dt.datetime, report: Report) -> Iterator[Finding]:
    pulse = health.pulse(s, now)
    seen = health.ago(pulse.worker_age)
    if pulse.oldest_due is not None:
        due = health.due_count(s, now)
        waited = now - pulse.oldest_due
        if pulse.workers_alive == 0 and waited >= NO_WORKER_GRACE:
            yield Finding(
                f"no worker is running (last seen {seen}) and {due} text(s) are due",
                "start `erp-sms worker` under your service manager (systemd, supervisord)",
            )
            return
        if waited >= OVERDUE:
            yield Finding(
                f"the oldest due text has waited {health.duration(waited.total_seconds())} "
                f"({due} due)",
                "the worker is behind or stuck: look at its log; add workers or raise "
                "[dispatch] concurrency",
            )
            return
    report.healthy.append(f"worker seen {seen}" if pulse.workers_alive else "no texts due")


def _host_webhook(s: Session, now: dt.datetime) -> Iterator[Finding]:
    late = s.execute(
        select(func.count(), func.min(HostEvent.created_at)).where(
            HostEvent.delivered_at.is_(None), HostEvent.created_at <= now - WEBHOOK_LATE
        )
    ).one()
    if late[0]:
        last = s.scalar(
            select(HostEvent.last_error)
            .where(HostEvent.delivered_at.is_(None), HostEvent.last_error.is_not(None))
            .order_by(HostEvent.id)
            .limit(1)
        )
        yield Finding(
            f"{late[0]} event(s) for the host's webhook are undelivered after an hour"
            + (f" (last error: {last.splitlines()[0][:200]})" if last else ""),
            "check ERP_SMS_HOST_WEBHOOK_URL and that the host answers 2xx",
        )
