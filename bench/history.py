"""A message history of any size, written by the database itself (a million rows in
seconds, where inserting them from Python takes minutes): the same recent traffic — the
last 31 days — in every size, older texts spread over the two years before. So a page
that reads only what it shows costs the same at 10,000 rows as at 1,000,000, and one that
reads all history does not."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

RECENT = 5000  # texts in the last 31 days, in every size
NAMES = 2000  # contacts (names and numbers) the history is spread over
ORDERS_PER_CONTACT = 50

# One row per number i: created so many seconds ago, a status by i's last digits, a
# Twilio SID for those sent through Twilio.
_AGE = (
    "CASE WHEN i > {n} - {recent} THEN ({n} - i) * (31 * 86400 / {recent}) "
    "ELSE 31 * 86400 + ({n} - {recent} - i) * (730 * 86400 / ({n} - {recent} + 1)) END"
)
_STATUS = (
    "CASE WHEN i % 100 < 80 THEN 'delivered' WHEN i % 100 < 90 THEN 'sent' "
    "WHEN i % 100 < 95 THEN 'failed' WHEN i % 100 < 98 THEN 'undelivered' "
    "ELSE 'canceled' END"
)
_REASON = (
    "CASE WHEN i % 100 >= 90 AND i % 100 < 98 THEN CASE i % 3 WHEN 0 THEN "
    "'Unknown destination handset (Twilio 30005)' WHEN 1 THEN "
    "'Carrier violation (Twilio 30007)' ELSE 'Landline or unreachable carrier (30006)' "
    "END END"
)


def _columns(d: str, n: int) -> dict[str, str]:
    """Each column's SQL in dialect ``d`` ('postgresql' or 'mariadb'), over ``i``."""

    def cat(*parts: str) -> str:
        return "CONCAT(" + ", ".join(parts) + ")"

    pad = "LPAD(CAST({x} AS {t}), 4, '0')"
    t = "TEXT" if d == "postgresql" else "CHAR"
    contact = f"i % {NAMES}"
    number = pad.format(x=contact, t=t)
    age = _AGE.format(n=n, recent=RECENT)
    when = (
        f"(now() AT TIME ZONE 'utc') - make_interval(secs => {age})"
        if d == "postgresql"
        else f"UTC_TIMESTAMP() - INTERVAL ({age}) SECOND"
    )
    twilio = "i % 5 <> 0"
    sid = cat("'SM'", "MD5(CAST(i AS " + t + "))")
    return {
        "idempotency_key": cat("'h'", f"CAST(i AS {t})"),
        "event": "CASE WHEN i % 2 = 0 THEN 'shipped' ELSE 'sent_to_production' END",
        "template": "CASE WHEN i % 2 = 0 THEN 'SMS SESHIP' ELSE 'SMS S2P' END",
        "order_ref": f"CAST(i / 3 AS {t})",
        "order_number": cat("'SO-'", f"CAST(i / 3 AS {t})"),
        "organization_name": cat("'Fabricator '", f"CAST(i / 3 % 400 AS {t})"),
        "contact_ref": cat("'c'", f"CAST({contact} AS {t})"),
        "contact_name": cat(
            "CASE i % 4 WHEN 0 THEN 'Ann Müller ' WHEN 1 THEN 'Bob Ray ' "
            "WHEN 2 THEN 'Chloé Dupont ' ELSE 'Dan Østergaard ' END",
            f"CAST({contact} AS {t})",
        ),
        "channel": f"CASE WHEN {twilio} THEN 'twilio' ELSE 'email_gateway' END",
        "address": f"CASE WHEN {twilio} THEN {cat(chr(39) + '+1312555' + chr(39), number)} "
        f"ELSE {cat(chr(39) + '312555' + chr(39), number, chr(39) + '@vtext.com' + chr(39))} END",
        "raw_address": cat("'+1312555'", number),
        "recipient": cat("'+1312555'", number),
        "status": _STATUS,
        "reason": _REASON,
        "body": cat("'Acme Fabrication: your order SO-'", f"CAST(i / 3 AS {t})", "' has shipped.'"),
        "segments": "1",
        "attempts": "1",
        "maybe_sent": "FALSE",
        "provider_id": f"CASE WHEN {twilio} THEN {sid} END",
        "price": f"CASE WHEN {twilio} AND i % 100 < 90 THEN '-0.00790' END",
        "price_unit": f"CASE WHEN {twilio} AND i % 100 < 90 THEN 'USD' END",
        "created_at": when,
        "updated_at": when,
        "sent_at": when,
    }


def fill(engine: Any, n: int) -> None:
    """``n`` messages of history in the outbox of ``engine`` (PostgreSQL or MariaDB)."""
    d = engine.dialect.name
    cols = _columns(d, n)
    source = (
        f"generate_series(1, {n}) AS g(i)"
        if d == "postgresql"
        else f"(SELECT seq AS i FROM seq_1_to_{n}) AS g"  # noqa: S608 - our numbers
    )
    names = ", ".join(cols)
    values = ", ".join(cols.values())
    with engine.begin() as conn:
        # Our own expressions and sizes, nothing typed by anyone.
        insert = f"INSERT INTO sms_message ({names}) SELECT {values} FROM {source}"  # noqa: S608
        conn.execute(text(insert))
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        # VACUUM too: a table just bulk-filled has no visibility map yet, and its first
        # reads set hint bits — a cost a table of a year's texts does not carry.
        conn.execute(
            text("VACUUM ANALYZE sms_message" if d == "postgresql" else "ANALYZE TABLE sms_message")
        )
