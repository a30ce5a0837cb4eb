"""``erp-sms sequences …``: reminder sequences (SMS dunning) — their steps, which
organizations they are switched on for, and what goes out next. Every change plans the
texts not sent yet again (``sequences.replan``)."""

from __future__ import annotations

import click

from .. import options
from .. import sequences as seq_mod
from ..errors import InputError
from ..sendwindow import zones_for
from .common import _user, staff_session


@click.group("sequences")
def group() -> None:
    """Reminder sequences: steps, per-organization switches, what is scheduled.

    \b
    Example:
      erp-sms sequences show dunning
      erp-sms sequences step dunning 2 --days 10
      erp-sms sequences switch dunning "Acme Fabrication" off
    """


def _on_off(value: str) -> bool:
    v = value.strip().lower()
    if v in ("on", "yes", "true", "1"):
        return True
    if v in ("off", "no", "false", "0"):
        return False
    raise InputError(f"say on or off, not {value!r}")


@group.command("list")
def sequences_list() -> None:
    """Every registered sequence and its steps.

    \b
    Example:
      erp-sms sequences list
    """
    found = seq_mod.all_sequences()
    if not found:
        click.echo(
            "no sequences are registered: the host registers them with "
            "erp_sms.register_sequence (set ERP_SMS_HOST_MODULE)"
        )
        return
    with staff_session(readonly=True) as s:
        for seq in found:
            steps = ", ".join(f"{st.days:+d}d {st.template}" for st in seq.steps(s))
            click.echo(f"{seq.name} ({seq.subject or 'no subject'}): {steps or 'no steps'}")


@group.command("show")
@click.argument("name")
def sequences_show(name: str) -> None:
    """Steps, switches and the next texts to go out (in the customer's local time).

    \b
    Example:
      erp-sms sequences show dunning
    """
    seq = seq_mod.get_sequence(name)
    with staff_session(readonly=True) as s:
        window = options.get(s, "SMSSENDWINDOW")
        zone = options.get(s, "SMSTIMEZONE")
        click.echo(f"{seq.name}: send window {window} (customer's local time; default {zone})")
        for st in seq.steps(s):
            click.echo(f"  {st.describe()}")
        offs = [w for w in seq_mod.switches(s, seq) if not w.enabled]
        click.echo(
            "  switched off for: "
            + (", ".join(w.organization_name or w.organization_ref for w in offs) or "nobody")
        )
        upcoming = seq_mod.upcoming(s, seq)
        click.echo(f"next {len(upcoming)} text(s):" if upcoming else "nothing scheduled")
        for m in upcoming:
            assert m.next_attempt_at is not None
            local_zone = zones_for(m.recipient, zone)[0]
            local = m.next_attempt_at.astimezone(local_zone)
            click.echo(
                f"  #{m.id} {local:%Y-%m-%d %H:%M} {local_zone.key}  step {m.step}  "
                f"{m.order_number} {m.contact_name or ''} ({m.template})"
            )


@group.command("step")
@click.argument("name")
@click.argument("step", type=int)
@click.option("--days", type=int, help="Days from the anchor date (negative: before it).")
@click.option("--template", help="Template name (create it first with `templates set`).")
@click.option("--sms", "sms", help="on or off: send this step's text or not.")
def sequences_step(
    name: str, step: int, days: int | None, template: str | None, sms: str | None
) -> None:
    """Change a step; its texts not sent yet follow.

    \b
    Example:
      erp-sms sequences step dunning 3 --days 14 --template "SMS DUNNING LATE"
      erp-sms sequences step dunning 1 --sms off
    """
    if days is None and template is None and sms is None:
        raise InputError("say what to change: --days N, --template NAME or --sms on|off")
    seq = seq_mod.get_sequence(name)
    with staff_session() as s:
        saved, changed = seq_mod.set_step(
            s,
            seq,
            step,
            days=days,
            template=template,
            sms=None if sms is None else _on_off(sms),
            by=_user(),
        )
    click.echo(f"{seq.name} {saved.describe()} saved; {changed} text(s) not sent yet planned again")


@group.command("add-step")
@click.argument("name")
@click.option("--days", type=int, required=True, help="Days from the anchor date.")
@click.option("--template", required=True, help="Template name.")
def sequences_add_step(name: str, days: int, template: str) -> None:
    """Add a step; sequences already started get it too (unless its day has passed).

    \b
    Example:
      erp-sms sequences add-step dunning --days 21 --template "SMS DUNNING FINAL"
    """
    seq = seq_mod.get_sequence(name)
    with staff_session() as s:
        saved, changed = seq_mod.set_step(s, seq, None, days=days, template=template, by=_user())
    click.echo(f"{seq.name} {saved.describe()} added; {changed} text(s) planned")


@group.command("remove-step")
@click.argument("name")
@click.argument("step", type=int)
def sequences_remove_step(name: str, step: int) -> None:
    """Remove a step; its texts not sent yet are canceled with the reason.

    \b
    Example:
      erp-sms sequences remove-step dunning 4
    """
    seq = seq_mod.get_sequence(name)
    with staff_session() as s:
        changed = seq_mod.remove_step(s, seq, step, by=_user())
    click.echo(f"{seq.name} step {step} removed; {changed} text(s) canceled")


@group.command("switch")
@click.argument("name")
@click.argument("organization")
@click.argument("state")
def sequences_switch(name: str, organization: str, state: str) -> None:
    """Switch a sequence on or off for one organization (by name or key).

    \b
    Example:
      erp-sms sequences switch dunning "Acme Fabrication" off
    """
    seq = seq_mod.get_sequence(name)
    enabled = _on_off(state)
    with staff_session() as s:
        key, org_name = seq_mod.find_organization(s, organization)
        changed = seq_mod.switch(s, seq, key, org_name, enabled, by=_user())
    what = "on" if enabled else "off (its texts not sent yet are skipped with the reason)"
    click.echo(f"{seq.name} is {what} for {org_name or key}; {changed} text(s) changed")
