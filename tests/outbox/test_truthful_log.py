"""The email log tells the truth (issue 24, CONTRACT.md "The email log tells the truth"):
each finding from trying erp-sms against real peers under races, on a real database, a
Postfix-strict SMTP server and the loopback Twilio."""

from __future__ import annotations

import datetime as dt
import email.policy
import threading
from dataclasses import replace
from email.parser import BytesParser

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from erp_sms import consent, outbox, rule_records, testing
from erp_sms.db import Database, utcnow
from erp_sms.dispatch import Dispatcher
from erp_sms.models import Message, OptOut, Rule, Status, message_table
from erp_sms.outbox import Outcome
from erp_sms.testing import SmtpSink
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..helpers import (
    LogWatch,
    activate_twilio,
    callback,
    expire_leases,
    make_orders,
    messages,
    post,
)

NUMBER = "+13125550000"


def one_number_backlog(db: Database, n: int) -> list[int]:
    """``n`` queued gateway texts, all to the same customer's number."""
    testing.queue_texts(db.engine, n, prefix="one")
    with db.engine.begin() as conn:
        conn.execute(update(message_table).values(recipient=NUMBER, address="3125550000@vtext.com"))
        return list(conn.execute(select(message_table.c.id).order_by(message_table.c.id)).scalars())


def statuses(db: Database) -> dict[int, Message]:
    with db.session() as s:
        found = {m.id: m for m in s.scalars(select(Message))}
        for m in found.values():
            _ = list(m.history)
        s.expunge_all()
        return found


def until_a_lock_is_waited_for(db: Database) -> None:
    """Return once the database shows a transaction waiting for a row lock (its own
    tables say so); AssertionError after 10 s."""
    pause = threading.Event()  # never set: paces the look
    for _ in range(1000):
        if _someone_waits_for_a_lock(db):
            return
        pause.wait(0.01)
    raise AssertionError("no transaction waited for a lock")


def _someone_waits_for_a_lock(db: Database) -> bool:
    sql = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()",
        "mysql": "SELECT count(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'",
    }[db.engine.dialect.name]
    with db.engine.connect() as conn:
        return bool(conn.exec_driver_sql(sql).scalar())


# -- a STOP during dispatch --------------------------------------------------------------------


def test_a_stop_cancels_only_the_texts_no_worker_holds(any_db: Database):
    """A worker claims two of the number's three texts in the middle of the STOP's
    transaction (right after its first statement on the outbox): they stay the worker's,
    and their sends are recorded as sent. SQLite has one writer at a time: the claim
    cannot come in between there."""
    if any_db.engine.dialect.name == "sqlite":
        pytest.skip("SQLite: the STOP's transaction holds the only write lock")
    ids = one_number_backlog(any_db, 3)
    claimed: list[outbox.Claimed] = []
    with Session(any_db.engine) as s, s.begin():

        @event.listens_for(s.connection(), "after_cursor_execute")
        def worker_claims(_conn: object, _cursor: object, statement: str, *_a: object) -> None:
            if "sms_message" in statement and not claimed:
                claimed.extend(outbox.claim_due(any_db, "w1", limit=2, lease_seconds=60))
                claimed.append(None)  # type: ignore[arg-type]  # claimed once

        done = consent.opt_out(s, number=NUMBER, source="sms_reply")
    held = [c for c in claimed if c is not None]
    assert set(done.canceled).isdisjoint(c.id for c in held)
    assert sorted(done.canceled + [c.id for c in held]) == ids
    for c in held:  # the worker's sends went out: their outcomes are the truth
        assert outbox.finish(any_db, c, Outcome(Status.SENT, provider_id=f"<m{c.id}@x>"))
    rows = statuses(any_db)
    for c in held:
        assert rows[c.id].status == Status.SENT and rows[c.id].provider_id == f"<m{c.id}@x>"
    for i in done.canceled:
        assert rows[i].status == Status.CANCELED
        assert "opted out (sms_reply)" in (rows[i].reason or "")
        assert rows[i].history[-1].status == Status.CANCELED


def test_a_stop_with_hundreds_of_texts_queued_is_a_few_statements(any_db: Database):
    one_number_backlog(any_db, 300)
    statements: list[str] = []
    with Session(any_db.engine) as s, s.begin():
        s.connection()  # the transaction's BEGIN is not the opt-out's

        @event.listens_for(s.connection(), "before_cursor_execute")
        def count(*args: object) -> None:
            statements.append(str(args[2]))

        done = consent.opt_out(s, number=NUMBER, source="sms_reply")
    assert len(done.canceled) == 300
    # a read of the opt-out, its INSERT, the contacts with the number, one UPDATE (and
    # MariaDB's locking read), one INSERT of 300 timeline lines — not a statement a row
    assert len(statements) <= 10, statements


