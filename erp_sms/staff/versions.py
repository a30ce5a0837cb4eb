"""Versions: a form carries the version it was read at; a save from a stale copy is
refused with who changed what."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import options as options_mod
from .. import templates as tpl
from ..errors import StaleEdit
from ..models import Option, RuleAudit, TemplateOverride

# -- versions: a form carries the version it was read at; a stale save is refused --------


def _digest(text: str | None) -> str:
    return "default" if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def _when(at: dt.datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC" if at else "just now"


def rule_version(session: Session, full: str) -> str:
    """The version of a rule record's values: its last change in the audit."""
    last = session.scalar(
        select(func.max(RuleAudit.id)).where(
            RuleAudit.rule_type == full, RuleAudit.action.in_(("set", "cleared"))
        )
    )
    return str(last or 0)


def _check_rule_version(session: Session, full: str, version: str | None) -> None:
    if version is None or version == rule_version(session, full):
        return
    since = int(version) if version.isdigit() else 0
    changes = session.scalars(
        select(RuleAudit)
        .where(
            RuleAudit.rule_type == full,
            RuleAudit.action.in_(("set", "cleared")),
            RuleAudit.id > since,
        )
        .order_by(RuleAudit.id)
    )
    said = "; ".join(
        f"{a.field} {a.action} by {a.changed_by} at {_when(a.changed_at)}" for a in changes
    )
    raise StaleEdit(
        f"{full} was changed since you opened it ({said}): nothing was saved. "
        "Look at the record again, then make your change."
    )


def template_version(session: Session, name: str) -> str:
    """The version of a template: its saved text (``default`` while it has none)."""
    row = session.get(TemplateOverride, tpl.canonical_name(session, name))
    return _digest(row.body if row else None)


def _check_template_version(session: Session, name: str, version: str | None) -> None:
    # Locked until the commit: two saves from one version cannot both pass.
    row = session.get(TemplateOverride, name, with_for_update=True)
    if version is None or version == _digest(row.body if row else None):
        return
    now = (
        f"saved by {row.updated_by or 'someone'} at {_when(row.updated_at)} as: {row.body}"
        if row
        else "reset to the default"
    )
    raise StaleEdit(
        f"{name} was changed since you opened it (it was {now}): nothing was saved. "
        "Your text is kept in the editor: save again to put it in place of theirs."
    )


def option_version(session: Session, name: str) -> str:
    """The version of an option: its stored value (``default`` while it has none)."""
    row = session.get(Option, options_mod.definition(name).name)
    return _digest(row.value if row else None)
