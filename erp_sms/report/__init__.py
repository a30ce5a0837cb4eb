"""The email log report: filters, pages, totals, groups and the writers (table, CSV,
JSON, HTML) the CLI and the pages share. The CSV export streams: a log of a million rows
exports with flat memory.

- ``query``: filters and the rows they select; ``export``: the streamed CSV;
- ``totals``: counts, segments and cost, also grouped; ``writers``: the formats.
"""

from __future__ import annotations

from .export import (
    export_csv,
)
from .query import (
    COLUMNS,
    FORMATS,
    Filters,
    count,
    count_upto,
    iso_seconds,
    make_filters,
    merged_under,
    newest,
    parse_when,
    rows,
)
from .totals import (
    GROUP_COLUMNS,
    GROUPS,
    Totals,
    group_row,
    grouped,
    public,
    totals,
)
from .writers import (
    WRITERS,
    write_csv,
    write_html,
    write_json,
    write_table,
)

__all__ = [
    "COLUMNS",
    "FORMATS",
    "GROUPS",
    "GROUP_COLUMNS",
    "WRITERS",
    "Filters",
    "Totals",
    "count",
    "count_upto",
    "export_csv",
    "group_row",
    "grouped",
    "iso_seconds",
    "make_filters",
    "merged_under",
    "newest",
    "parse_when",
    "public",
    "rows",
    "totals",
    "write_csv",
    "write_html",
    "write_json",
    "write_table",
]
