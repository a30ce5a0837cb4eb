"""Delivery through real loopback servers: the Twilio-compatible API (driven by the real
twilio client) and aiosmtpd."""

from __future__ import annotations

import email
import threading
from dataclasses import replace

import pytest
from sqlalchemy import select

from erp_sms import erp, outbox, rule_records, signals
from erp_sms.channels.twilio import Pacer, error_for
from erp_sms.db import Database
from erp_sms.dispatch import Dispatcher, RetryPolicy
from erp_sms.errors import ChannelConfigurationError, OptedOutError, PermanentError, TransientError
from erp_sms.inline import join_inline
from erp_sms.models import Channel, ConsentEvent, Rule, Status
from erp_sms.testing import SmtpSink

from ..conftest import with_settings
from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import (
    AUTH,
    SID,
    TWILIO_NUMBER,
    LogWatch,
    activate_twilio,
    by_contact,
    make_orders,
    messages,
)


def dispatch(db: Database, **kw) -> object:
    return Dispatcher(db, **kw).run_once()


def drain(db: Database, rounds: int = 30) -> None:
    """Run dispatch until nothing is due (the test settings use zero backoff)."""
    for _ in range(rounds):
        if not Dispatcher(db).run_once().handled:
            return
    raise AssertionError("messages still due after many rounds")


# -- email gateway ---------------------------------------------------------------------------


def test_gateway_texts_go_out_as_plain_mail_on_one_reused_connection(
    delivery, db, session, smtp_sink
):
    make_orders(session, 5)
    summary = dispatch(db)
    assert summary.counts["sent"] == 5
    assert len(smtp_sink.received) == 5
    assert smtp_sink.sessions == 1  # one connection for the batch
    mail_from, rcpts, raw = smtp_sink.received[0]
    parsed = email.message_from_bytes(raw)
    assert mail_from == "orders@example.com" and rcpts == ["3125550000@vtext.com"]
    assert parsed.get_content_type() == "text/plain" and not parsed.is_multipart()
    assert parsed["Subject"] == ""
    assert "SO-00000 has gone into production" in parsed.get_payload(decode=True).decode()
    rows = messages(session)
    assert {m.status for m in rows} == {Status.SENT}
    assert rows[0].provider_id == parsed["Message-ID"]
    assert rows[0].sent_at is not None
    assert [h.status for h in rows[0].history] == [Status.SENDING, Status.SENT]


def test_smtp_refusal_fails_with_the_servers_reply(delivery, db, session):
    with SmtpSink("refuse") as sink:
        with_settings(smtp_port=sink.port)
        make_orders(session, 1)
        dispatch(db)
    (m,) = messages(session)
    assert m.status == Status.FAILED
    assert "550" in m.reason and "mailbox unavailable" in m.reason
    assert m.error_code == 550


def test_smtp_4xx_is_retried_then_sent(delivery, db, session):
    with SmtpSink("flaky", flaky_failures=1) as sink:
        with_settings(smtp_port=sink.port)
        make_orders(session, 1)
        first = dispatch(db)  # zero backoff in tests: the retry is due at once
        assert (first.counts["retrying"], first.counts["sent"]) == (1, 1)
        assert len(sink.received) == 1
    (m,) = messages(session)
    assert m.status == Status.SENT and m.attempts == 2
    retry = [h for h in m.history if h.status == Status.QUEUED and h.source == "dispatch"]
    assert len(retry) == 1 and "451" in retry[0].detail


def test_a_connection_dropped_mid_batch_is_reopened_and_nothing_is_lost_or_doubled(
    delivery, db, session
):
    with SmtpSink("drop", drop_after=2) as sink:
        with_settings(smtp_port=sink.port)
        make_orders(session, 5)
        drain(db)
        rcpts = [r[1][0] for r in sink.received]
    assert sorted(rcpts) == sorted(set(rcpts)) and len(rcpts) == 5
    assert sink.sessions == 2  # reconnected once
    assert {m.status for m in messages(session)} == {Status.SENT}


def test_no_smtp_from_holds_gateway_texts_with_what_to_do(delivery, db, session):
    with_settings(smtp_from=None)
    make_orders(session, 1)
    dispatch(db)
    (m,) = messages(session)
    assert m.status == Status.HELD and "ERP_SMS_SMTP_FROM" in m.reason


