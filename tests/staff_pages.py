"""The staff pages through Flask's test client, as the page tests share it: every page
and form of the blueprint, a browser-like client that keeps the cookie and CSRF token,
the signed-in admin and the world they work on."""

from __future__ import annotations

import html
import re

import pytest

from erp_sms import signals, users
from erp_sms.webhooks import create_app

from .helpers import scene

PASSWORD = "correct horse battery"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')

# Every page (GET) and every form (POST) of the blueprint, with arguments that exist.
PAGES = [
    "/",
    "/rules",
    "/options",
    "/templates",
    "/templates/SMS S2P",
    "/log",
    "/log.csv",
    "/find?q=Ann",
    "/timeline?order=SO-1",
    "/replies",
    "/conversation?number=%2B13125550101",
    "/reminders",
    "/account",
]
FORMS = [
    "/rules",
    "/rules/test",
    "/options",
    "/templates/SMS S2P",
    "/templates/SMS S2P/reset",
    "/templates/SMS S2P/preview",
    "/log/action",
    "/contacts/1/consent",
    "/contacts/1/text",
    "/contacts/1/erase",
    "/replies/1/done",
    "/replies/1/answer",
    "/reminders/step",
    "/reminders/switch",
    "/reminders/sender",
    "/account",
]


def _world(session):
    """Ann on a gateway, Bob on a plain number, order SO-1 sent to production; staff
    user maria."""
    people = {"ann": ("Ann Lee", "3125550101@vtext.com"), "bob": ("Bob Ray", "+13125550102")}
    made = scene(session, people, org="Acme Fabrication", order="SO-1")
    users.add(session, "maria", PASSWORD, by="test", role="admin")
    session.commit()
    signals.sent_to_production.send(made.order, session=session)
    session.commit()
    return made


@pytest.fixture
def world(session):
    return _world(session)


@pytest.fixture
def app(settings, db, world):
    a = create_app(db=db, settings=settings)
    a.config["TESTING"] = True
    return a


class Staff:
    """A browser-like client: keeps the cookie and the CSRF token of the last page."""

    def __init__(self, client) -> None:
        self.client = client
        self.token = ""

    def get(self, url: str, **kw):
        r = self.client.get(url, **kw)
        found = TOKEN.search(r.get_data(as_text=True))
        if found:
            self.token = found.group(1)
        return r

    def post(self, url: str, data: dict | None = None, *, csrf: bool = True, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.token)
        return self.client.post(url, data=data, **kw)

    def sign_in(self, name: str = "maria", password: str = PASSWORD):
        self.get("/sign-in")
        return self.post("/sign-in", {"name": name, "password": password})


@pytest.fixture
def anon(app) -> Staff:
    return Staff(app.test_client())


@pytest.fixture
def staff(anon) -> Staff:
    assert anon.sign_in().status_code == 302
    anon.get("/")
    return anon


def flashed(r) -> str:
    found = re.findall(r'<p class="flash [a-z]+"[^>]*>([^<]*)</p>', r.get_data(as_text=True))
    return html.unescape(" | ".join(found))


# -- sign-in, CSRF -------------------------------------------------------------------------
