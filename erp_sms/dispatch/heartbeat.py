"""A worker's row in ``sms_worker``: written when it starts, every ``BEAT_SECONDS`` while
it runs, and when it stops — what "last worker seen 4 s ago" is read from."""

from __future__ import annotations

import datetime as dt
import logging
import os

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from ..db import Database, one_line, rowcount
from ..models import Worker
from ..version import __version__

log = logging.getLogger(__name__)

#: How often a running worker says it is alive (health.GONE_AFTER is a few of these).
BEAT_SECONDS = 15.0


def beat(db: Database, worker_id: str, now: dt.datetime, *, stopped: bool = False) -> None:
    """Write the worker's heartbeat (``stopped``: it is leaving). A database that cannot
    be written is logged, never raised: the texts matter more than the heartbeat."""
    values = {"seen_at": now, "stopped_at": now if stopped else None}
    try:
        with db.session() as s:
            done = rowcount(
                s.execute(update(Worker).where(Worker.worker_id == worker_id).values(**values))
            )
            if not done and not stopped:
                s.add(
                    Worker(
                        worker_id=worker_id,
                        started_at=now,
                        version=__version__[:32],
                        pid=os.getpid(),
                        **values,
                    )
                )
    except SQLAlchemyError as exc:
        log.warning("worker %s: cannot write its heartbeat (%s)", worker_id, one_line(exc))
