"""Issue 29: the host's own endpoint hears what happened (ERP_SMS_HOST_WEBHOOK_URL), signed
as the Standard Webhooks specification says — checked here by the maintained
`standardwebhooks` package on a loopback receiver — at least once, in order per message,
through the host's own outage, without holding a text up."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from erp_sms import timeline
from erp_sms.config import ConfigurationError, Settings
from erp_sms.dispatch import Dispatcher
from erp_sms.models import HostEvent, Status
from erp_sms.testing import HostReceiver
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..helpers import PUBLIC, Clock, activate_twilio, inbound, messages, post, scene

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def receiver(delivery) -> Iterator[HostReceiver]:
    with HostReceiver(SECRET) as r:
        with_settings(host_webhook_url=r.url, host_webhook_secret=SECRET)
        yield r


def _statuses(r: HostReceiver, message_id: int) -> list[tuple[str, str]]:
    return [
        (e["data"]["previous_status"], e["data"]["status"])
        for e in r.accepted
        if e["type"] == "message.status_changed" and e["data"]["message_id"] == message_id
    ]


def test_each_status_reaches_the_host_signed_and_in_order(receiver, db, session):
    scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-5", fire=True)
    (text,) = messages(session)
    assert Dispatcher(db).run_once().counts.get("sent") == 1
    assert _statuses(receiver, text.id) == [
        (Status.QUEUED, Status.SENDING),
        (Status.SENDING, Status.SENT),
    ]
    first = receiver.accepted[0]
    assert (
        first["data"]["order_number"] == "SO-5" and first["data"]["event"] == "sent_to_production"
    )
    assert receiver.ids == sorted(receiver.ids, key=lambda i: int(i.removeprefix("msg_")))
    session.commit()
    assert all(e.delivered_at is not None for e in session.scalars(select(HostEvent)))
    # The deliveries are on the order's timeline.
    lines = [e.line() for e in timeline.for_order(session, "SO-5")]
    assert any(f"host     #{text.id} the host's webhook got sent (msg_" in ln for ln in lines), (
        lines
    )


def test_the_hosts_outage_holds_no_text_and_nothing_is_lost(receiver, db, session):
    receiver.status = 503
    made = scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-6", fire=True)
    clock = Clock()
    worker = Dispatcher(db, clock=clock)
    assert worker.run_once().counts.get("sent") == 1  # the text went out anyway
    assert receiver.refused == 1 and receiver.accepted == []
    session.commit()
    head = session.scalars(select(HostEvent).order_by(HostEvent.id)).first()
    assert head is not None and head.attempts == 1 and head.last_error == "HTTP 503"
    lines = [e.line() for e in timeline.for_order(session, "SO-6")]
    assert any("the host's webhook has not taken sending yet: HTTP 503" in ln for ln in lines)
    # A day of outage: one try per backoff, texts still going out meanwhile.
    from erp_sms import signals

    signals.shipment_shipped.send(
        made.order,
        session=session,
        shipping_event={"id": 1, "carrier": "UPS", "tracking_number": "1Z1"},
    )
    session.commit()
    clock.advance(3)  # inside the first backoff (5 s): no try
    assert worker.run_once().counts.get("sent") == 1 and receiver.refused == 1
    clock.advance(24 * 3600)
    worker.run_once()
    assert receiver.refused == 2
    # The host is back: everything arrives, each text's statuses in order.
    receiver.status = 200
    clock.advance(24 * 3600)
    worker.run_once()
    ids = [m.id for m in messages(session)]
    for i in ids:
        assert _statuses(receiver, i) == [
            (Status.QUEUED, Status.SENDING),
            (Status.SENDING, Status.SENT),
        ]
    session.commit()
    assert all(e.delivered_at is not None for e in session.scalars(select(HostEvent)))


def test_replies_and_opt_outs_from_the_webhook_reach_the_host(receiver, db, session, settings):
    activate_twilio(session)
    session.commit()
    scene(session, {"ann": ("Ann", "+13125550101")}, order="SO-7", fire=True)
    client = create_app(db=db, settings=with_settings(public_url=PUBLIC)).test_client()
    post(client, "inbound", inbound("+13125550101", "STOPP", "SM" + "4" * 32))
    Dispatcher(db).run_once()
    kinds = [e["type"] for e in receiver.accepted]
    assert kinds[:3] == ["reply.received", "consent.changed", "message.status_changed"]
    reply, change, canceled = receiver.accepted[:3]
    assert reply["data"]["body"] == "STOPP" and reply["data"]["kind"] == "stop"
    assert change["data"] == {
        "number": "+13125550101",
        "contact_keys": change["data"]["contact_keys"],
        "action": "opt_out",
        "source": "sms_reply",
        "at": change["data"]["at"],
    }
    assert canceled["data"]["status"] == Status.CANCELED


@pytest.mark.parametrize(
    ("url", "secret", "says"),
    [
        ("ftp://erp.example.com/x", SECRET, r"as an http\(s\) URL"),
        ("https://erp.example.com/x", None, "ERP_SMS_HOST_WEBHOOK_SECRET is not"),
        ("https://erp.example.com/x", "whsec_short", "is not a whsec_"),
    ],
)
def test_a_bad_host_webhook_setting_gets_one_line(url, secret, says):
    env = {"ERP_SMS_HOST_WEBHOOK_URL": url}
    if secret is not None:
        env["ERP_SMS_HOST_WEBHOOK_SECRET"] = secret
    with pytest.raises(ConfigurationError, match=says):
        Settings.from_env(env)


def test_the_delivery_is_exactly_what_was_signed(receiver):
    from erp_sms.dispatch.host_webhook import body

    row = HostEvent(
        id=7,
        kind="reply.received",
        stream="number:+1",
        payload=json.dumps({"reply_id": 3}),
        created_at=dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC),
    )
    assert json.loads(body(row)) == {
        "type": "reply.received",
        "timestamp": "2026-12-05T09:00:00+00:00",
        "data": {"reply_id": 3},
    }
