"""Staff actions: what the CLI (``erp_sms.cli``) and the web pages (``erp_sms.web``) both
do, so neither re-implements a rule. Each action takes the staff member's session and
name and returns what to tell them; bad input raises ``InputError`` with one sentence.

- ``versions``: a form carries the version it was read at; a stale save is refused;
- ``settings``: the TWILIO records and the options;
- ``template_actions``: templates checked, previewed, saved, reset;
- ``replies``: customers' replies, their conversations and staff's answers;
- ``texts``: one-off texts, release, cancel, retry; consent; contacts on gateways.
"""

from __future__ import annotations

from .replies import (
    Turn,
    answer_reply,
    contact_names,
    conversation,
    replies,
)
from .settings import (
    UNENCRYPTED,
    OptionRow,
    RuleSaved,
    option_rows,
    set_option,
    set_rule,
    test_credentials,
)
from .template_actions import (
    SAMPLE_SENDER,
    Preview,
    PreviewLine,
    TemplateCheck,
    TemplateRow,
    check_template,
    preview,
    reset_template,
    sample_context,
    save_template,
    template_rows,
    variables,
)
from .texts import (
    GatewayContact,
    cancel,
    change_consent,
    erase_contact,
    gateway_contacts,
    mark_reply_done,
    release,
    retry,
    text_contact,
)
from .versions import (
    option_version,
    rule_version,
    template_version,
)

__all__ = [
    "SAMPLE_SENDER",
    "UNENCRYPTED",
    "GatewayContact",
    "OptionRow",
    "Preview",
    "PreviewLine",
    "RuleSaved",
    "TemplateCheck",
    "TemplateRow",
    "Turn",
    "answer_reply",
    "cancel",
    "change_consent",
    "check_template",
    "contact_names",
    "conversation",
    "erase_contact",
    "gateway_contacts",
    "mark_reply_done",
    "option_rows",
    "option_version",
    "preview",
    "release",
    "replies",
    "reset_template",
    "retry",
    "rule_version",
    "sample_context",
    "save_template",
    "set_option",
    "set_rule",
    "template_rows",
    "template_version",
    "test_credentials",
    "text_contact",
    "variables",
]
