"""Issue 31: retention and erasure on every database — `erp-sms purge --older-than DAYS`,
SMSRETENTIONDAYS applied by the worker, `erp-sms contacts erase ID` and
`erp_sms.erase_contact`: personal data gone, the reports' totals unchanged, an opt-out
kept as a keyed hash that still holds."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select, text, update

import erp_sms
from erp_sms import erased, erp, report, signals
from erp_sms.cli import cli
from erp_sms.dispatch import Dispatcher
from erp_sms.models import (
    ConsentEvent,
    ErasedOptOut,
    InboundMessage,
    Message,
    MessageEvent,
    OptOut,
    Status,
)
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..helpers import PUBLIC, activate_twilio, callback, inbound, messages, post, scene

ANN, BOB = "+13125550101", "+13125550102"


def _totals(session) -> tuple:
    session.commit()
    t = report.totals(session, report.make_filters())
    return (t.rows, dict(t.by_status), dict(t.by_channel), t.segments, t.cost, t.cost_unit)


@pytest.fixture
def history(any_delivery, any_db, host):
    """Texts sent to Ann and Bob through Twilio, priced, with a delivery report's raw
    payload; Ann replied in free text, Bob texted STOP — then everything aged 40 days,
    and one newer text to Ann that must be left alone."""
    activate_twilio(host)
    host.commit()
    made = scene(host, {"ann": ("Ann Lee", ANN), "bob": ("Bob Ray", BOB)}, fire=True)
    Dispatcher(any_db).run_once()
    rows = messages(host)
    assert [m.status for m in rows] == [Status.SENT, Status.SENT]
    for m in rows:
        m.price, m.price_unit = "-0.00790", "USD"
    host.commit()
    client = create_app(db=any_db, settings=with_settings(public_url=PUBLIC)).test_client()
    for m in rows:
        post(client, "status", callback(m.provider_id, "delivered", To=m.recipient))
    post(
        client,
        "inbound",
        inbound(ANN, "Thanks Ann Lee here, call me at 3125550101", "SM" + "7" * 32),
    )
    post(client, "inbound", inbound(BOB, "STOP", "SM" + "8" * 32))
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    with any_db.session() as s:
        s.execute(update(Message).values(created_at=old, updated_at=old))
        s.execute(update(InboundMessage).values(received_at=old))
        s.execute(update(MessageEvent).values(at=old))
    host.rollback()
    signals.work_order_completed.send(made.order, session=host, work_order=_wo(1))
    host.commit()
    return made


def _wo(i: int) -> dict[str, object]:
    return {"id": i, "number": f"PWO-{i}", "status": "complete"}


def _everything(any_db) -> str:
    """Every row of every erp-sms table, as text: what a person's data would be found in."""
    found = []
    with any_db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            if table.startswith("sms_"):
                every_row = text(f"SELECT * FROM {table}")  # noqa: S608 (the schema's names)
                found.extend(str(tuple(r)) for r in conn.execute(every_row))
    return "\n".join(found)


