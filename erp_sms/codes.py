"""The words the email log is written in: a text's statuses, channels and programs."""

from __future__ import annotations


class Status:
    """Message statuses (CONTRACT.md "Email log report")."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    HELD = "held"
    CANCELED = "canceled"
    MERGED = "merged"  # folded into another text of its order (``merged_into``)

    ALL = (
        QUEUED, SENDING, SENT, DELIVERED, READ, UNDELIVERED, FAILED, SKIPPED, HELD, CANCELED,
        MERGED,
    )  # fmt: skip


class Channel:
    TWILIO = "twilio"
    EMAIL_GATEWAY = "email_gateway"
    ALL = (TWILIO, EMAIL_GATEWAY)


class Program:
    """What a text is for, so a customer can keep one and drop another (CONTRACT.md
    "Consent per program"): an event belongs to one."""

    ORDERS = "orders"  # the order events
    REMINDERS = "reminders"  # reminder sequences, events registered as reminders
    STAFF = "staff"  # staff's one-off texts and answers
    ALL = (ORDERS, REMINDERS, STAFF)
