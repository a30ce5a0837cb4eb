"""Inline delivery: texts sent right after the host's commit (never inside it), in a
background thread, when ``ERP_SMS_INLINE_DISPATCH`` is on. The notifier says that texts
were queued (``notifier.texts_queued``); this module listens. The worker or
``erp-sms dispatch`` picks up anything left."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from .config import Settings
from .db import Database
from .notifier import texts_queued

log = logging.getLogger(__name__)


_inline_db: dict[str, Database] = {}
_inline_lock = threading.Lock()
_inline_run_lock = threading.Lock()  # one inline delivery at a time per process
_inline_threads: list[threading.Thread] = []


def join_inline(timeout: float | None = None) -> int:
    """Wait for the inline deliveries started so far (a host's tests, a clean shutdown);
    how many there were."""
    with _inline_lock:
        threads = list(_inline_threads)
    for t in threads:
        t.join(timeout)
    with _inline_lock:
        for t in threads:
            if not t.is_alive() and t in _inline_threads:
                _inline_threads.remove(t)
    return len(threads)


def schedule_inline(session: Session, settings: Settings) -> None:
    """Deliver right after ``session`` commits, in a background thread; nothing happens
    on rollback. The worker or ``erp-sms dispatch`` picks up anything left."""
    if session.info.get("erp_sms_inline"):
        return
    session.info["erp_sms_inline"] = True

    def after_commit(sess: Session) -> None:
        sess.info.pop("erp_sms_inline", None)
        t = threading.Thread(
            target=_inline_run, args=(settings,), daemon=True, name="erp-sms-inline"
        )
        with _inline_lock:
            _inline_threads.append(t)
        t.start()

    def after_rollback(sess: Session, _previous: object) -> None:
        sess.info.pop("erp_sms_inline", None)
        if event.contains(sess, "after_commit", after_commit):
            event.remove(sess, "after_commit", after_commit)

    event.listen(session, "after_commit", after_commit, once=True)
    event.listen(session, "after_soft_rollback", after_rollback, once=True)


def _inline_run(settings: Settings) -> None:
    # Imported here, in the delivery thread, not at the top: the host path (which
    # imports this module) loads no channel, no twilio, until a text is to go out.
    from .dispatch import Dispatcher

    try:
        with _inline_run_lock:
            db = _inline_db.get(settings.database_url)
            if db is None:
                db = _inline_db[settings.database_url] = Database(settings.database_url)
            Dispatcher(db, settings).run_once()
    except Exception:
        log.exception("inline dispatch failed; the worker or `erp-sms dispatch` will retry")


@texts_queued.connect
def _on_texts_queued(session: Session, **kwargs: Any) -> None:
    settings: Settings = kwargs["settings"]
    if settings.inline_dispatch:
        schedule_inline(session, settings)
