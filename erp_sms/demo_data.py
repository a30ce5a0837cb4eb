"""What the demo's ERP registers: its invoices and dunning sequence — shared by the demo
and its host module (``erp_sms.demo_host``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .sequences import Sequence, register_sequence


@dataclass(frozen=True)
class Invoice:
    """The demo's invoices: any object with an id does (the host's own)."""

    id: int
    number: str
    due_date: dt.date
    amount: str


DUNNING_STEPS = [(-3, "SMS DUNNING SOON"), (0, "SMS DUNNING DUE"), (7, "SMS DUNNING LATE")]
DUNNING_TEMPLATES = {
    "SMS DUNNING SOON": "{{ order.organization.name }}: invoice {{ invoice.number }} "
    "({{ invoice.amount }}) is due on {{ invoice.due_date }}. Reply STOP to opt out.",
    "SMS DUNNING DUE": "{{ order.organization.name }}: invoice {{ invoice.number }} "
    "({{ invoice.amount }}) is due today. Reply STOP to opt out.",
    "SMS DUNNING LATE": "{{ order.organization.name }}: invoice {{ invoice.number }} "
    "is {{ sequence.days }} days overdue; please call us. Reply STOP to opt out.",
}


def register() -> Sequence:
    """The demo's dunning sequence (registering it again returns the same one)."""
    return register_sequence(
        "dunning", subject="invoice", steps=DUNNING_STEPS, default_templates=DUNNING_TEMPLATES
    )
