"""``erp-sms dispatch``, ``worker`` and ``prices``: delivering texts."""

from __future__ import annotations

import logging
import signal

import click

from .. import health
from ..config import get_settings
from .common import database, readable
from .progress import progress_bar

# The worker's own lines (start, batches, stop): INFO on this logger, shown without -v,
# in the one log format (ERP_SMS_LOG_FORMAT) with everything else on stderr.
say = logging.getLogger("erp_sms.worker").info

# -- dispatch / worker ----------------------------------------------------------------------


@click.command()
def dispatch() -> None:
    """Deliver every text that is due, then exit with a one-line summary.

    \b
    Example:
      erp-sms dispatch        # e.g. from cron every minute
    """
    from ..dispatch import Dispatcher

    with database() as db_:
        readable(db_)
        d = Dispatcher(db_)
        with db_.read_session() as s:
            due = health.due_count(s, d.clock())
        with progress_bar(due, "delivering") as advance:
            d.progress = advance
            summary = d.run_once()
    click.echo(summary.line())


@click.command()
@click.option("--worker-id", default=None, help="Name of this worker in claims (default host:pid).")
def worker(worker_id: str | None) -> None:
    """Keep delivering until SIGTERM or SIGINT; the text in hand is finished first.

    \b
    Example:
      erp-sms worker
    """
    import threading

    from .. import _early
    from ..dispatch import Dispatcher

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        say("worker: %s, finishing the text in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if _early.requested is not None:  # asked to stop while it was starting
        _stop(_early.requested, None)
    with database() as db_:
        readable(db_)
        d = Dispatcher(db_, worker_id=worker_id, stop=stop)
        say("worker %s: delivering (SIGTERM to stop)", d.worker_id)
        d.run_forever(on_batch=lambda s: say("%s", s.line()))
    say("worker: stopped")


@click.command()
@click.option("--days", default=7, show_default=True, help="Look back this many days.")
@click.option("--limit", default=500, show_default=True, help="At most this many messages per run.")
def prices(days: int, limit: int) -> None:
    """Fetch Twilio's price for recent texts that have none yet (Twilio prices a message
    after it is sent; the report totals the cost).

    \b
    Example:
      erp-sms prices            # e.g. hourly from cron
    """
    from ..channels.twilio.prices import reconcile

    with database() as db_:
        run = reconcile(db_, get_settings(), days=days, limit=limit)
    click.echo(run.line())
