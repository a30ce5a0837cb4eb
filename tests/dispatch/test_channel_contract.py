"""One contract every channel passes (the django-anymail way): deliver, report failure
by raising a typed error — never by returning False — and close cleanly."""

from __future__ import annotations

import datetime as dt

import pytest

from erp_sms.channels.base import Channel, SendResult
from erp_sms.channels.email_gateway import EmailGatewayChannel
from erp_sms.channels.twilio import TwilioChannel
from erp_sms.config import get_settings
from erp_sms.db import utcnow
from erp_sms.errors import PermanentError, TransientError
from erp_sms.outbox import Claimed
from erp_sms.rule_records import TwilioRule

from ..conftest import with_settings
from ..helpers import AUTH, SID, TWILIO_NUMBER


def claimed(
    address: str,
    *,
    attempts: int = 1,
    body: str = "Acme: order SO-1 shipped. Reply STOP to opt out.",
) -> Claimed:
    now = utcnow()
    return Claimed(
        id=1,
        token="t:1",
        channel=None,
        address=address,
        raw_address=address,
        body=body,
        attempts=attempts,
        claimed_at=now,
        contact_ref="1",
        contact_name="Ann",
        order_number="SO-1",
        reclaimed_after=None,
        created_at=now - dt.timedelta(seconds=5),
    )


class ChannelContract:
    """Every channel test case inherits these."""

    address = ""

    def make(self) -> Channel:
        raise NotImplementedError

    def break_transiently(self) -> None:
        raise NotImplementedError

    def break_permanently(self) -> None:
        raise NotImplementedError

    def make_unreachable(self) -> Channel:
        raise NotImplementedError

    def test_delivers_and_reports_a_provider_id(self):
        ch = self.make()
        try:
            result = ch.send(claimed(self.address))
        finally:
            ch.close()
        assert isinstance(result, SendResult) and result.provider_id

    def test_a_transient_failure_raises_transient_error(self):
        ch = self.make()
        self.break_transiently()
        with pytest.raises(TransientError) as info:
            ch.send(claimed(self.address))
        ch.close()
        assert info.value.message

    def test_a_permanent_failure_raises_permanent_error_with_a_code(self):
        ch = self.make()
        self.break_permanently()
        with pytest.raises(PermanentError) as info:  # raised, never a False return
            ch.send(claimed(self.address))
        ch.close()
        assert info.value.code is not None and str(info.value.code) in info.value.message

    def test_an_unreachable_provider_is_transient(self):
        ch = self.make_unreachable()
        with pytest.raises(TransientError):
            ch.send(claimed(self.address))
        ch.close()

    def test_a_first_attempt_has_nothing_to_look_up(self):
        ch = self.make()
        assert ch.find_previous_send(claimed(self.address, attempts=1)) is None
        ch.close()

    def test_close_twice_is_harmless(self):
        ch = self.make()
        ch.send(claimed(self.address))
        ch.close()
        ch.close()


class TestTwilioChannel(ChannelContract):
    address = "+13125550101"

    @pytest.fixture(autouse=True)
    def _servers(self, delivery, twilio_server):
        self.server = twilio_server

    def _rule(self) -> TwilioRule:
        return TwilioRule(sid=SID, auth_code=AUTH, phone_number=TWILIO_NUMBER, active=True)

    def make(self) -> Channel:
        return TwilioChannel(self._rule(), get_settings())

    def break_transiently(self) -> None:
        self.server.fail_next(status=503, message="Service Unavailable")

    def break_permanently(self) -> None:
        self.server.fail_next(status=400, code=21211, message="Invalid 'To' Phone Number")

    def make_unreachable(self) -> Channel:
        return TwilioChannel(self._rule(), with_settings(twilio_api_url="http://127.0.0.1:9"))

    def test_a_retry_finds_the_earlier_send(self):
        ch = self.make()
        first = ch.send(claimed(self.address))
        again = ch.find_previous_send(claimed(self.address, attempts=2))
        assert again is not None and again.provider_id == first.provider_id
        other = ch.find_previous_send(claimed(self.address, attempts=2, body="another text"))
        assert other is None


class TestEmailGatewayChannel(ChannelContract):
    address = "3125550101@vtext.com"

    @pytest.fixture(autouse=True)
    def _servers(self, delivery, smtp_sink):
        self.sink = smtp_sink

    def make(self) -> Channel:
        return EmailGatewayChannel(get_settings())

    def break_transiently(self) -> None:
        self.sink.mode, self.sink.flaky_failures = "flaky", 1

    def break_permanently(self) -> None:
        self.sink.mode = "refuse"

    def make_unreachable(self) -> Channel:
        return EmailGatewayChannel(with_settings(smtp_port=1))

    def test_one_connection_for_many_messages(self):
        ch = self.make()
        for _ in range(5):
            ch.send(claimed(self.address))
        ch.close()
        assert self.sink.sessions == 1 and len(self.sink.received) == 5


def test_the_fake_twilio_server_speaks_the_api_the_real_client_uses(delivery, twilio_server):
    """Create, fetch and list with To/From/DateSent filters through the real client."""
    ch = TwilioChannel(
        TwilioRule(sid=SID, auth_code=AUTH, phone_number=TWILIO_NUMBER, active=True), delivery
    )
    a = ch.client.messages.create(to="+13125550101", from_=TWILIO_NUMBER, body="one")
    b = ch.client.messages.create(to="+13125550102", from_=TWILIO_NUMBER, body="two")
    fetched = ch.client.messages(a.sid).fetch()
    assert (fetched.sid, fetched.body, fetched.status, fetched.num_segments) == (
        a.sid,
        "one",
        "queued",
        "1",
    )
    assert [m.sid for m in ch.client.messages.list(to="+13125550102")] == [b.sid]
    assert len(ch.client.messages.list(from_=TWILIO_NUMBER)) == 2
    assert ch.client.messages.list(from_="+13125559999") == []
    soon = utcnow() + dt.timedelta(hours=1)
    # As Twilio: date_sent stays null while a message is queued, so no DateSent filter
    # finds it yet (a duplicate check must not rely on it).
    assert fetched.date_sent is None
    assert ch.client.messages.list(date_sent_before=soon) == []
    twilio_server.deliver(a.sid, "sent")
    assert ch.client.messages.list(date_sent_after=soon) == []
    assert [m.sid for m in ch.client.messages.list(date_sent_before=soon)] == [a.sid]
    bad = TwilioChannel(
        TwilioRule(sid=SID, auth_code="0" * 32, phone_number=TWILIO_NUMBER, active=True), delivery
    )
    from twilio.base.exceptions import TwilioRestException

    with pytest.raises(TwilioRestException) as info:
        bad.client.messages.create(to="+13125550101", from_=TWILIO_NUMBER, body="x")
    assert (info.value.status, info.value.code) == (401, 20003)