def test_a_stop_that_commits_while_the_worker_holds_texts_stops_the_rest(any_db: Database):
    """The worker has three texts to one number in hand; the first is at the mail server
    when the STOP commits: the other two are canceled, not sent."""
    ids = one_number_backlog(any_db, 3)
    answer = threading.Event()
    with SmtpSink(hold=answer) as sink:
        settings = with_settings(smtp_host=sink.host, smtp_port=sink.port)
        settings = replace(settings, dispatch=replace(settings.dispatch, smtp_connections=1))
        worker = Dispatcher(any_db, settings)
        summary: list[object] = []
        t = threading.Thread(target=lambda: summary.append(worker.run_once()))
        t.start()
        sink.wait_for(1)  # the first text is at the server, its answer held

        def stop() -> None:
            with any_db.session() as s:
                consent.opt_out(s, number=NUMBER, source="sms_reply")

        stopper = threading.Thread(target=stop)  # waits for the handover where it can
        stopper.start()
        if any_db.engine.dialect.name == "sqlite":
            stopper.join(30)  # no row locks: it commits at once
        else:
            until_a_lock_is_waited_for(any_db)
        answer.set()
        stopper.join(30)
        t.join(30)
        assert len(sink.received) == 1
    rows = statuses(any_db)
    assert rows[ids[0]].status == Status.SENT
    for i in ids[1:]:
        assert rows[i].status == Status.CANCELED
        assert "it was not sent" in (rows[i].reason or "")
    with any_db.session() as s:
        assert s.get(OptOut, NUMBER) is not None


# -- a status callback racing the send's outcome -----------------------------------------------

PUBLIC = "https://erp.example.com/sms"


def test_a_status_callback_that_comes_while_the_outcome_commits_is_attached(any_db: Database):
    """Twilio's callback is stored while the worker's outcome transaction is open and
    about to commit: neither saw the other. On PostgreSQL only: MariaDB's locking read
    waits for the outcome's commit, and SQLite has one writer at a time."""
    if any_db.engine.dialect.name != "postgresql":
        pytest.skip("the report's read waits for the outcome's commit on this database")
    with any_db.session() as s:
        activate_twilio(s)
    client = create_app(db=any_db, settings=with_settings(public_url=PUBLIC)).test_client()
    testing.queue_texts(any_db.engine, 1, gateway=False)
    (claimed,) = outbox.claim_due(any_db, "w1", limit=1, lease_seconds=60)
    sid = "SM" + "0123456789abcdef" * 2
    answers: list[int] = []

    def callback_arrives(_conn: object) -> None:
        if not answers:
            answers.append(0)  # the webhook's own commit comes through here too
            report = callback(sid, "undelivered", ErrorCode="30005", To="+13125550000")
            answers[0] = post(client, "status", report).status_code

    event.listen(any_db.engine, "commit", callback_arrives)
    try:
        outbox.finish(any_db, claimed, Outcome(Status.SENT, provider_id=sid, callbacks=True))
    finally:
        event.remove(any_db.engine, "commit", callback_arrives)
    assert answers == [204]
    m = statuses(any_db)[claimed.id]
    assert m.status == Status.UNDELIVERED and m.error_code == 30005
    assert [(h.kind, h.status) for h in m.history][-2:] == [
        ("status", Status.SENT),
        ("callback", Status.UNDELIVERED),
    ]


# -- clocks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [-15, 15])
def test_a_worker_whose_clock_is_off_takes_no_text_another_worker_holds(any_db: Database, skew):
    """Worker A claims with a 6 s lease; B's clock (or A's) is 15 s off. Judged by the
    database's clock, A's lease is running: B gets nothing, whichever clock is wrong."""
    testing.queue_texts(any_db.engine, 3)
    real = utcnow()
    with any_db.engine.begin() as conn:  # due by either clock
        conn.execute(update(message_table).values(next_attempt_at=real - dt.timedelta(minutes=1)))
    off = real + dt.timedelta(seconds=skew)
    a_clock, b_clock = (off, real) if skew < 0 else (real, off)  # behind: A; ahead: B
    held = outbox.claim_due(any_db, "A", limit=10, lease_seconds=6, now=a_clock)
    assert len(held) == 3
    assert outbox.claim_due(any_db, "B", limit=10, lease_seconds=6, now=b_clock) == []
    for c in held:
        assert outbox.finish(any_db, c, Outcome(Status.SENT, provider_id=f"<{c.id}@x>"))


# -- SMTP: one refusal never fails another text; encodings the server offers ---------------------


