"""A stop asked of ``erp-sms worker`` while it is still starting.

Importing erp-sms takes most of a second; a supervisor that stops the worker in that time
(a deploy that restarts it twice) used to kill it with SIGTERM's default action, exit
-15, as if it had crashed. In that process only — the ``erp-sms`` console script running
``worker`` — the signal is noted from the first import on, and the worker stops cleanly
as soon as it is up (``requested``). A host importing erp-sms is never touched.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

requested: int | None = None  # the signal that asked for a stop before the worker was up


def _note(signum: int, _frame: object) -> None:
    global requested
    requested = signum


def install() -> None:
    """Note SIGTERM and SIGINT until the worker installs its own handlers."""
    if (
        os.path.basename(sys.argv[0] if sys.argv else "") == "erp-sms"
        and sys.argv[1:2] == ["worker"]
        and threading.current_thread() is threading.main_thread()
    ):
        signal.signal(signal.SIGTERM, _note)
        signal.signal(signal.SIGINT, _note)


install()
