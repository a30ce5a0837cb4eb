"""Issue 30: links that work — with ERP_SMS_PUBLIC_URL (and a key), every link in a text
goes out as a short link that redirects (302) to the original; a person's click is on the
text's timeline and in the report (`clicked_at`), a preview or a link scanner is not."""

from __future__ import annotations

import csv
import io

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from erp_sms import signals, timeline
from erp_sms.cli import cli
from erp_sms.models import Click, Message
from erp_sms.segments import analyse
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..helpers import PUBLIC, messages, scene

UPS = "https://www.ups.com/track?tracknum=1Z999AA10123456784"
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


@pytest.fixture
def served(settings, db):
    s = with_settings(public_url=PUBLIC, secret_key="short-link-key-0123456789abcdef")
    return create_app(db=db, settings=s).test_client()


def _shipped(session) -> Message:
    made = scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, order="SO-S1")
    ship = {"id": 1, "carrier": "UPS", "tracking_number": "1Z999AA10123456784"}
    signals.shipment_shipped.send(made.order, session=session, shipping_event=ship)
    session.commit()
    (text,) = messages(session)
    return text


def test_a_texts_links_go_out_short_and_are_counted_with_them(served, session):
    text = _shipped(session)
    code = text.link_code
    assert code is not None and len(code) == 8
    assert f"{PUBLIC}/l/{code}1" in text.body and UPS not in text.body
    assert text.link_urls == f'["{UPS}"]'
    assert text.segments == analyse(text.body).segments  # counted as it goes out


def test_a_click_redirects_and_is_on_the_timeline_and_in_the_report(served, session):
    text = _shipped(session)
    r = served.get(f"/l/{text.link_code}1", headers={"User-Agent": PHONE})
    assert r.status_code == 302 and r.headers["Location"] == UPS
    # A carrier's link scanner, a chat preview, a HEAD: followed, not counted.
    served.head(f"/l/{text.link_code}1", headers={"User-Agent": PHONE})
    served.get(f"/l/{text.link_code}1", headers={"User-Agent": "facebookexternalhit/1.1"})
    session.commit()
    clicks = session.scalars(select(Click).order_by(Click.id)).all()
    assert [c.counted for c in clicks] == [True, False, False]
    session.refresh(text)
    assert text.clicked_at is not None
    lines = [e.line() for e in timeline.for_order(session, "SO-S1")]
    assert any(f"click    #{text.id} {UPS}" in ln for ln in lines), lines
    assert any("fetched" in ln and "facebookexternalhit" in ln for ln in lines)
    out = CliRunner().invoke(cli, ["report", "--order", "SO-S1", "--format", "csv"]).stdout
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["clicked_at"].startswith(text.clicked_at.strftime("%Y-%m-%dT%H:%M"))


@pytest.mark.parametrize("suffix", ["2", "0", "x", ""])
def test_a_link_that_is_not_one_finds_nothing(served, session, suffix):
    text = _shipped(session)
    assert served.get(f"/l/{text.link_code}{suffix}").status_code == 404
    assert served.get("/l/AAAAAAAA1").status_code == 404
    session.commit()
    assert session.scalars(select(Click)).all() == []


def test_without_a_public_url_and_a_key_links_stay_as_they_are(settings, session):
    text = _shipped(session)
    assert UPS in text.body and text.link_code is None