def test_unreachable_smtp_server_is_transient(delivery, db, session):
    with_settings(smtp_port=1)  # nothing listens on port 1
    make_orders(session, 1)
    Dispatcher(db).run_once(max_batches=1)
    (m,) = messages(session)
    assert m.status == Status.QUEUED and "cannot connect to SMTP" in m.reason


def test_a_shut_down_gateway_queued_earlier_is_never_mailed(delivery, db, session, smtp_sink):
    # Queued while the carrier still worked (simulated), dispatched after its shutdown.
    make_orders(session, 1)
    (m,) = messages(session)
    m.raw_address = m.address = "3125550000@txt.att.net"
    session.commit()
    dispatch(db)
    (m,) = messages(session)
    assert m.status == Status.SKIPPED and "AT&T" in m.reason and "2025-06-17" in m.reason
    assert smtp_sink.received == []


# -- Twilio ------------------------------------------------------------------------------------


def test_twilio_texts_go_to_the_api_with_sender_and_callback(delivery, db, session, twilio_server):
    with_settings(public_url="https://erp.example.com/sms")
    activate_twilio(session)
    make_orders(session, 3, gateway=False)
    dispatch(db)
    assert sorted(m.to for m in twilio_server.messages) == [
        "+13125550000",
        "+13125550001",
        "+13125550002",
    ]
    sent = twilio_server.messages[0]
    assert sent.from_ == TWILIO_NUMBER
    assert sent.status_callback == "https://erp.example.com/sms/twilio/status"
    rows = {m.address: m for m in messages(session)}
    row = rows[sent.to]
    assert row.status == Status.SENT and row.provider_id == sent.sid and row.segments == 1
    assert row.body == sent.body


def test_no_public_url_means_no_status_callback(delivery, db, session, twilio_server):
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    dispatch(db)
    assert twilio_server.messages[0].status_callback is None


@pytest.mark.parametrize(
    ("fault", "status", "fragment", "code"),
    [
        (
            {"status": 400, "code": 21211, "message": "Invalid 'To' Phone Number"},
            Status.FAILED,
            "not a valid phone number (21211)",
            21211,
        ),
        (
            {"status": 400, "code": 21614, "message": "not a mobile"},
            Status.FAILED,
            "not a mobile number (21614)",
            21614,
        ),
        (
            {"status": 400, "code": 12345, "message": "brand new error"},
            Status.FAILED,
            "not retried",
            12345,
        ),
        (
            {"status": 429, "code": 20429, "message": "Too Many Requests", "retry_after": 30},
            Status.QUEUED,
            "Twilio rate limit (20429)",
            20429,
        ),
        ({"status": 500, "message": "Internal Server Error"}, Status.QUEUED, "HTTP 500", 500),
        (
            {"status": 400, "code": 21211, "message": "bad To", "rfc9457": True},
            Status.FAILED,
            "(21211)",
            21211,
        ),
    ],
)
def test_each_twilio_error_class_shows_its_outcome_in_the_log(
    delivery, db, session, twilio_server, fault, status, fragment, code
):
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    twilio_server.fail_next(**fault)
    Dispatcher(db).run_once(max_batches=1)
    (m,) = messages(session)
    assert m.status == status
    assert fragment in m.reason
    assert m.error_code == code


def test_transient_errors_retry_then_send(delivery, db, session, twilio_server):
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    twilio_server.fail_next(2, status=500, message="oops")
    drain(db)
    (m,) = messages(session)
    assert m.status == Status.SENT and m.attempts == 3
    assert len(twilio_server.messages) == 1


def test_transient_errors_give_up_after_max_attempts(delivery, db, session, twilio_server):
    with_settings(dispatch=replace(delivery.dispatch, max_attempts=3))
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    twilio_server.fail_next(10, status=500, message="down")
    drain(db)
    (m,) = messages(session)
    assert m.status == Status.FAILED and m.reason.startswith("gave up after 3 attempt(s)")
    assert twilio_server.messages == []


def test_a_code_with_its_own_limit_retries_fewer_times(delivery, db, session, twilio_server):
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    twilio_server.fail_next(5, status=400, code=30003, message="unreachable")  # max_attempts 2
    drain(db)
    (m,) = messages(session)
    assert m.status == Status.FAILED and m.attempts == 2 and "(30003)" in m.reason


