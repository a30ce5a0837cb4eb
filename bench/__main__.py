"""python -m bench [host] [dispatch] [report] — all when none is named."""

from __future__ import annotations

import sys

from . import dispatch, host, report_memory

SUITES = {"host": host.main, "dispatch": dispatch.main, "report": report_memory.main}


def main(argv: list[str]) -> None:
    names = argv or ["host", "dispatch"]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        sys.exit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(SUITES)}")
    for name in names:
        SUITES[name]()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
