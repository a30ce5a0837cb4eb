"""What a customer's reply asks for: a keyword (STOP, START, HELP, STATUS in the
languages of ``rules/keywords.toml``, any case, accents ignored), a phrase that clearly
asks to stop, says the invoice is paid or the number is wrong — or free text for a
person to read."""

from __future__ import annotations

import re

from ..catalog import keywords, plain

STOP, START, HELP, REPLY = "stop", "start", "help", "reply"
STATUS, PAID, WRONG_NUMBER = "status", "paid", "wrong_number"

# Kinds that need a person (the inbox, the alert mail): a question or a claim staff
# should see. STOP/START/HELP/STATUS are answered by erp-sms itself.
NEEDS_A_PERSON = frozenset({REPLY, PAID, WRONG_NUMBER})

_WORD = re.compile(r"^[\s\W_]*([^\W\d_]+)[\s\W_]*$")


def classify_reply(body: str) -> str:
    """stop | start | help | status | wrong_number | paid | reply. A single keyword first
    (surrounding spaces and punctuation ignored), then phrases: a wrong number and a
    request to stop are opt-outs (FCC 2025-04-11: any reasonable means), then "paid"."""
    kw = keywords()
    text = body or ""
    m = _WORD.match(text)
    if m:
        word = plain(m.group(1))
        for kind, words in ((STOP, kw.stop), (START, kw.start), (HELP, kw.help)):
            if word in words:
                return kind
        if word in kw.status:
            return STATUS
    if any(p.search(text) for p in kw.wrong_number_phrases):
        return WRONG_NUMBER
    if any(p.search(text) for p in kw.stop_phrases):
        return STOP
    if any(p.search(text) for p in kw.paid_phrases):
        return PAID
    return REPLY
