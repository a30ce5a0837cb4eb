"""``erp-sms rules``: the TWILIO rule records, senders per site, audit, credential test."""

from __future__ import annotations

import sys

import click

from .. import outbox, rule_records, staff
from ..errors import ErpSmsError, InputError
from .common import _user, staff_session

# -- rules -------------------------------------------------------------------------------------


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@click.group()
def rules() -> None:
    """Rule-maintenance records (TWILIO).

    \b
    Example:
      erp-sms rules show TWILIO
    """


@rules.command("show")
@click.argument("name")
def rules_show(name: str) -> None:
    """Show a rule record; the AuthCode only as set / not set.

    \b
    Example:
      erp-sms rules show TWILIO
    """
    rtype, full = rule_records.record(name)
    with staff_session(readonly=True) as s:
        rule = rule_records.get_rule(s, full)
        click.echo(f"{full} — {rtype.description}")
        if rule is None:
            click.echo(
                "  not set up: use `erp-sms rules set TWILIO --sid … --auth-code … --phone-number …`"
            )
            return
        for f in rtype.fields:
            if f.kind == "logic":
                continue
            value = rule.get(f.name)
            changed = rule.changed_at(f.name)
            when = f" (changed {changed:%Y-%m-%d %H:%M} UTC)" if changed else ""
            shown = rule_records.mask_secret(value) if f.secret else (value or "(not set)")
            click.echo(f"  {f.name:<19} {shown}{when}")
        click.echo(f"  {'Active':<19} {'on' if rule.active else 'off'}")
        if rule.rejected_at:
            click.echo(
                f"  {'REJECTED':<19} {rule.rejected_at:%Y-%m-%d %H:%M} UTC: {rule.rejected_reason}"
            )
        held = outbox.held_count(s, full)
        if held:
            click.echo(f"  {held} text(s) held for this record: `erp-sms report --status held`")


@rules.command("set")
@click.argument("name")
@click.option("--sid", help="Twilio Account SID (AC + 32 hex).")
@click.option("--auth-code", help="Twilio Auth Token (32 hex). Use - to read it from stdin.")
@click.option("--phone-number", help="The Twilio number texts come from (10 digits or E.164).")
@click.option(
    "--messaging-service-sid",
    help="Send through a Twilio Messaging Service (MG + 32 hex) instead of PhoneNumber; "
    "'' to stop.",
)
@click.option(
    "--webhook-key",
    help="The secret of the account's webhook Shared Key, when Twilio signs webhooks with "
    "HMAC-SHA256. Use - to read it from stdin; '' to remove it.",
)
@click.option("--use-code", help="Must be SMSUPDATE.")
@click.option("--active/--inactive", default=None, help="Switch the integration on or off.")
@click.option(
    "--by", default=None, help="Who makes the change (for the audit; default: login name)."
)
def rules_set(
    name: str,
    sid: str | None,
    auth_code: str | None,
    phone_number: str | None,
    messaging_service_sid: str | None,
    webhook_key: str | None,
    use_code: str | None,
    active: bool | None,
    by: str | None,
) -> None:
    """Set fields of a rule record; every change is audited (never the secret's value).

    \b
    Example:
      erp-sms rules set TWILIO --sid AC0123… --auth-code - --phone-number 3125550100 \\
          --use-code SMSUPDATE --active
    """
    if auth_code == "-":
        auth_code = _secret_from_stdin("AuthCode")
    if webhook_key == "-":
        webhook_key = _secret_from_stdin("WebhookKey")
    values = {
        k: v
        for k, v in (
            ("SID", sid),
            ("AuthCode", auth_code),
            ("PhoneNumber", phone_number),
            ("MessagingServiceSid", messaging_service_sid),
            ("WebhookKey", webhook_key),
            ("UseCode", use_code),
        )
        if v is not None
    }
    rule_records.record(name)  # a bad record name before the database is touched
    with staff_session() as s:
        saved = staff.set_rule(s, name, values, active, by=by or _user())
    for line in saved.lines():
        click.echo(line)
    if saved.stored_unencrypted:
        click.echo(f"warning: {staff.UNENCRYPTED}", err=True)


def _secret_from_stdin(name: str) -> str:
    """A secret typed at a hidden prompt, or the first line of standard input."""
    if _stdin_is_terminal():
        value = str(click.prompt(name, hide_input=True, err=True)).strip()
    else:
        value = sys.stdin.readline().strip()
    if not value:
        raise InputError(f"no {name} given on standard input: nothing was changed")
    return value


@rules.command("sender")
@click.argument("organization")
@click.argument("name")
def rules_sender(organization: str, name: str) -> None:
    """Text an organization from a site's own number (its TWILIO:SITE record).

    \b
    Example:
      erp-sms rules sender "Acme West" TWILIO:WEST
      erp-sms rules sender "Acme West" TWILIO      (back to the main number)
    """
    from ..sequences import find_organization

    with staff_session() as s:
        key, org_name = find_organization(s, organization)
        full = rule_records.map_sender(s, key, org_name, name, by=_user())
    click.echo(f"{org_name or key}: texts go out from {full} from now on")


@rules.command("senders")
def rules_senders() -> None:
    """The TWILIO records and which organizations send from a site's record.

    \b
    Example:
      erp-sms rules senders
    """
    with staff_session(readonly=True) as s:
        for full in rule_records.senders(s) or ["(no TWILIO record yet)"]:
            rule = rule_records.get_rule(s, full) if full.startswith("TWILIO") else None
            state = ("active" if rule.active else "inactive") if rule else ""
            phone = (rule.get("PhoneNumber") or "") if rule else ""
            click.echo(f"{full:<16} {phone:<14} {state}")
        for key, org_name, full in rule_records.sender_map(s):
            click.echo(f"  {org_name or key} -> {full}")


@rules.command("audit")
@click.argument("name")
@click.option("--limit", default=50, show_default=True, help="How many changes, newest first.")
def rules_audit(name: str, limit: int) -> None:
    """Who changed which field of a rule record, and when (never a secret's value).

    \b
    Example:
      erp-sms rules audit TWILIO
    """
    from sqlalchemy import select

    from ..models import RuleAudit

    _rtype, full = rule_records.record(name)
    with staff_session(readonly=True) as s:
        q = (
            select(RuleAudit)
            .where(RuleAudit.rule_type == full)
            .order_by(RuleAudit.id.desc())
            .limit(limit)
        )
        rows = list(s.scalars(q))
        for a in rows:
            detail = f" ({a.detail})" if a.detail else ""
            click.echo(
                f"{a.changed_at:%Y-%m-%d %H:%M:%S} UTC  {a.changed_by:<12} {a.action:<8} {a.field}{detail}"
            )
        if not rows:
            click.echo(f"no changes recorded for {full}")


@rules.command("test")
@click.argument("name")
def rules_test(name: str) -> None:
    """Check the stored credentials against the Twilio API and say whether they work.

    \b
    Example:
      erp-sms rules test TWILIO
    """
    with staff_session() as s:
        ok, sentence = staff.test_credentials(s, name, by=_user())
    if not ok:
        raise ErpSmsError(sentence)
    click.echo(sentence)
