"""The one CSV writer of the pages and the CLI: no cell starts a formula.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and some a tab
or carriage return) as a formula, so a contact named ``=HYPERLINK(…)`` or a reply
``+cmd…`` would run in the office's spreadsheet (OWASP "CSV injection"). Such a cell
is written with a ``'`` before it, which spreadsheets show as text. The streamed log
export does the same in SQL (``safe_column``), so it stays free of per-row Python.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import IO, Any

from sqlalchemy import case, func, literal

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe(value: Any) -> Any:
    """``value`` as a cell that cannot start a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_column(column: Any) -> Any:
    """``safe`` in SQL, for a text column."""
    first = func.substr(column, 1, 1)
    return case((first.in_(FORMULA_STARTS), literal("'").concat(column)), else_=column)


class Writer:
    """``csv.writer`` whose every cell goes through ``safe``."""

    def __init__(self, out: IO[str]) -> None:
        self._w = csv.writer(out, lineterminator="\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self._w.writerow([safe(c) for c in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def write_records(out: IO[str], rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows of plain values under a header of ``columns``."""
    w = Writer(out)
    w.writerow(columns)
    w.writerows([row.get(c, "") for c in columns] for row in rows)
