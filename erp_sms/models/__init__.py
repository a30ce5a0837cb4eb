"""The plugin's tables: outbox (= email log) and its history, rule-maintenance records,
setup options, template overrides, consent events and inbound replies.

None of them has a foreign key into the ERP tables: a host may have tables of its own,
and the email log must stay readable after a contact or order is deleted, so each
message keeps a snapshot (order number, contact name, address) of what it was sent for.
"""

from __future__ import annotations

from ..codes import Channel as Channel
from ..codes import Status as Status
from .base import PLANNED as PLANNED
from .base import Base as Base
from .base import _table
from .consent import ConsentEvent as ConsentEvent
from .consent import ErasedOptOut as ErasedOptOut
from .consent import InboundMessage as InboundMessage
from .consent import OptOut as OptOut
from .consent import ProgramOptOut as ProgramOptOut
from .directory import DirectoryEntry as DirectoryEntry
from .directory import DirectoryMark as DirectoryMark
from .messages import Click as Click
from .messages import Fold as Fold
from .messages import HostEvent as HostEvent
from .messages import Message as Message
from .messages import MessageEvent as MessageEvent
from .operations import State as State
from .operations import Worker as Worker
from .sequences import SequenceRun as SequenceRun
from .sequences import SequenceStep as SequenceStep
from .sequences import SequenceSteps as SequenceSteps
from .sequences import SequenceSwitch as SequenceSwitch
from .settings import Option as Option
from .settings import Rule as Rule
from .settings import RuleAudit as RuleAudit
from .settings import RuleFieldValue as RuleFieldValue
from .settings import SenderMap as SenderMap
from .settings import StaffUser as StaffUser
from .settings import TemplateOverride as TemplateOverride

# Core handles for the statements that claim and update rows (outbox, notifier).
message_table = _table(Message)
message_event_table = _table(MessageEvent)
directory_table = _table(DirectoryEntry)
opt_out_table = _table(OptOut)
program_opt_out_table = _table(ProgramOptOut)
sequence_run_table = _table(SequenceRun)
fold_table = _table(Fold)
inbound_table = _table(InboundMessage)
host_event_table = _table(HostEvent)