def test_a_slow_answer_past_the_timeout_is_retried_without_sending_twice(
    delivery, db, session, twilio_server
):
    # The API takes 2 s to answer (past our 0.5 s timeout) but does create the message:
    # the retry must find it instead of sending a second text.
    with_settings(dispatch=replace(delivery.dispatch, http_timeout_seconds=0.5))
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    answer = threading.Event()
    twilio_server.fail_next(status=200, hold=answer)  # created, then answered late
    Dispatcher(db).run_once(max_batches=1)
    answer.set()
    (m,) = messages(session)
    assert m.status == Status.QUEUED and "did not answer in time" in m.reason
    assert m.maybe_sent
    drain(db)
    (m,) = messages(session)
    assert m.status == Status.SENT, [(h.status, h.detail) for h in m.history]
    assert len(twilio_server.messages) == 1 and m.provider_id == twilio_server.messages[0].sid


def test_21610_fails_and_opts_the_contact_out(delivery, db, session, twilio_server):
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    twilio_server.fail_next(
        status=400, code=21610, message="Attempt to send to unsubscribed recipient"
    )
    dispatch(db)
    (m,) = messages(session)
    assert m.status == Status.FAILED and "replied STOP" in m.reason
    session.expire_all()
    contact = session.get(erp.Contact, int(m.contact_ref))
    assert not contact.has_attribute(erp.SMSUPDATE)
    (consent,) = session.scalars(select(ConsentEvent)).all()
    assert (consent.action, consent.source, consent.contact_ref) == (
        "opt_out",
        "twilio_21610",
        m.contact_ref,
    )


def test_20003_holds_every_text_flags_the_rule_and_releases_when_fixed(
    delivery, db, session, twilio_server
):
    activate_twilio(session, auth="0" * 32)  # not the account's token: Twilio answers 20003
    make_orders(session, 3, gateway=False)
    dispatch(db)
    rows = messages(session)
    assert {m.status for m in rows} == {Status.HELD}
    assert all("rejected the TWILIO credentials" in m.reason for m in rows)
    assert twilio_server.creates == 0
    rule = session.get(Rule, "TWILIO")
    session.refresh(rule)
    assert rule.rejected_at is not None and "20003" in rule.rejected_reason
    # a later dispatch does not hammer Twilio with rejected credentials
    make_orders_more = SalesOrderFactory(number="SO-X", organization=OrganizationFactory())
    c = ContactFactory(email2="+13125559999", organizations=[make_orders_more.organization])
    session.add_all([make_orders_more, c])
    signals.sent_to_production.send(make_orders_more, session=session)
    session.commit()
    requests_before = twilio_server.requests
    dispatch(db)
    assert twilio_server.requests == requests_before
    assert {m.status for m in messages(session)} == {Status.HELD}
    # staff fix the AuthCode: held texts are released and go out
    rule_records.set_fields(session, "TWILIO", {"AuthCode": AUTH}, by="test")
    session.commit()
    assert {m.status for m in messages(session)} == {Status.QUEUED}
    dispatch(db)
    assert {m.status for m in messages(session)} == {Status.SENT}
    assert twilio_server.creates == 4


def test_random_transient_failures_end_with_every_message_sent_exactly_once(
    delivery, db, session, twilio_server
):
    twilio_server.transient_rate = 0.35
    twilio_server._rand.seed(7)
    with_settings(dispatch=replace(delivery.dispatch, max_attempts=50))
    activate_twilio(session)
    make_orders(session, 30, gateway=False)
    drain(db, rounds=60)
    rows = messages(session)
    assert {m.status for m in rows} == {Status.SENT}
    assert any(m.attempts > 1 for m in rows)  # the faults did happen
    sent_to = [m.to for m in twilio_server.messages]
    assert len(sent_to) == 30 and len(set(sent_to)) == 30


def test_concurrency_is_bounded(delivery, db, session, twilio_server):
    with_settings(dispatch=replace(delivery.dispatch, concurrency=3))
    twilio_server.latency = 0.05
    activate_twilio(session)
    make_orders(session, 12, gateway=False)
    dispatch(db)
    assert 1 < twilio_server.max_in_flight <= 3
    assert len(twilio_server.messages) == 12


