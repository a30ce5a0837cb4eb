"""Setup options (defined as data in ``rules/options.toml``), e.g. SMSONLYONE."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import ScalarSelect, select
from sqlalchemy.orm import Session

from .catalog import OptionDef, option_defs
from .errors import InputError
from .models import Option

# Kinds whose values only a module above this one can check (an opt-out contact, event
# names): that module adds its check here when it is imported.
_validators: dict[str, Callable[[str], str]] = {}


def add_validator(kind: str, check: Callable[[str], str]) -> None:
    """Check (and normalise) values of options of ``kind`` with ``check``."""
    _validators[kind] = check


_TRUE = ("on", "true", "yes", "1")
_FALSE = ("off", "false", "no", "0")


def definition(name: str) -> OptionDef:
    defs = option_defs()
    found = defs.get(name.upper())
    if found is None:
        raise InputError(f"unknown option {name!r}; known options: {', '.join(sorted(defs))}")
    return found


def parse_value(opt: OptionDef, value: str) -> str:
    if opt.kind == "bool":
        v = value.strip().lower()
        if v in _TRUE:
            return "on"
        if v in _FALSE:
            return "off"
        raise InputError(f"{opt.name} takes on or off, not {value!r}")
    if opt.kind == "window":
        from .sendwindow import SendWindow

        window = SendWindow.parse(value)
        return str(window) if window else "off"
    if opt.kind == "zone":
        from .sendwindow import zone

        return zone(value).key
    if opt.kind == "cap":
        if value.strip().lower() == "off":
            return "off"
        if not value.strip().isdigit() or not 1 <= int(value) <= 100:
            raise InputError(f"{opt.name} takes off or a whole number from 1 to 100, not {value!r}")
        return str(int(value))
    if opt.kind == "hours":
        if not value.strip().isdigit() or not 0 <= int(value) <= 720:
            raise InputError(
                f"{opt.name} takes a whole number of hours from 0 (off) to 720, not {value!r}"
            )
        return str(int(value))
    if opt.kind == "email":
        text = value.strip()
        if text.lower() in ("", "off"):
            return ""
        from email_validator import EmailNotValidError, validate_email

        try:
            return str(validate_email(text, check_deliverability=False).normalized)
        except EmailNotValidError as exc:
            raise InputError(
                f"{opt.name} takes an email address or off, not {value!r}: {exc}"
            ) from None
    if opt.kind == "minutes":
        if not value.strip().isdigit() or not 0 <= int(value) <= 120:
            raise InputError(
                f"{opt.name} takes a whole number of minutes from 0 (off) to 120, not {value!r}"
            )
        return str(int(value))
    if opt.kind == "days":
        if not value.strip().isdigit() or not 0 <= int(value) <= 3650:
            raise InputError(
                f"{opt.name} takes a whole number of days from 0 (off) to 3650, not {value!r}"
            )
        return str(int(value))
    if opt.kind == "int":
        lo, hi = 1, 10
        if not value.strip().isdigit() or not lo <= int(value) <= hi:
            raise InputError(f"{opt.name} takes a whole number from {lo} to {hi}, not {value!r}")
        return str(int(value))
    if opt.kind.startswith("choice:"):
        choices = opt.kind.removeprefix("choice:").split(",")
        if value.strip().lower() not in choices:
            raise InputError(f"{opt.name} takes {' or '.join(choices)}, not {value!r}")
        return value.strip().lower()
    check = _validators.get(opt.kind)
    return check(value) if check else value


def _default_text(opt: OptionDef) -> str:
    if opt.kind == "bool":
        return "on" if opt.default else "off"
    return str(opt.default or "")


def get(session: Session, name: str) -> str:
    return value_from(name, session.execute(select(value_query(name))).scalar())


def value_query(name: str) -> ScalarSelect[str | None]:
    """The stored value of option ``name`` (NULL when never set), as a scalar subquery
    the host path reads together with its other settings."""
    return select(Option.value).where(Option.name == definition(name).name).scalar_subquery()


def value_from(name: str, stored: str | None) -> str:
    """The option's value: what staff stored, else its default."""
    return stored if stored is not None else _default_text(definition(name))


def set_value(session: Session, name: str, value: str, *, by: str = "staff") -> str:
    opt = definition(name)
    text = parse_value(opt, value)
    row = session.get(Option, opt.name)
    if row is None:
        session.add(Option(name=opt.name, value=text, updated_by=by))
    else:
        row.value = text
        row.updated_by = by
    session.flush()
    return text


def all_values(session: Session) -> dict[str, tuple[str, bool]]:
    """name -> (value, is_default)."""
    stored: dict[str, str] = {
        r.name: r.value for r in session.execute(select(Option.name, Option.value))
    }
    return {
        name: (stored[name], False) if name in stored else (_default_text(opt), True)
        for name, opt in sorted(option_defs().items())
    }
