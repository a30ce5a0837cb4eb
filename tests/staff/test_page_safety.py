"""Issue 25: the staff pages safe by default (redirects, cookies, headers, sign-in under
attack, spreadsheets), roles for who may change what, stale saves refused, and the
findings on the job itself — each a finding from trying the pages from outside.
Layout at 1280 px and 390 px is checked in the browser (tests/test_browser.py)."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import re
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from erp_sms import migrate, outbox, users
from erp_sms.cli import cli
from erp_sms.db import make_engine
from erp_sms.models import (
    Option,
    RuleAudit,
    SequenceRun,
    StaffUser,
    Status,
    TemplateOverride,
)
from erp_sms.sendwindow import zones_for
from erp_sms.webhooks import create_app

from ..conftest import with_settings
from ..helpers import messages
from ..staff_pages import FORMS, PAGES, PASSWORD, Staff, _world, anon, app, flashed, staff, world

__all__ = ["anon", "app", "staff", "world"]  # fixtures from staff_pages


def page_text(r) -> str:
    return html.unescape(r.get_data(as_text=True))


def fresh(session) -> None:
    """End the test's read snapshot: what the pages wrote since is seen."""
    session.commit()
    session.expire_all()


def as_user(app, name: str, role: str, session) -> Staff:
    users.add(session, name, PASSWORD, by="test", role=role)
    session.commit()
    s = Staff(app.test_client())
    assert s.sign_in(name).status_code == 302
    s.get("/")
    return s


# -- redirects, cookies, headers ---------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["/%09/evil.example", "/%5Cevil.example", "https://evil.example/", "//evil.example", "/%0d/x"],
)
def test_sign_in_and_the_log_send_staff_only_to_this_site(anon, target):
    anon.get("/sign-in")
    r = anon.post(f"/sign-in?next={target}", {"name": "maria", "password": PASSWORD})
    assert r.status_code == 302 and r.headers["Location"] == "/"
    anon.get("/")
    back = target.replace("%09", "\t").replace("%5C", "\\").replace("%0d", "\r")
    r = anon.post("/log/action", {"action": "release", "back": back})
    assert r.headers["Location"] == "/log"


def test_a_page_of_this_site_is_where_sign_in_goes(anon):
    anon.get("/sign-in")
    r = anon.post("/sign-in?next=/log%3Fstatus%3Dheld", {"name": "maria", "password": PASSWORD})
    assert r.headers["Location"] == "/log?status=held"


def test_the_session_cookie_is_lax_and_httponly_and_secure_behind_https(settings, db, world):
    def cookie(app) -> str:
        c = Staff(app.test_client())
        c.get("/sign-in")
        return c.post("/sign-in", {"name": "maria", "password": PASSWORD}).headers["Set-Cookie"]

    plain = cookie(create_app(db=db, settings=settings))
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    public = dataclasses.replace(settings, public_url="https://sms.example.com")
    behind_proxy = cookie(create_app(db=db, settings=public))
    assert "Secure" in behind_proxy and "SameSite=Lax" in behind_proxy


def test_every_answer_has_the_security_headers_and_no_inline_script(staff, anon):
    answers = {url: staff.get(url) for url in PAGES}
    answers["/sign-in"] = anon.get("/sign-in")
    answers["/twilio/status"] = anon.client.post("/twilio/status")
    answers["/no-such-page"] = staff.get("/no-such-page")
    for url, r in answers.items():
        h = r.headers
        csp = h.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, url
        assert "unsafe-inline" not in csp, url
        assert h.get("X-Content-Type-Options") == "nosniff", url
        assert h.get("Referrer-Policy") == "same-origin", url
        assert h.get("Cache-Control") == "no-store", url
        body = r.get_data(as_text=True)
        # What a strict CSP would block, so it must not be there to block.
        assert not re.search(r"<script(?![^>]*\bsrc=)", body), url
        assert not re.search(r"\s(style|on[a-z]+)=", body), url
    css = staff.get("/static/erp_sms/erp_sms.css")
    css.close()  # a file response
    assert css.status_code == 200 and "no-store" not in css.headers.get("Cache-Control", "")