def test_pacer_spaces_sends_by_segments_per_second():
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(round(s, 6))
        now[0] += s

    pacer = Pacer(2.0, clock=lambda: now[0], sleep=sleep)
    pacer.wait(1)
    pacer.wait(1)
    pacer.wait(2)
    pacer.wait(1)
    assert slept == [0.5, 0.5, 1.0]
    unpaced = Pacer(0.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        unpaced.wait(5)
    assert slept == [0.5, 0.5, 1.0]  # rate 0: never waits


def test_error_policy_is_data_and_unknown_codes_are_permanent():
    assert isinstance(error_for(20003, 401, "x"), ChannelConfigurationError)
    assert isinstance(error_for(21610, 400, "x"), OptedOutError)
    assert isinstance(error_for(30001, 400, "x"), TransientError)
    assert error_for(30001, 400, "x").max_attempts == 3
    assert isinstance(error_for(99999, 400, "x"), PermanentError)
    assert isinstance(error_for(None, 503, "x"), TransientError)


def test_retry_policy_backs_off_exponentially_with_jitter_and_a_cap():
    policy = RetryPolicy(max_attempts=5, base_seconds=10, max_seconds=60)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
    err = TransientError("x")
    assert policy.allows(err, 4) and not policy.allows(err, 5)
    assert not policy.allows(TransientError("x", max_attempts=2), 2)


# -- routing changes between queueing and sending ---------------------------------------------


def test_deactivating_twilio_reroutes_to_gateways_or_holds(
    delivery, db, session, twilio_server, smtp_sink
):
    activate_twilio(session)
    org = OrganizationFactory(name="Mixed")
    gw = ContactFactory(name="Gateway", email2="3125550001@vtext.com", organizations=[org])
    ph = ContactFactory(name="Phone", email2="312-555-0002", organizations=[org])
    order = SalesOrderFactory(number="SO-M", organization=org, contact=gw)
    session.add_all([order, gw, ph])
    signals.sent_to_production.send(order, session=session)
    session.commit()
    assert {m.channel for m in messages(session)} == {Channel.TWILIO}
    rule_records.set_fields(session, "TWILIO", {}, active=False, by="test")
    session.commit()
    dispatch(db)
    rows = by_contact(session)
    assert (rows["Gateway"].status, rows["Gateway"].channel) == (Status.SENT, Channel.EMAIL_GATEWAY)
    assert rows["Phone"].status == Status.HELD and "TWILIO rule is inactive" in rows["Phone"].reason
    assert twilio_server.messages == [] and len(smtp_sink.received) == 1
    # reactivating releases the held text, which then goes through Twilio
    rule_records.set_fields(session, "TWILIO", {}, active=True, by="test")
    session.commit()
    dispatch(db)
    assert by_contact(session)["Phone"].status == Status.SENT
    assert [m.to for m in twilio_server.messages] == ["+13125550002"]


def test_staff_can_cancel_a_held_text(delivery, db, session):
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    rule_records.set_fields(session, "TWILIO", {}, active=False, by="test")
    session.commit()
    dispatch(db)
    (m,) = messages(session)
    assert m.status == Status.HELD
    assert outbox.release(session, [], by="test") == []  # an empty list releases nothing
    session.commit()
    assert messages(session)[0].status == Status.HELD
    outbox.cancel(session, [m.id], by="test")
    session.commit()
    (m,) = messages(session)
    assert m.status == Status.CANCELED
    assert not dispatch(db).handled


def test_activating_twilio_moves_queued_gateway_texts_to_twilio(
    delivery, db, session, twilio_server, smtp_sink
):
    make_orders(session, 2)
    activate_twilio(session)
    session.commit()
    dispatch(db)
    assert {m.channel for m in messages(session)} == {Channel.TWILIO}
    assert len(twilio_server.messages) == 2 and smtp_sink.received == []


# -- inline mode ------------------------------------------------------------------------------


def test_inline_mode_sends_after_the_hosts_commit_and_not_after_rollback(
    delivery, db, session, smtp_sink
):
    with_settings(inline_dispatch=True)
    org = OrganizationFactory()
    c = ContactFactory(email2="3125550077@vtext.com", organizations=[org])
    o1 = SalesOrderFactory(number="SO-IN1", organization=org)
    session.add_all([o1, c])
    session.commit()
    signals.sent_to_production.send(o1, session=session)
    session.rollback()
    assert join_inline(10) == 0  # nothing was started
    assert smtp_sink.received == []
    signals.sent_to_production.send(o1, session=session)
    assert smtp_sink.received == []  # nothing before the commit
    session.commit()
    assert join_inline(10) == 1
    assert len(smtp_sink.received) == 1
    assert messages(session)[0].status == Status.SENT


def test_a_retry_hours_later_still_finds_the_earlier_send(delivery, db, session, twilio_server):
    """The duplicate check looks back to when the message was queued, not to the retry's
    own claim: a timeout followed by a long backoff must not send twice."""
    import datetime as dt

    with_settings(dispatch=replace(delivery.dispatch, http_timeout_seconds=0.5))
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    answer = threading.Event()
    twilio_server.fail_next(status=200, hold=answer)
    Dispatcher(db).run_once(max_batches=1)
    answer.set()
    later = outbox.claim_due(
        db, "w", limit=5, lease_seconds=60, now=utcnow_plus(dt.timedelta(hours=3))
    )
    (claimed,) = later
    assert claimed.created_at is not None and claimed.may_have_been_sent
    from erp_sms.channels.twilio import TwilioChannel

    with db.session() as s:
        rule = rule_records.twilio_rule(s)
    found = TwilioChannel(rule, delivery).find_previous_send(claimed)
    assert found is not None and found.provider_id == twilio_server.messages[0].sid


def utcnow_plus(delta):
    from erp_sms.db import utcnow

    return utcnow() + delta


def test_an_auth_code_that_cannot_be_decrypted_holds_twilio_texts_and_nothing_crashes(
    delivery, db, session, twilio_server, smtp_sink
):
    with_settings(secret_key="the key it was saved with")
    activate_twilio(session)
    make_orders(session, 2, gateway=False)
    with_settings(secret_key=None)  # an operator lost the key
    summary = Dispatcher(db).run_once()
    assert summary.counts["held"] == 2
    rows = messages(session)
    assert {m.status for m in rows} == {Status.HELD}
    assert all("set ERP_SMS_SECRET_KEY" in m.reason for m in rows)
    assert twilio_server.requests == 0
    with_settings(secret_key="the key it was saved with")
    outbox.release(session, [m.id for m in rows], by="test")
    session.commit()
    Dispatcher(db).run_once()
    assert {m.status for m in messages(session)} == {Status.SENT}


def test_the_worker_keeps_going_through_a_database_failure(
    delivery, db, session, smtp_sink, caplog
):
    """The outbox table disappears under a running worker (a failed migration, say), then
    comes back: the worker logs, waits, and delivers once it can."""
    from sqlalchemy import text

    with_settings(dispatch=replace(delivery.dispatch, poll_seconds=0.05))
    session.execute(text("ALTER TABLE sms_message RENAME TO sms_message_away"))
    session.commit()
    d = Dispatcher(db)
    failed = LogWatch("erp_sms.dispatch", "dispatch failed (")
    worker = threading.Thread(target=d.run_forever, daemon=True)
    worker.start()
    try:
        assert failed.seen.wait(10)
        assert worker.is_alive()
        session.execute(text("ALTER TABLE sms_message_away RENAME TO sms_message"))
        session.commit()
        make_orders(session, 1)
        smtp_sink.wait_for(1)
    finally:
        d.stop.set()
        worker.join(10)
    assert not worker.is_alive()


def test_a_paced_worker_claims_no_more_than_it_can_send_within_its_lease(delivery, db):
    d = Dispatcher(db)
    assert d.batch_limit() == delivery.dispatch.batch_size  # no pacing
    d.settings = replace(
        delivery, dispatch=replace(delivery.dispatch, rate_per_second=0.1, lease_seconds=300)
    )
    assert d.batch_limit() == 15  # 300 s x 0.1/s, halved
    d.settings = replace(delivery, dispatch=replace(delivery.dispatch, rate_per_second=0.001))
    assert d.batch_limit() == 1


def test_credentials_rejected_during_the_check_before_a_retry_hold_the_text(
    delivery, db, session, twilio_server
):
    # Issue 9 finding 3: a retry looks at Twilio first; a 401 there is 20003 — the text is
    # held and the rule flagged, never retried to the limit and failed.
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    twilio_server.fail_next(status=500, message="Internal Server Error")
    Dispatcher(db).run_once(max_batches=1)
    (m,) = messages(session)
    assert m.status == Status.QUEUED and m.attempts == 1
    twilio_server.accounts[SID] = "9" * 32  # the Auth Token was regenerated meanwhile
    drain(db)
    (m,) = messages(session)
    assert m.status == Status.HELD and "20003" in (m.reason or ""), m.reason
    rule = session.scalar(select(Rule))
    assert rule.rejected_at is not None
    assert twilio_server.messages == []
