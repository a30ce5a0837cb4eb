"""Issue 29: the ERP hears what happened — blinker signals (`message_status_changed`,
`reply_received`, `consent_changed`) sent after the change commits, in the process that
made it, with plain values; a receiver's error never breaks the worker or the webhook."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select

from erp_sms import consent, signals
from erp_sms.db import Database
from erp_sms.dispatch import Dispatcher
from erp_sms.models import Message, Status
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..helpers import PUBLIC, activate_twilio, callback, inbound, messages, post, scene

PLAIN = (str, int, float, bool, dt.datetime, tuple, type(None))


class Heard:
    """What a receiver heard, and what the database said at that moment (committed?)."""

    def __init__(self, url: str) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.committed: list[str | None] = []
        self._engine = create_engine(url)

    def __call__(self, sender: str, **values: object) -> None:
        self.calls.append((sender, values))
        if "message_id" in values:
            with self._engine.connect() as conn:  # another connection: sees commits only
                self.committed.append(
                    conn.scalar(select(Message.status).where(Message.id == values["message_id"]))
                )

    def of(self, kind: str) -> list[dict]:
        return [v for k, v in self.calls if k == kind]


@pytest.fixture
def heard(settings) -> Iterator[Heard]:
    h = Heard(settings.database_url)
    for s in (signals.message_status_changed, signals.reply_received, signals.consent_changed):
        s.connect(h)
    yield h
    for s in (signals.message_status_changed, signals.reply_received, signals.consent_changed):
        s.disconnect(h)


def test_the_worker_tells_each_status_once_committed_with_plain_values(
    delivery, db, session, heard
):
    made = scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-5", fire=True)
    (text,) = messages(session)
    Dispatcher(db).run_once()
    moves = heard.of("message_status_changed")
    assert [(v["previous_status"], v["status"]) for v in moves] == [
        (Status.QUEUED, Status.SENDING),
        (Status.SENDING, Status.SENT),
    ]
    first = moves[0]
    assert first["message_id"] == text.id and first["order_number"] == "SO-5"
    assert first["contact_key"] == str(made["ann"].id) and first["event"] == "sent_to_production"
    assert all(isinstance(v, PLAIN) for m in moves for v in m.values())
    # Each was sent after its change was committed: another connection saw it.
    assert heard.committed == [Status.SENDING, Status.SENT]


def test_the_webhook_tells_deliveries_replies_and_opt_outs(settings, db: Database, session, heard):
    activate_twilio(session)
    session.commit()
    scene(session, {"ann": ("Ann", "+13125550101")}, order="SO-6", fire=True)
    (queued,) = messages(session)
    queued.status, queued.provider_id = Status.SENT, "SM" + "7" * 32
    session.commit()
    client = create_app(db=db, settings=with_settings(public_url=PUBLIC)).test_client()
    assert post(client, "status", callback("SM" + "7" * 32, "delivered")).status_code == 204
    assert [(v["previous_status"], v["status"]) for v in heard.of("message_status_changed")] == [
        (Status.SENT, Status.DELIVERED)
    ]
    scene(session, {"bob": ("Bob", "+13125550101")}, org="Other", order="SO-9", fire=True)
    post(client, "inbound", inbound("+13125550101", "stop", "SM" + "8" * 32))
    (reply,) = heard.of("reply_received")
    assert (reply["kind"], reply["from_number"], reply["body"]) == ("stop", "+13125550101", "stop")
    (change,) = heard.of("consent_changed")
    assert (change["number"], change["action"], change["source"]) == (
        "+13125550101",
        "opt_out",
        "sms_reply",
    )
    # Bob's text still queued was canceled by the STOP: the host hears that too.
    assert heard.of("message_status_changed")[-1]["status"] == Status.CANCELED
    assert heard.of("message_status_changed")[-1]["order_number"] == "SO-9"


def test_nothing_is_told_of_a_change_rolled_back(session, heard):
    made = scene(session, {"ann": ("Ann", "+13125550101")}, order="SO-7")
    consent.opt_out(session, contact_key=str(made["ann"].id), source="staff")
    session.rollback()
    assert heard.calls == []
    consent.opt_out(session, contact_key=str(made["ann"].id), source="staff")
    session.commit()
    assert [v["action"] for v in heard.of("consent_changed")] == ["opt_out"]


def test_a_receiver_that_raises_breaks_neither_the_worker_nor_the_webhook(
    delivery, db, session, caplog
):
    def broken(sender: str, **values: object) -> None:
        raise RuntimeError("the ERP's handler is broken")

    signals.message_status_changed.connect(broken)
    signals.reply_received.connect(broken)
    try:
        scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-8", fire=True)
        with caplog.at_level(logging.ERROR, logger="erp_sms.feedback"):
            assert Dispatcher(db).run_once().counts.get("sent") == 1
        assert "a receiver of message_status_changed raised" in caplog.text
        activate_twilio(session)
        session.commit()
        client = create_app(db=db, settings=with_settings(public_url=PUBLIC)).test_client()
        r = post(client, "inbound", inbound("+13125550101", "thanks!", "SM" + "9" * 32))
        assert r.status_code == 200
    finally:
        signals.message_status_changed.disconnect(broken)
        signals.reply_received.disconnect(broken)
    assert [m.status for m in messages(session)] == [Status.SENT]
