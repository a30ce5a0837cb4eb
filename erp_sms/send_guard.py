"""The opt-out check around each handover: no text reaches a provider after the opt-out
that stops it has committed (CONTRACT.md "The email log tells the truth"). Used by the
dispatcher; ``outbox.cancel_for_opt_out`` is the other half."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, bindparam, create_engine, select
from sqlalchemy.exc import SQLAlchemyError

from . import erased
from .config import Settings
from .db import Database, one_line
from .errors import TransientError
from .models import ErasedOptOut, message_table, opt_out_table, program_opt_out_table
from .outbox import Claimed

# The guard's statements, built once (building one costs more than running it here: a
# read by primary key for each text handed over).
_m, _t, _p, _e = message_table.c, opt_out_table.c, program_opt_out_table.c, ErasedOptOut
_LOCK = select(_m.id).where(_m.id == bindparam("id")).with_for_update(read=True, key_share=True)
_LISTED = (
    select(_t.at, _t.source)
    .where(_t.number == bindparam("number"))
    .union_all(
        select(_e.at, _e.source).where(
            _e.digest == bindparam("digest"),
            _e.program.in_([bindparam("every"), bindparam("program")]),
        )
    )
)
_PROGRAM = select(_p.at, _p.source).where(
    _p.number == bindparam("number"), _p.program == bindparam("program")
)


class SendGuard:
    """The opt-out list, read again right before each text is handed over, so that no
    text reaches a provider after the opt-out that stops it has committed (CONTRACT.md
    "The email log tells the truth").

    On PostgreSQL and MariaDB the read is not enough on its own: a text checked just
    before the STOP commits would still reach the provider just after. So the sender holds
    a share lock on its row across the handover and reads the list after taking it; the
    opt-out locks the number's ``sending`` rows before it commits
    (``outbox.cancel_for_opt_out``), so it waits for a handover already cleared, and a
    handover that starts later sees the opt-out. It costs a lock and a read per text on
    a connection of its own (a pool as large as the senders). SQLite has no row locks:
    there it is the read alone, right before the send."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.strict = db.engine.dialect.name in ("postgresql", "mysql", "mariadb")
        self._own: Engine | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Connection] = []
        if self.strict:
            size = max(settings.dispatch.concurrency, settings.dispatch.smtp_connections) + 1
            # No ping before each checkout (a round trip per text): a connection that
            # died fails the read, which is a transient fault (the text waits and retries).
            self._own = create_engine(
                db.engine.url,
                pool_size=size,
                max_overflow=size,
                isolation_level="READ COMMITTED",
            )
            self.engine = self._own
        else:
            self.engine = db.engine.execution_options(erp_sms_begin_immediate=False)

    @contextlib.contextmanager
    def clear_to_send(self, msg: Claimed) -> Iterator[None]:
        """Run the handover inside, unless ``msg``'s number opted out
        (``OptedOutMeanwhile``); ``TransientError`` when the list cannot be read. Each
        sending thread keeps its connection for the run (no checkout per text)."""
        if msg.recipient is None:
            yield
            return
        try:
            conn = self._connection()
            conn.begin()
            if self.strict:
                # PostgreSQL's weakest lock (FOR KEY SHARE): the heartbeat's and the
                # recorder's UPDATEs pass it, an opt-out's FOR UPDATE waits for it.
                # MariaDB has only a share lock; its heartbeat skips locked rows.
                conn.execute(_LOCK, {"id": msg.id})
            # The number's opt-out, or its keyed hash's should its owner's data have been
            # erased since the text was planned: one statement.
            hash_of = erased.hasher(conn)
            found = conn.execute(
                _LISTED,
                {
                    "number": msg.recipient,
                    "digest": hash_of(msg.recipient) if hash_of else "",
                    "every": erased.EVERY,
                    "program": msg.program or erased.EVERY,
                },
            ).first()
            if found is None and msg.program:  # opted out of this text's program only
                found = conn.execute(
                    _PROGRAM, {"number": msg.recipient, "program": msg.program}
                ).first()
        except SQLAlchemyError as exc:
            self._drop()
            raise _unreadable(exc) from None
        try:
            if found is not None:
                raise OptedOutMeanwhile(
                    f"canceled: {msg.recipient} opted out on {found.at:%Y-%m-%d %H:%M:%S} UTC "
                    f"({found.source}) while the text was about to go out; it was not sent"
                )
            yield
        finally:
            try:
                conn.rollback()  # only locks to let go of
            except Exception:
                self._drop()
            if not self.strict:
                self._drop()  # SQLite: back to the shared pool, which the senders outnumber

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect()
            self._local.conn = conn
            if self.strict:
                with self._lock:
                    self._all.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        if self._own is not None:
            self._own.dispose()


def _unreadable(exc: SQLAlchemyError) -> TransientError:
    return TransientError(
        f"cannot read the opt-out list before sending ({one_line(exc)})", provider="erp-sms"
    )


class OptedOutMeanwhile(Exception):
    """The number opted out after the text was claimed: it is canceled, not sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
