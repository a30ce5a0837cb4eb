"""Issue 30: the hosted opt-out page — a fresh installation's gateway texts go out with a
short signed link instead of being skipped; the page opts out of one program or all,
through HTTP (GET, POST, the trail, a second visit, a forged link)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import delete, select

from erp_sms import signals
from erp_sms.models import ConsentEvent, Message, Option, OptOut, ProgramOptOut, Status
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..helpers import PUBLIC, messages, scene

SECRET = "a-secret-key-for-tests-only-0123456789"


@pytest.fixture
def fresh(settings, db, session):
    """A fresh installation: no SMSOPTOUTCONTACT; erp-sms serve at PUBLIC with a key."""
    session.execute(delete(Option).where(Option.name == "SMSOPTOUTCONTACT"))
    session.execute(
        Option.__table__.insert().values(
            name="SMSCOMPANYNAME", value="Northwind Machining", updated_by="t"
        )
    )
    session.commit()
    s = with_settings(public_url=PUBLIC, secret_key=SECRET)
    return create_app(db=db, settings=s).test_client()


def _text(session) -> Message:
    made = scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-L1")
    signals.sent_to_production.send(made.order, session=session)
    session.commit()
    (text,) = messages(session)
    return text


def test_a_gateway_text_carries_its_own_link_instead_of_being_skipped(fresh, session):
    text = _text(session)
    assert text.status == Status.QUEUED
    token = text.link_token
    assert token is not None and re.fullmatch(r"[A-Za-z0-9_-]{10}", token)
    assert text.body.endswith(f"To opt out: {PUBLIC}/o/{token}")
    assert "3125550101" not in token and text.segments == 1
    # Without a key (or a public URL) there is no page to link to: skipped, as before.
    with_settings(public_url=PUBLIC, secret_key=None)
    made = scene(session, {"bo": ("Bo", "3125550102@vtext.com")}, org="B", order="SO-L2")
    signals.sent_to_production.send(made.order, session=session)
    session.commit()
    assert messages(session)[-1].status == Status.SKIPPED


def test_the_page_opts_out_of_one_program_then_all(fresh, session):
    token = _text(session).link_token
    page = fresh.get(f"/o/{token}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Texts from Northwind Machining" in html
    assert 'name="viewport"' in html and "Payment reminders" in html
    key = re.search(r'name="form_key" value="([^"]+)"', html).group(1)
    forged = fresh.post(f"/o/{token}", data={"program": "reminders", "form_key": "x" * 22})
    assert forged.status_code == 400
    done = fresh.post(f"/o/{token}", data={"program": "reminders", "form_key": key})
    said = done.get_data(as_text=True)
    assert done.status_code == 200 and "Done: you will get no more payment reminders" in said
    session.commit()
    row = session.get(ProgramOptOut, ("+13125550101", "reminders"))
    assert row is not None and row.source == "link"
    (trail,) = session.scalars(select(ConsentEvent)).all()
    assert (trail.source, trail.program, trail.action) == ("link", "reminders", "opt_out")
    # A second visit shows it, and offers the rest.
    again = fresh.get(f"/o/{token}").get_data(as_text=True)
    assert "Payment reminders (already stopped)" in again
    fresh.post(f"/o/{token}", data={"program": "all", "form_key": key})
    session.commit()
    assert session.get(OptOut, "+13125550101").source == "link"
    assert "You get no texts from Northwind Machining" in fresh.get(f"/o/{token}").get_data(
        as_text=True
    )
    # The text still waiting was canceled by the opt-out.
    assert messages(session)[0].status == Status.CANCELED


@pytest.mark.parametrize("forged", ["AAAAAAAAAA", "short", "x" * 40])
def test_a_forged_link_finds_nothing(fresh, session, forged):
    token = _text(session).link_token
    assert fresh.get(f"/o/{token}").status_code == 200
    bad = fresh.get(f"/o/{forged}")
    assert bad.status_code == 404 and "This link is not valid" in bad.get_data(as_text=True)
    assert fresh.post(f"/o/{forged}", data={"program": "all"}).status_code == 404
    session.commit()
    assert session.scalars(select(OptOut)).all() == []
