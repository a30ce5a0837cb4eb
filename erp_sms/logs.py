"""How erp-sms's commands log: one format for every line (``ERP_SMS_LOG_FORMAT``: ``text``
or ``json``), phone numbers masked in both.

JSON is one object a line — time, level, logger, message, and ``message_id`` where the
line is about one text — what log shippers (journald, Loki, CloudWatch) parse. Written
with the standard library's ``json``: the masking is ours whichever formatter writes the
line, and a host's process gains no dependency for it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from .addresses import NUMBER_IN_TEXT, mask


def masked(text: str) -> str:
    """``text`` with each phone number cut to its last 4 digits (+13125550101 ->
    ***0101): numbers are personal data, and logs are kept and shipped."""
    return NUMBER_IN_TEXT.sub(lambda m: mask(m.group(0)), text)


class TextFormatter(logging.Formatter):
    """``2026-12-05 09:00:01,234 INFO erp_sms.dispatch: message 41 sent``, masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return masked(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": masked(record.getMessage()),
        }
        message_id = getattr(record, "message_id", None)
        if message_id is not None:
            line["message_id"] = message_id
        if record.exc_info:
            line["exception"] = masked(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged (a test runner or a
    daemon may replace it after set-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup(verbose: bool, fmt: str = "text") -> None:
    """Route every log line (erp-sms's, the web server's, the libraries') through one
    handler on stderr in ``fmt``; INFO with ``verbose``, else WARNING. Lines a command
    always shows (the worker's start, batches and stop) log on ``erp_sms.worker`` at
    INFO, shown either way."""
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Stderr):  # ours, from an earlier setup in this process
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("erp_sms.worker").setLevel(logging.INFO)
    # The twilio client logs every request's headers at INFO; werkzeug every request.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
