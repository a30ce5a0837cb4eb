"""Conversations: what customers text back and what staff answer.

- ``keywords``: what a reply asks for (STOP, START, HELP, STATUS, "paid", "wrong number");
- ``inbound``: a reply kept and acted on, in the webhook's transaction;
- ``answers``: staff's answer to a reply, planned like any text, from the number the
  customer wrote to;
- ``alerts``: replies that need a person, mailed to SMSREPLYALERT by the worker.
"""

from __future__ import annotations
