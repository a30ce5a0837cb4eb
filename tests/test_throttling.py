"""Throttling by the provider (HTTP 429) is our doing, not the text's: it never uses up a
text's attempts, Retry-After is honoured, and no look-up follows (a 429 proves nothing
was created)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from erp_sms.dispatch import Dispatcher
from erp_sms.models import Status

from .conftest import with_settings
from .helpers import activate_twilio, messages
from .test_dispatch import make_orders
from .test_faults import Clock


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
