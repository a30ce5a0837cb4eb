"""Throttling by the provider (HTTP 429) is our doing, not the text's: it never uses up a
text's attempts, Retry-After is honoured, and no look-up follows (a 429 proves nothing
was created)."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace

from erp_sms.channels.twilio import Pacer, sender_rate
from erp_sms.config import DispatchSettings, Settings
from erp_sms.dispatch import THROTTLED_IN_HAND, Dispatcher, Window
from erp_sms.models import Status
from erp_sms.rule_records import TwilioRule

from ..conftest import with_settings
from ..helpers import Clock, activate_twilio, make_orders, messages


def test_a_429_waits_as_long_as_twilio_says_and_does_not_count_as_an_attempt(
    delivery, db, session, twilio_server
):
    with_settings(dispatch=replace(delivery.dispatch, max_attempts=1))
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    twilio_server.fail_next(3, status=429, code=20429, message="Too Many Requests", retry_after=30)
    clock = Clock()
    for _ in range(3):  # three 429s in a row: with max_attempts 1, none may fail the text
        summary = Dispatcher(db, clock=clock).run_once()
        assert summary.counts["throttled"] == 1, summary.line()
        (m,) = messages(session)
        assert m.status == Status.QUEUED and m.attempts == 0
        assert m.next_attempt_at == clock.now + dt.timedelta(seconds=30)
        assert not Dispatcher(db, clock=clock).run_once().handled  # not due before then
        clock.advance(30)
    requests_before = twilio_server.requests
    assert Dispatcher(db, clock=clock).run_once().counts["sent"] == 1
    assert twilio_server.requests == requests_before + 1  # the create only, no look-up
    (m,) = messages(session)
    assert m.status == Status.SENT and m.attempts == 1


def test_a_429_without_a_long_retry_after_stays_in_hand_and_goes_out_in_the_same_run(
    delivery, db, session, twilio_server
):
    """Self-caused throttling costs no write and no attempt: the lane's window shrinks
    and the text is sent again from the hand, with no look-up (a 429 created nothing)."""
    with_settings(dispatch=replace(delivery.dispatch, max_attempts=1, concurrency=4))
    activate_twilio(session)
    make_orders(session, 3, gateway=False)
    twilio_server.fail_next(2, status=429, code=20429, message="Too Many Requests")
    summary = Dispatcher(db).run_once()
    assert summary.counts["sent"] == 3 and summary.counts["throttled"] == 0, summary.line()
    assert twilio_server.requests == 5  # 2 refused creates + 3 creates, no list
    assert {(m.status, m.attempts) for m in messages(session)} == {(Status.SENT, 1)}


def test_a_text_throttled_again_and_again_in_hand_is_written_back_for_later(
    delivery, db, session, twilio_server
):
    with_settings(dispatch=replace(delivery.dispatch, max_attempts=1, concurrency=1))
    activate_twilio(session)
    make_orders(session, 1, gateway=False)
    twilio_server.fail_next(THROTTLED_IN_HAND + 1, status=429, code=20429, message="busy")
    summary = Dispatcher(db).run_once(max_batches=1)
    assert summary.counts["throttled"] == 1, summary.line()
    (m,) = messages(session)
    assert m.status == Status.QUEUED and m.attempts == 0
    assert "throttled by the provider" in (m.reason or "")


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_window_shrinks_once_per_congestion_event_and_grows_back_by_one_per_window():
    w = Window(16, clock=Ticks())
    gens = [w.acquire() for _ in range(16)]
    assert w.in_flight == 16
    for g in gens[:4]:  # four 429s from the same burst: one cut, not four
        w.release(g, throttled=True)
    assert w.limit == 16 * Window.DECREASE and w.cuts == 1
    for g in gens[4:]:
        w.release(g)
    assert w.in_flight == 0
    before = w.limit
    g = w.acquire()  # started after the cut: its 429 is a new event
    w.release(g, throttled=True)
    assert w.limit == before * Window.DECREASE and w.cuts == 2
    w.limit = 4.0
    for _ in range(4):  # one window of successes adds about one
        w.release(w.acquire())
    assert 4.8 < w.limit < 5.0
    for _ in range(1000):
        w.release(w.acquire())
    assert w.limit == 16  # never past the configured concurrency


def test_the_window_holds_new_sends_for_retry_after():
    ticks = Ticks()
    w = Window(2, clock=ticks)
    g = w.acquire()
    w.release(g, throttled=True, retry_after=1.5)
    stop = threading.Event()
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(w.acquire(stop)))
    t.start()
    t.join(0.2)  # not a sleep: a bound; the pause must still hold it back
    assert not got and t.is_alive()
    ticks.now = 1.6  # the provider's pause is over
    t.join(5)
    assert got == [1] and w.in_flight == 1


def _sends_in_a_minute(rate: float, segments: int = 1) -> int:
    """How many texts a pacer lets out in 60 s of an injected clock (its sleep advances
    the clock: no real waiting)."""
    clock = Ticks()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    pacer = Pacer(rate, clock=clock, sleep=sleep)
    sent = []
    while clock.now < 60:
        pacer.wait(segments)
        sent.append(clock.now)
    return sum(1 for t in sent if t < 60)


def test_pacing_is_exact_within_five_percent_over_a_minute_for_each_sender_kind():
    for number, rate in (("+13125550100", 1), ("+18885550100", 3), ("12345", 100)):
        rule = TwilioRule(sid="AC", auth_code="x", phone_number=number, active=True)
        settings = Settings(dispatch=DispatchSettings(pace_by_sender=True))
        assert sender_rate(rule, settings) == rate
        assert abs(_sends_in_a_minute(rate) - 60 * rate) <= 0.05 * 60 * rate
    # two-segment texts count twice
    assert abs(_sends_in_a_minute(3, segments=2) - 90) <= 0.05 * 90


def test_pacing_by_sender_is_off_by_default_and_an_explicit_rate_wins():
    rule = TwilioRule(sid="AC", auth_code="x", phone_number="+13125550100", active=True)
    assert sender_rate(rule, Settings()) == 0.0
    explicit = Settings(dispatch=DispatchSettings(pace_by_sender=True, rate_per_second=10))
    assert sender_rate(rule, explicit) == 10
    service = TwilioRule(
        sid="AC",
        auth_code="x",
        phone_number="+13125550100",
        active=True,
        messaging_service_sid="MG" + "a" * 32,
    )
    assert sender_rate(service, Settings(dispatch=DispatchSettings(pace_by_sender=True))) == 0