def test_a_message_refused_at_the_end_of_data_does_not_fail_the_next_one(delivery, db, session):
    """A Postfix policy service refuses the first text at the end of DATA (554); Postfix
    keeps that transaction open. The next customer's text is sent, not failed with
    '503 nested MAIL command'."""
    with SmtpSink("reject_data", flaky_failures=1) as sink:
        with_settings(smtp_port=sink.port)
        make_orders(session, 10)
        Dispatcher(db).run_once()
        assert sink.nested == []
        assert len(sink.received) == 9
    rows = sorted(messages(session), key=lambda m: m.id)
    assert rows[0].status == Status.FAILED and "554" in (rows[0].reason or "")
    assert [m.status for m in rows[1:]] == [Status.SENT] * 9


def test_a_503_is_the_session_s_fault_and_the_text_goes_on_a_new_connection(delivery, db, session):
    """The server's session is out of step (503 at MAIL FROM): a new connection, and the
    text is sent — never failed for it."""
    with SmtpSink() as sink:
        with_settings(smtp_port=sink.port)
        make_orders(session, 2)
        original = sink.handle_MAIL
        calls = []

        async def out_of_step_once(*args):
            calls.append(1)
            if len(calls) == 1:
                return "503 5.5.1 Error: nested MAIL command"
            return await original(*args)

        sink.handle_MAIL = out_of_step_once
        Dispatcher(db).run_once()
        assert len(sink.received) == 2
    assert {m.status for m in messages(session)} == {Status.SENT}
    assert all(m.attempts == 1 for m in messages(session))


@pytest.mark.parametrize("eight_bit", [True, False])
def test_a_text_with_accents_goes_8bit_only_where_the_server_offers_it(
    delivery, db, session, eight_bit
):
    with SmtpSink(eight_bit=eight_bit) as sink:
        with_settings(smtp_port=sink.port, smtp_from="Müller GmbH <sms@müller.example>")
        make_orders(session, 1)
        with db.session() as s:
            s.execute(
                update(message_table).values(body="Ihre Bestellung SO-1 ist unterwegs – Grüße")
            )
        Dispatcher(db).run_once()
        ((mail_from, _to, data),) = sink.received
        options = sink.mail_options[0]
    (m,) = messages(session)
    assert m.status == Status.SENT
    assert mail_from == "sms@xn--mller-kva.example"  # the domain in its ASCII form
    parsed = BytesParser(policy=email.policy.default).parsebytes(data)
    assert parsed.get_content().strip() == "Ihre Bestellung SO-1 ist unterwegs – Grüße"
    assert str(parsed["From"]) == "Müller GmbH <sms@xn--mller-kva.example>"
    if eight_bit:
        assert "BODY=8BITMIME" in options
    else:
        assert data.isascii() and "BODY=8BITMIME" not in options
        assert parsed["Content-Transfer-Encoding"] in ("quoted-printable", "base64")


def test_an_address_with_accents_before_the_at_needs_smtputf8_or_is_held(delivery, db, session):
    with_settings(smtp_from="bestellbestätigung@example.com")
    with SmtpSink(smtputf8=False) as plain:
        with_settings(smtp_port=plain.port)
        make_orders(session, 1)
        Dispatcher(db).run_once()  # was: UnicodeEncodeError in the worker
        assert plain.received == []
    (m,) = messages(session)
    assert m.status == Status.HELD and "SMTPUTF8" in (m.reason or "")
    with SmtpSink(smtputf8=True) as utf8:
        with_settings(smtp_port=utf8.port)
        with db.session() as s:
            outbox.release(s)
        Dispatcher(db).run_once()
        assert utf8.received[0][0] == "bestellbestätigung@example.com"
        assert "SMTPUTF8" in utf8.mail_options[0]
    (m,) = messages(session)
    assert m.status == Status.SENT


# -- Twilio sender faults: held and flagged, not failed one by one -------------------------------


@pytest.mark.parametrize("code", [21606, 21212, 21703, 21704, 21608, 30034])
def test_a_sender_twilio_refuses_holds_the_texts_and_flags_the_record(
    delivery, db, session, twilio_server, code
):
    activate_twilio(session)
    make_orders(session, 4, gateway=False)
    twilio_server.fail_next(4, status=400, code=code, message="refused")
    Dispatcher(db).run_once()
    rows = messages(session)
    assert {m.status for m in rows} == {Status.HELD}, {m.reason for m in rows}
    assert all(f"({code})" in (m.reason or "") for m in rows)
    assert all("erp-sms rules" in (m.reason or "") for m in rows)
    rule = session.get(Rule, "TWILIO")
    session.refresh(rule)
    assert rule.rejected_at is not None and str(code) in (rule.rejected_reason or "")
    # staff fix the sender: the held texts go out
    rule_records.set_fields(session, "TWILIO", {"PhoneNumber": "+13125550199"}, by="test")
    session.commit()
    Dispatcher(db).run_once()
    assert {m.status for m in messages(session)} == {Status.SENT}