# -- sign-in under attack ---------------------------------------------------------------------


class CountingHasher:
    """The real Argon2 hasher, counting the checks against each hash."""

    def __init__(self, real) -> None:
        self.real, self.checked, self.lock = real, [], threading.Lock()

    def verify(self, hashed: str, password: str) -> bool:
        with self.lock:
            self.checked.append(hashed)
        return self.real.verify(hashed, password)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_sixteen_wrong_passwords_at_once_check_no_more_than_five(any_db, host, monkeypatch):
    users.add(host, "maria", PASSWORD, by="test")
    host.commit()
    real_hash = host.scalar(select(StaffUser.password_hash))
    counting = CountingHasher(users._hasher)
    monkeypatch.setattr(users, "_hasher", counting)
    start = threading.Barrier(16)
    outcomes: list[users.SignIn] = []

    def attempt() -> None:
        start.wait()
        outcomes.append(users.authenticate(any_db, "maria", "wrong password!"))

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 16 and all(o.error == users.REFUSED for o in outcomes)
    assert counting.checked.count(real_hash) == users.MAX_FAILURES
    # Locked: the right password is refused now, in the same words, without its check.
    right = users.authenticate(any_db, "maria", PASSWORD)
    assert right.user is None and right.error == users.REFUSED
    assert counting.checked.count(real_hash) == users.MAX_FAILURES


def test_unknown_and_locked_names_get_one_answer_after_one_hash_check(db, session, monkeypatch):
    users.add(session, "maria", PASSWORD, by="test")
    session.commit()
    counting = CountingHasher(users._hasher)
    monkeypatch.setattr(users, "_hasher", counting)
    for _ in range(users.MAX_FAILURES):
        users.authenticate(db, "maria", "wrong password!")
    said = {}
    for name in ("maria", "nobody"):  # locked, unknown
        before = len(counting.checked)
        said[name] = users.authenticate(db, name, PASSWORD).error
        assert len(counting.checked) == before + 1, name
    assert said["maria"] == said["nobody"] == users.REFUSED


# -- spreadsheets -----------------------------------------------------------------------------


