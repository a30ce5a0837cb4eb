"""Progress for long work (a purge, an import, a big report, a backlog): a bar on a
terminal, nothing when the output is piped or logged (click.progressbar)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A function to call with each step's count; a bar on stderr when it is a terminal
    and the work is big enough to wait for."""
    if total < 1000 or not sys.stderr.isatty():
        yield lambda _n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update
