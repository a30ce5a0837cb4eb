"""The TWILIO records and the options, as staff set them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from .. import options as options_mod
from .. import outbox, rule_records
from ..catalog import option_defs
from ..channels.twilio.check import OK, REJECTED, check_credentials
from ..config import get_settings
from ..errors import InputError, StaleEdit
from ..models import Option
from .versions import _check_rule_version, _digest, _when

# -- the TWILIO rule records ----------------------------------------------------------------


@dataclass(frozen=True)
class RuleSaved:
    """What ``set_rule`` changed."""

    name: str
    changed: tuple[str, ...]
    active: bool
    released: int
    stored_unencrypted: bool

    def lines(self) -> list[str]:
        """The outcome in words (the last ones are warnings)."""
        state = "active" if self.active else "inactive"
        what = ", ".join(self.changed) or "nothing changed"
        out = [f"{self.name} saved ({what}); the record is {state}"]
        if self.released:
            out.append(f"{self.released} held text(s) released to the queue")
        return out


def set_rule(
    session: Session,
    name: str,
    values: Mapping[str, str],
    active: bool | None,
    *,
    by: str,
    version: str | None = None,
) -> RuleSaved:
    """Set fields of a rule record (each validated before anything is written); held
    texts the change makes sendable go back to the queue. Given the ``version`` the
    form was read at (``rule_version``), a record changed since is refused."""
    if not values and active is None:
        raise InputError(
            "nothing to set: give --sid, --auth-code, --phone-number, --use-code or "
            "--active/--inactive"
        )
    rtype, full = rule_records.record(name)
    for field_name, value in values.items():
        rule_records.validate_field(rtype, field_name, value)
    _check_rule_version(session, full, version)
    before = rule_records.get_rule(session, full)
    old = {k: before.get(k) for k in values} if before else {}
    was_active = before.active if before else None
    held_before = {m.id for m in outbox.find(session, "held")}
    rule = rule_records.set_fields(session, full, dict(values), active=active, by=by)
    released = held_before - {m.id for m in outbox.find(session, "held")}
    # What set_fields really changed (it skips a value equal to the stored one, after
    # normalising it); a secret is always written anew.
    changed = sorted(
        k for k in values if rtype.field(k).secret or before is None or rule.get(k) != old[k]
    )
    if active is not None and active != was_active:
        changed.append("Active")
    unencrypted = "AuthCode" in values and not get_settings().secret_key
    return RuleSaved(full, tuple(changed), rule.active, len(released), unencrypted)


UNENCRYPTED = (
    "ERP_SMS_SECRET_KEY is not set, so the AuthCode is stored unencrypted; set it and save "
    "the AuthCode again to encrypt it"
)


def test_credentials(session: Session, name: str, *, by: str) -> tuple[bool, str]:
    """Ask Twilio whether the stored credentials work; a rejection flags the record
    (its texts are held), a success clears the flag. Returns (ok, a sentence)."""

    _rtype, full = rule_records.record(name)
    rule = rule_records.twilio_rule(session, full)
    if rule is None or not rule.sid or not rule.auth_code:
        raise InputError(
            f"{full} is not set up: use `erp-sms rules set {full} --sid … --auth-code …`"
        )
    verdict, sentence = check_credentials(rule, get_settings())
    if verdict == OK:
        rule_records.clear_rejected(session, full, by=by)
    elif verdict == REJECTED:
        rule_records.flag_rejected(session, full, sentence, by=by)
    return verdict == OK, sentence


# -- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionRow:
    """An option as the pages list it, with the version its form carries."""

    name: str
    value: str
    is_default: bool
    help: str
    kind: str
    version: str


def option_rows(session: Session) -> list[OptionRow]:
    """Every option with its value and what it does."""

    defs = option_defs()
    return [
        OptionRow(
            name,
            value,
            is_default,
            defs[name].help,
            defs[name].kind,
            _digest(None if is_default else value),
        )
        for name, (value, is_default) in options_mod.all_values(session).items()
    ]


def set_option(
    session: Session, name: str, value: str, *, by: str, version: str | None = None
) -> str:
    """Set an option; returns the value as stored. Given the ``version`` the form was
    read at (``option_version``), an option changed since is refused."""
    opt = options_mod.definition(name)
    if version is not None:
        row = session.get(Option, opt.name, with_for_update=True)
        if version != _digest(row.value if row else None):
            now = (
                f"set to {row.value} by {row.updated_by or 'someone'} at {_when(row.updated_at)}"
                if row
                else "back to its default"
            )
            raise StaleEdit(
                f"{opt.name} was changed since you opened the page ({now}): nothing was "
                "saved. Set it again if you still want your value."
            )
    return options_mod.set_value(session, name, value, by=by)