def test_a_30034_callback_flags_the_sender_so_the_rest_are_held(
    delivery, db, session, twilio_server
):
    """An unregistered 10DLC number is refused by the carriers after Twilio accepted
    the text: that text is undelivered (true), and the texts still to come are held."""
    activate_twilio(session)
    make_orders(session, 3, gateway=False)
    later = utcnow() + dt.timedelta(hours=1)
    with db.engine.begin() as conn:  # the other two are due later
        conn.execute(
            update(message_table).where(message_table.c.id > 1).values(next_attempt_at=later)
        )
    Dispatcher(db).run_once()
    m = messages(session)[0]
    client = create_app(db=db, settings=with_settings(public_url=PUBLIC)).test_client()
    report = callback(m.provider_id, "undelivered", ErrorCode="30034", To=m.recipient)
    assert post(client, "status", report).status_code == 204
    with db.engine.begin() as conn:
        conn.execute(update(message_table).values(next_attempt_at=utcnow()))
    Dispatcher(db).run_once()
    rows = sorted(messages(session), key=lambda r: r.id)
    assert rows[0].status == Status.UNDELIVERED and rows[0].error_code == 30034
    assert [r.status for r in rows[1:]] == [Status.HELD, Status.HELD]
    assert all("10DLC" in (r.reason or "") for r in rows[1:])


# -- the heartbeat's warnings ------------------------------------------------------------------


def test_the_heartbeat_warns_only_when_another_worker_took_a_text(any_db: Database):
    testing.queue_texts(any_db.engine, 2)
    worker = Dispatcher(any_db, worker_id="A")
    done, taken = outbox.claim_due(any_db, "A", limit=2, lease_seconds=60)
    worker._in_hand.update({done.id: done, taken.id: taken})  # as a batch in hand
    lost = LogWatch("erp_sms.dispatch", "lost the claim")
    try:
        # the first text's outcome is recorded while the heartbeat runs: no alarm
        assert outbox.finish(any_db, done, Outcome(Status.SENT, provider_id="<1@x>"))
        assert worker.renew_leases() == 1
        assert not lost.seen.is_set()
        # the second's lease ran out and worker B took it: that is worth a warning
        expire_leases(any_db.engine)
        (again,) = outbox.claim_due(any_db, "B", limit=2, lease_seconds=60)
        assert again.id == taken.id
        assert worker.renew_leases() == 0
        assert lost.seen.is_set()
    finally:
        lost.close()


# -- a held outcome written after TWILIO was switched back on -----------------------------------


def test_a_text_held_after_twilio_came_back_on_goes_out_at_the_next_run(
    delivery, db, session, twilio_server
):
    """The worker routed the text while TWILIO was off and its 'held' outcome was
    written late (connection kills): staff's switching TWILIO on released nothing, as the
    text was not held yet. It stayed held for good; now the next run releases it."""
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    (claimed,) = outbox.claim_due(db, "w", limit=5, lease_seconds=60)
    rule_records.set_fields(session, "TWILIO", {}, active=True, by="staff")  # already on
    session.commit()
    late = Outcome(Status.HELD, reason="TWILIO is not active")
    assert outbox.finish(db, claimed, late)
    assert messages(session)[0].status == Status.HELD
    Dispatcher(db).run_once()
    (m,) = messages(session)
    assert m.status == Status.SENT and len(twilio_server.messages) == 1


def test_a_stop_waits_for_a_text_being_handed_over_and_stops_the_next(
    any_db: Database, twilio_server
):
    """The first of two texts to a number is at Twilio, its answer not back yet, when the
    STOP comes: the STOP commits only once that handover is over, and the second text is
    canceled — no text reaches Twilio after the opt-out committed."""
    if any_db.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no row locks: its sender reads the list right before sending")
    with any_db.session() as s:
        activate_twilio(s)
    ids = one_number_backlog(any_db, 2)
    with any_db.engine.begin() as conn:
        conn.execute(update(message_table).values(channel="twilio", address=NUMBER))
    settings = with_settings(twilio_api_url=twilio_server.url)
    settings = replace(settings, dispatch=replace(settings.dispatch, concurrency=1))
    answer = threading.Event()
    twilio_server.fail_next(status=200, hold=answer)  # created at Twilio, answered late
    worker = threading.Thread(target=Dispatcher(any_db, settings).run_once)
    worker.start()
    twilio_server.wait_for(lambda t: t.creates >= 1)
    stopped = threading.Event()

    def stop() -> None:
        with any_db.session() as s:
            consent.opt_out(s, number=NUMBER, source="sms_reply")
        stopped.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    until_a_lock_is_waited_for(any_db)  # the STOP, on the handover's lock
    assert not stopped.is_set()
    answer.set()
    stopper.join(30)
    worker.join(30)
    assert stopped.is_set() and len(twilio_server.messages) == 1
    rows = statuses(any_db)
    assert rows[ids[0]].status == Status.SENT
    assert rows[ids[1]].status == Status.CANCELED