def test_csv_exports_never_start_a_cell_with_a_formula(staff, session, world):
    rows = messages(session)
    rows[0].contact_name = '=HYPERLINK("http://evil.example","Ann")'
    rows[1].reason = "+1 bad"
    rows[1].body = "@SUM(1+1)"
    session.commit()
    pages = list(csv.reader(io.StringIO(staff.get("/log.csv").get_data(as_text=True))))
    command = CliRunner().invoke(cli, ["report", "--format", "csv"])
    assert command.exit_code == 0
    for exported in (pages, list(csv.reader(io.StringIO(command.stdout)))):
        cells = [c for row in exported for c in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")]
        assert '\'=HYPERLINK("http://evil.example","Ann")' in cells
        assert "'+1 bad" in cells and "'@SUM(1+1)" in cells


# -- roles ------------------------------------------------------------------------------------


def _state(session) -> tuple:
    fresh(session)
    return (
        [(m.id, m.status) for m in messages(session)],
        session.scalar(select(func.count()).select_from(Option)),
        session.scalar(select(func.count()).select_from(TemplateOverride)),
        session.scalar(select(func.count()).select_from(RuleAudit)),
        [(u.name, u.time_zone) for u in session.scalars(select(StaffUser))],
    )


FORM_DATA = {
    "id": "1",
    "action": "release",
    "name": "SMSONLYONE",
    "value": "off",
    "source": "Order {{ order.number }}.",
    "record": "TWILIO",
    "SID": "AC" + "0" * 32,
    "state": "out",
    "message": "hello",
    "sequence": "x",
    "days": "1",
}


def test_a_viewer_reads_every_page_and_changes_nothing(app, session):
    viewer = as_user(app, "vic", "viewer", session)
    for url in PAGES:
        assert viewer.get(url).status_code == 200, url
    assert "Your role: <strong>viewer</strong>" in page_text(viewer.get("/account"))
    log = viewer.get("/log").get_data(as_text=True)
    assert 'value="release"' not in log  # no buttons it may not press
    before = _state(session)
    for url in FORMS:
        if url in ("/account", "/templates/SMS S2P/preview"):
            continue  # one's own zone; a preview reads only
        r = viewer.post(url, FORM_DATA)
        assert r.status_code == 403, url
        assert "Your role (viewer) may not do that" in page_text(r), url
    assert _state(session) == before


def test_an_operator_acts_on_texts_but_not_on_the_configuration(app, session):
    operator = as_user(app, "olga", "operator", session)
    held = messages(session)[0]
    outbox.set_status(session, held, Status.HELD, source="test", reason="held for test")
    session.commit()
    r = operator.post("/log/action", {"action": "release", "id": str(held.id)})
    assert "1 text(s) released" in flashed(operator.get(r.headers["Location"]))
    for url in ("/rules", "/options", "/templates/SMS S2P", "/reminders/step"):
        assert operator.post(url, FORM_DATA).status_code == 403, url
    rules = operator.get("/rules").get_data(as_text=True)
    assert "Only an admin can change this record" in rules and "Test credentials" not in rules


def test_roles_from_the_cli(settings, session):
    runner = CliRunner()
    r = runner.invoke(cli, ["users", "add", "tom", "--role", "viewer"], input="long enough pw\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["users", "add", "ida"], input="long enough pw\n")
    assert r.exit_code == 0
    roles = dict(session.execute(select(StaffUser.name, StaffUser.role)).all())
    assert roles == {"tom": "viewer", "ida": "operator"}  # operator unless told
    r = runner.invoke(cli, ["users", "role", "tom", "admin"])
    assert r.exit_code == 0 and "tom is admin" in r.stdout
    assert re.search(r"tom\s+admin", runner.invoke(cli, ["users", "list"]).stdout)
    bad = runner.invoke(cli, ["users", "role", "tom", "boss"])
    assert bad.exit_code == 2 and "one of viewer, operator, admin" in bad.stderr
    assert "Traceback" not in bad.output
    missing = runner.invoke(cli, ["users", "role", "nobody", "viewer"])
    assert missing.exit_code == 2 and "no user 'nobody'" in missing.stderr


def test_users_made_before_roles_existed_are_admins(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = migrate.alembic_config(engine)
    from alembic import command

    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "p0006")
        conn.execute(
            text(
                "INSERT INTO sms_staff_user (name, password_hash, created_at, "
                "failed_attempts, session_token) VALUES ('old', 'x', '2026-01-01', 0, 't')"
            )
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT role FROM sms_staff_user")).scalar_one() == "admin"
    engine.dispose()


# -- stale saves ------------------------------------------------------------------------------


def _version(page: str) -> str:
    found = re.search(r'name="version" value="([^"]*)"', page)
    assert found
    return found.group(1)


def test_two_tabs_on_one_template_the_second_save_is_refused_not_lost(app, staff, session):
    other = as_user(app, "tom", "admin", session)
    mine = _version(staff.get("/templates/SMS S2P").get_data(as_text=True))
    theirs = _version(other.get("/templates/SMS S2P").get_data(as_text=True))
    r = other.post("/templates/SMS S2P", {"source": "Tom's {{ order.number }}.", "version": theirs})
    assert r.status_code == 302
    r = staff.post("/templates/SMS S2P", {"source": "Maria's {{ order.number }}.", "version": mine})
    said = page_text(r)
    assert r.status_code == 400 and "was changed since you opened it" in said
    assert "saved by tom" in said and "Maria's {{ order.number }}." in said  # kept
    fresh(session)
    assert session.get(TemplateOverride, "SMS S2P").body == "Tom's {{ order.number }}."
    # Saving again, knowing it, is deliberate: the page now carries the new version.
    again = staff.post(
        "/templates/SMS S2P",
        {"source": "Maria's {{ order.number }}.", "version": _version(r.get_data(as_text=True))},
    )
    assert again.status_code == 302
    fresh(session)
    assert session.get(TemplateOverride, "SMS S2P").body == "Maria's {{ order.number }}."


def test_a_stale_option_or_rule_record_is_refused_with_what_changed(app, staff, session):
    other = as_user(app, "tom", "admin", session)
    page = staff.get("/options").get_data(as_text=True)
    version = re.search(
        r'name="name" value="SMSONLYONE">.*?name="version" value="([^"]*)"', page, re.S
    ).group(1)
    other.post("/options", {"name": "SMSONLYONE", "value": "off"})
    r = staff.post("/options", {"name": "SMSONLYONE", "value": "on", "version": version})
    said = flashed(staff.get(r.headers["Location"]))
    assert "SMSONLYONE was changed since you opened the page (set to off by tom" in said
    fresh(session)
    assert session.get(Option, "SMSONLYONE").value == "off"

    version = _version(staff.get("/rules").get_data(as_text=True))
    other.post("/rules", {"record": "TWILIO", "PhoneNumber": "+13125550100"})
    r = staff.post(
        "/rules", {"record": "TWILIO", "PhoneNumber": "+13125550111", "version": version}
    )
    said = flashed(staff.get(r.headers["Location"]))
    assert "TWILIO was changed since you opened it (PhoneNumber set by tom" in said
    assert "nothing was saved" in said


# -- input no database takes, and a paste too large ----------------------------------------


def test_a_nul_in_a_filter_is_one_line_not_a_500(any_db, host):
    from erp_sms.config import get_settings

    _world(host)
    a = create_app(db=any_db, settings=get_settings())
    s = Staff(a.test_client())
    assert s.sign_in().status_code == 302
    r = s.get("/log?contact=%00%ff")
    assert r.status_code == 400 and "remove the NUL character" in page_text(r)
    assert "Traceback" not in page_text(r)
    s.get("/options")
    r = s.post("/options", {"name": "SMSCOMPANYNAME", "value": "Acme\x00"})
    assert r.status_code == 400 and "value: remove the NUL character" in page_text(r)


def test_a_paste_too_large_gets_a_page_that_says_so_and_a_long_template_keeps_its_text(staff):
    r = staff.post("/templates/SMS S2P", {"source": "x" * 200_000})
    assert r.status_code == 413
    said = page_text(r)
    assert "larger than the 64 kB the pages take: nothing was saved" in said
    assert "erp_sms.css" in said  # the pages' own page, not werkzeug's
    long = "Order {{ order.number }}. " + "y" * 12_000
    r = staff.post("/templates/SMS S2P", {"source": long})
    assert r.status_code == 400 and "keep it under 10,000" in page_text(r)
    assert long in page_text(r)  # still in the editor


# -- the job ----------------------------------------------------------------------------------


def test_an_undelivered_text_can_be_retried_as_a_new_text(staff, session):
    row = messages(session)[0]
    row.status, row.provider_id, row.reason = Status.UNDELIVERED, "SM" + "1" * 32, "30003"
    session.commit()
    r = staff.post("/log/action", {"action": "retry", "id": str(row.id)})
    said = flashed(staff.get(r.headers["Location"]))
    rows = {m.id: m for m in messages(session)}
    new = max(rows)
    assert f"#{row.id} sent again as #{new}: queued" in said
    # The row stays what Twilio said; the retry is its own text.
    assert rows[row.id].status == Status.UNDELIVERED
    assert rows[row.id].provider_id == "SM" + "1" * 32
    assert rows[new].status == Status.QUEUED and rows[new].provider_id is None
    assert f"sent again as #{new}" in rows[row.id].history[-1].detail
    again = staff.post("/log/action", {"action": "retry", "id": str(row.id)})
    flashed(staff.get(again.headers["Location"]))
    assert len(messages(session)) == len(rows)  # not twice


def test_an_unknown_variable_is_named_as_written_not_in_jinjas_words(staff):
    r = staff.post("/templates/SMS S2P", {"source": "Order {{ order.nmber }}."})
    said = page_text(r)
    assert "unknown variable order.nmber" in said
    assert "dict object" not in said and "has no attribute" not in said


def test_customers_are_found_as_staff_type_them(staff, session, world):
    rows = messages(session)
    rows[0].contact_name, rows[0].recipient = "Anna Müller", "+447400123456"
    session.commit()
    with_settings(default_region="GB")
    assert "Anna Müller" in page_text(staff.get("/find?q=07400 123456"))
    assert "Anna Müller" in page_text(staff.get("/find?q=muller"))
    assert "Anna Müller" in page_text(staff.get("/find?q=MÜLLER"))
    percent = page_text(staff.get("/find?q=%25"))
    assert "SO-1" not in percent and "Anna" not in percent


def test_the_dashboard_says_gateways_never_confirm_delivery(staff, session):
    for m in messages(session):
        if m.channel == "email_gateway":
            outbox.set_status(session, m, Status.SENT, source="test")
    session.commit()
    page = page_text(staff.get("/"))
    assert "handed over; gateways never confirm delivery" in page
    assert "0% of" not in page


def test_an_invoice_timeline_is_titled_by_its_number(staff, session, world):
    rows = messages(session)
    rows[0].subject_ref, rows[0].event = "6f1c2d3e-aaaa-bbbb-cccc-1234567890ab", "dunning"
    session.add(
        SequenceRun(
            sequence="dunning",
            order_ref=rows[0].order_ref,
            subject_ref=rows[0].subject_ref,
            order_number="SO-1",
            anchor=rows[0].created_at.date(),
            plan='{"context": {"invoice": {"number": "INV-2291"}}, "contacts": []}',
        )
    )
    session.commit()
    from erp_sms import demo_data

    demo_data.register()  # the demo's "dunning" (one registration per process, any order)
    page = page_text(staff.get(f"/timeline?subject=invoice:{rows[0].subject_ref}"))
    assert "Timeline invoice INV-2291 (order SO-1)" in page


def test_a_uk_number_is_shown_in_london_not_guernsey():
    assert zones_for("+447400123456", "America/Chicago")[0].key == "Europe/London"
    assert zones_for("+447781123456", "America/Chicago")[0].key == "Europe/Guernsey"


def test_a_contact_that_does_not_exist_has_no_forms(staff):
    r = staff.get("/timeline?contact=99999")
    said = page_text(r)
    assert r.status_code == 404 and "no contact with id '99999'" in said
    assert "Opt out" not in said and "Queue the text" not in said


def test_held_texts_are_counted_one_way_by_the_cli_and_the_rules_page(staff, session):
    """Issue 26: `rules show TWILIO` said 1 and the rules page 3 on the same database."""
    from ..helpers import activate_twilio

    activate_twilio(session)
    session.commit()
    rows = messages(session)
    rows[0].channel, rows[0].status = "twilio", Status.HELD  # held for TWILIO
    rows[1].status = Status.HELD  # a gateway text held for another reason
    session.commit()
    shown = CliRunner().invoke(cli, ["rules", "show", "TWILIO"]).stdout
    assert "1 text(s) held for this record" in shown
    from erp_sms.rule_records import flag_rejected

    flag_rejected(session, "TWILIO", "20003 authenticate", by="test")
    session.commit()
    assert "— 1 text(s) held." in page_text(staff.get("/rules"))
    assert outbox.held_count(session) == 2  # the dashboard's: every held text


def test_erasing_a_contact_is_an_admins_and_asks_for_a_confirmation(app, session, staff):
    """Issue 31: a person's request to be forgotten, from the contact's page (the CLI's
    and the host's one action)."""
    operator = as_user(app, "olga", "operator", session)
    assert operator.post("/contacts/1/erase", {"confirm": "yes"}).status_code == 403
    assert "Erase this contact" not in operator.get("/timeline?contact=1").get_data(as_text=True)
    page = staff.get("/timeline?contact=1").get_data(as_text=True)
    assert "Erase this contact's data" in page and 'name="confirm" value="yes" required' in page
    r = staff.post("/contacts/1/erase", {})
    assert "cannot be undone: confirm it" in flashed(staff.get(r.headers["Location"]))
    assert "Ann Lee" in str([m.contact_name for m in messages(session)])
    r = staff.post("/contacts/1/erase", {"confirm": "yes"})
    assert "contact 1: erased from erp-sms — 1 text(s)" in flashed(staff.get(r.headers["Location"]))
    assert "Ann Lee" not in str([m.contact_name for m in messages(session)])