def test_purge_forgets_words_and_numbers_of_old_texts_and_keeps_the_totals(history, any_db, host):
    before = _totals(host)
    dry = CliRunner().invoke(cli, ["purge", "--older-than", "30", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would remove the words, numbers and raw reports of 2 text(s) and 2 repl" in dry.output
    assert "Ann Lee" in _everything(any_db)  # a dry run changes nothing
    out = CliRunner().invoke(cli, ["purge", "--older-than", "30"])
    assert out.exit_code == 0, out.output
    assert "removed the words, numbers and raw reports of 2 text(s)" in out.output
    assert _totals(host) == before
    old, new = (
        [m for m in messages(host) if m.purged_at],
        [m for m in messages(host) if not m.purged_at],
    )
    assert len(old) == 2 and len(new) == 1
    for m in old:
        assert (m.body, m.recipient, m.address, m.contact_name) == ("", None, None, None)
        assert m.status == Status.DELIVERED and m.price == "-0.00790" and m.segments == 1
        assert all(e.raw is None for e in m.history)
    assert new[0].body and new[0].recipient == ANN  # newer than 30 days: untouched
    from erp_sms import timeline

    lines = [e.line() for e in timeline.for_order(host, "SO-1")]
    assert any(
        f"#{old[0].id} sent_to_production → (removed) via twilio (removed)" in ln for ln in lines
    )
    with any_db.read_session() as s:
        replies = s.scalars(select(InboundMessage)).all()
        assert {(r.body, r.from_number) for r in replies} == {("", "***0101"), ("", "***0102")}
        # The opt-out holds, and the consent trail (the evidence the law asks to keep).
        assert s.get(OptOut, BOB) is not None
        assert s.scalar(select(ConsentEvent.number).where(ConsentEvent.action == "opt_out")) == BOB
    again = CliRunner().invoke(cli, ["purge", "--older-than", "30"])
    assert "of 0 text(s)" in again.output


def test_purge_refuses_a_window_of_no_days(any_db):
    out = CliRunner().invoke(cli, ["purge", "--older-than", "0"])
    assert out.exit_code == 2 and "0 is not in the range 1<=x<=36500" in out.output


def test_the_worker_applies_smsretentiondays_once_a_day(history, any_db, host):
    from erp_sms import options

    with any_db.session() as s:
        options.set_value(s, "SMSRETENTIONDAYS", "30", by="test")
    now = dt.datetime.now(dt.UTC)
    worker = Dispatcher(any_db, clock=lambda: now)
    worker.run_once()  # as `erp-sms dispatch` from cron runs it, or the worker's loop
    assert len([m for m in messages(host) if m.purged_at]) == 2
    # A day later, what has finished and aged since goes too (checked hourly, done daily).
    Dispatcher(any_db).run_once()
    with any_db.session() as s:
        s.execute(update(Message).where(Message.purged_at.is_(None)).values(
            created_at=now - dt.timedelta(days=31), updated_at=now - dt.timedelta(days=31)))  # fmt: skip
    worker._retention_checked = None
    worker.keep_retention()
    assert len([m for m in messages(host) if m.purged_at]) == 2  # not a day yet
    later = Dispatcher(any_db, clock=lambda: now + dt.timedelta(days=1, minutes=1))
    later.keep_retention()
    assert len([m for m in messages(host) if m.purged_at]) == 3


def test_erasing_a_contact_leaves_no_trace_and_keeps_totals_and_the_opt_out(
    history, any_db, host, any_delivery
):
    bob = history["bob"]
    before = _totals(host)
    assert BOB in _everything(any_db) and "Bob Ray" in _everything(any_db)
    done = erp_sms.erase_contact(host, str(bob.id), by="test")
    host.commit()
    assert done.texts == 1 and done.opt_outs_kept == 1 and done.replies == 1
    everything = _everything(any_db)
    assert "3125550102" not in everything and "555-0102" not in everything
    assert "Bob Ray" not in everything
    assert "Ann Lee" in everything  # only Bob's
    assert _totals(host) == before
    # The opt-out holds as a hash: the ERP still has Bob and turns SMSUPDATE back on.
    with any_db.session() as s:
        digest = erased.digest(erased.key(s.connection()), BOB)
        assert s.get(ErasedOptOut, (digest, erased.EVERY)) is not None
        assert s.get(OptOut, BOB) is None
    host.rollback()
    bob.attributes.append(erp.ContactAttribute("SMSUPDATE"))
    host.commit()
    signals.work_order_completed.send(history.order, session=host, work_order=_wo(2))
    host.commit()
    new = [m for m in messages(host) if m.subject_ref == "2" and m.contact_ref == str(bob.id)]
    assert [m.status for m in new] == [Status.SKIPPED]
    assert "its owner's data was erased since" in (new[0].reason or "")


def test_an_erased_number_that_opted_out_meanwhile_is_stopped_at_the_handover(
    any_delivery, any_db, host, twilio_server
):
    """The send guard checks the hash too: a text queued before the erasure and not
    canceled by it (a race) is not sent."""
    activate_twilio(host)
    host.commit()
    scene(host, {"ann": ("Ann Lee", ANN)}, fire=True)
    with any_db.session() as s:
        digest = erased.digest(erased.key(s.connection()), ANN)
        s.add(ErasedOptOut(digest=digest, program=erased.EVERY, source="sms_reply"))
    Dispatcher(any_db).run_once()
    (m,) = messages(host)
    assert m.status == Status.CANCELED and "opted out" in (m.reason or "")
    assert twilio_server.messages == []


def test_an_erased_number_that_texts_start_gets_texts_again(history, any_db, host):
    erp_sms.erase_contact(host, str(history["bob"].id), by="test")
    host.commit()
    client = create_app(db=any_db, settings=with_settings(public_url=PUBLIC)).test_client()
    post(client, "inbound", inbound(BOB, "START", "SM" + "9" * 32))
    with any_db.read_session() as s:
        assert s.scalar(select(ErasedOptOut.digest)) is None  # back under the number…
        assert s.get(OptOut, BOB) is None  # …and lifted by the opt-in


def test_contacts_erase_on_the_command_line(history, any_db):
    out = CliRunner().invoke(cli, ["contacts", "erase", str(history["ann"].id), "--yes"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"contact {history['ann'].id}: erased from erp-sms — 2 text(s)")
    assert "Ann Lee" not in _everything(any_db)
    unknown = CliRunner().invoke(cli, ["contacts", "erase", "99999", "--yes"])
    assert unknown.exit_code == 2 and "no contact with id '99999'" in unknown.output


def test_the_erase_key_is_made_by_the_migration_and_differs_per_database(any_db, tmp_path):
    from erp_sms import migrate
    from erp_sms.db import make_engine

    fresh = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    migrate.upgrade(fresh)
    with any_db.engine.connect() as conn:
        first = erased.key(conn)
    with fresh.connect() as conn:
        other = erased.key(conn)
    fresh.dispose()
    assert first is not None and len(first) == 32 and other is not None and other != first
    assert erased.digest(first, ANN) != erased.digest(other, ANN)
    assert erased.digest(first, ANN).startswith("#") and len(erased.digest(first, ANN)) == 32
