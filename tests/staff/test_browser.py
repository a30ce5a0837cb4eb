"""Issue 12: the staff pages in a real browser — Playwright driving Debian's chromium
against `erp-sms serve`'s app under waitress on loopback. Every page is saved as a
screenshot under test-output/screenshots/ (ERP_SMS_SCREENSHOTS to change it).

Waits are Playwright's own (for an element, a text, a navigation, a download), never
sleeps."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from erp_sms import outbox, signals, users
from erp_sms.models import InboundMessage, Status
from erp_sms.sequences import register_sequence
from erp_sms.webhooks import create_app, stop_server

from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import activate_twilio, messages, scene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (`apt-get install chromium`; .ci/run does it)",
)

PASSWORD = "correct horse battery"
INVOICE_KEY = "6f1c2d3e-5a5a-4b4b-8c8c-1234567890ab"  # a host's invoice id: a UUID


@dataclass(frozen=True)
class Invoice:
    id: str
    number: str
    due_date: dt.date


REMINDERS = register_sequence(
    "browser_dunning",
    subject="invoice",
    steps=[(0, "SMS BROWSER DUE")],
    default_templates={"SMS BROWSER DUE": "Invoice {{ invoice.number }} is due today."},
)
SHOTS = Path(os.environ.get("ERP_SMS_SCREENSHOTS", "test-output/screenshots"))


@pytest.fixture
def site(settings, db, session):
    """Demo-like data, and the app served by waitress on a free loopback port."""
    from waitress import create_server

    people = {
        "ann": ("Ann Lee", "3125550101@vtext.com"),
        "bob": ("Bob Ray", "3125550102@vtext.com"),
    }
    order = scene(session, people, org="Acme Fabrication", order="SO-104233").order
    users.add(session, "maria", PASSWORD, by="test", role="admin")
    activate_twilio(session, active=False)
    session.commit()
    signals.sent_to_production.send(order, session=session)
    session.commit()
    held = messages(session)[1]
    outbox.set_status(session, held, Status.HELD, source="test", reason="waiting for staff")
    session.add(InboundMessage(from_number="+13125550101", body="Friday please", kind="reply"))
    session.commit()
    # Issue 25's job findings: a UK customer with an accent in her name and an invoice
    # on a reminder run; a text Twilio took and the carrier did not deliver.
    bau = OrganizationFactory(name="Müller Bau")
    anna = ContactFactory(name="Anna Müller", email2="+447400123456", organizations=[bau])
    order2 = SalesOrderFactory(number="SO-2", organization=bau, contact=anna)
    session.add_all([bau, anna, order2])
    activate_twilio(session)  # her number is a phone number: through Twilio
    session.commit()
    signals.sent_to_production.send(order2, session=session)
    invoice = Invoice(INVOICE_KEY, "INV-7", dt.date.today() + dt.timedelta(days=30))
    REMINDERS.start(order2, session=session, anchor=invoice.due_date, invoice=invoice)
    session.commit()
    lost = next(
        m
        for m in messages(session)
        if m.event == "sent_to_production" and m.contact_name == "Anna Müller"
    )
    lost.status, lost.provider_id, lost.reason = Status.UNDELIVERED, "SM" + "7" * 32, "30003"
    session.commit()
    server = create_server(create_app(db=db, settings=settings), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield {
        "url": f"http://127.0.0.1:{server.effective_port}",
        "held": held.id,
        "undelivered": lost.id,
    }
    stop_server(server)
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def page(site):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(
            base_url=site["url"], viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        context.set_default_timeout(15_000)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        # A page the CSP breaks (an inline script or style) says so on the console.
        pg.on(
            "console",
            lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        yield pg
        browser.close()
        assert errors == [], f"script errors on the pages: {errors}"


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page) -> None:
    page.goto("/log")  # a page: sent to sign in first, and back afterwards
    expect = playwright_api.expect
    expect(page.get_by_role("heading", name="Sign in to erp-sms")).to_be_visible()
    shot(page, "01-sign-in")
    page.get_by_label("User name").fill("maria")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Email log")).to_be_visible()


def test_staff_work_through_every_page_in_chromium(page, site, session, tmp_path):
    expect = playwright_api.expect
    sign_in(page)
    shot(page, "02-email-log")

    # Filter the log and export exactly those rows as CSV.
    page.get_by_label("Status").select_option("held")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("1 text(s), newest first")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    saved = tmp_path / "log.csv"
    download.value.save_as(saved)
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert (
        len(lines) == 2 and lines[0].startswith("message_id,") and "waiting for staff" in lines[1]
    )

    # Release the held text.
    page.get_by_label(f"Select text {site['held']}").check()
    page.get_by_role("button", name="Release").click()
    expect(page.get_by_text("1 text(s) released")).to_be_visible()
    assert {m.id: m.status for m in messages(session)}[site["held"]] == Status.QUEUED

    # The TWILIO record: edit and save; the AuthCode is never shown.
    page.get_by_role("link", name="TWILIO").click()
    page.get_by_label("PhoneNumber").fill("(312) 555-0199")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("TWILIO saved (PhoneNumber)")).to_be_visible()
    assert "fedcba9876543210" not in page.content()
    shot(page, "03-twilio-record")

    # A template: type, and the preview and the counter follow.
    page.get_by_role("link", name="Templates").click()
    shot(page, "04-templates")
    page.get_by_role("link", name="SMS S2P").click()
    page.get_by_label("Preview against order").fill("SO-104233")
    source = page.get_by_label("Template (Jinja2)")
    source.fill("Hi {{ contact.name }}: order {{ order.number }} is in production ✓")
    expect(page.locator("#counter")).to_contain_text("UCS-2 because of: ✓")
    expect(page.locator("#sample")).to_contain_text("is in production ✓")
    expect(page.locator("#recipients")).to_contain_text("Bob Ray")
    shot(page, "05-template-editor")
    source.fill("Hi {{ contact.name }}: order {{ order.number }} is in production.")
    expect(page.locator("#counter")).to_contain_text("GSM-7 · 1 segment(s)")
    source.fill("Hi {{ contact.name ")
    expect(page.locator("#source-error")).to_contain_text("line 1")
    shot(page, "06-template-error")

    # A timeline, from the customer search.
    page.get_by_role("link", name="Customers").click()
    page.get_by_label("Name, order number or phone number").fill("Ann")
    page.get_by_role("button", name="Find").click()
    page.get_by_role("link", name="Ann Lee").click()
    expect(page.get_by_role("heading", name="Timeline Ann Lee (contact")).to_be_visible()
    expect(page.locator("ol.timeline")).to_contain_text("sent_to_production → Ann Lee")
    shot(page, "07-timeline")
    # A one-off text from the contact's page: queued, and on the timeline at once.
    page.get_by_label("Text (checked and logged").fill("Hi {{ contact.name }}, door 3 is open.")
    page.get_by_role("button", name="Queue the text").click()
    expect(page.locator(".flash.ok")).to_contain_text("queued for Ann Lee")
    expect(page.locator("ol.timeline")).to_contain_text("staff_text → Ann Lee")

    # A reply marked done.
    page.get_by_role("link", name="Replies").click()
    expect(page.get_by_text("Friday please")).to_be_visible()
    shot(page, "08-replies")
    page.get_by_role("button", name="Mark done").click()
    expect(page.get_by_text("marked done")).to_be_visible()
    session.commit()  # end the read snapshot
    assert session.scalar(select(InboundMessage.done_by)) == "maria"

    for name, link in (
        ("09-dashboard", "Dashboard"),
        ("10-options", "Options"),
        ("11-reminders", "Reminders"),
        ("12-customers", "Customers"),
        ("13-account", "maria"),
    ):
        page.get_by_role("link", name=link, exact=True).click()
        expect(page.locator("h1")).to_be_visible()
        shot(page, name)
    # The staff member's own time zone, picked from the list the browser offers.
    page.get_by_label("Show times in").fill("Asia/Tokyo")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash.ok")).to_have_text("times are shown in Asia/Tokyo")

    # Keyboard: on a page without a search box, the skip link is the first thing Tab
    # reaches; Enter on a link follows it.
    page.goto("/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to the page")).to_be_focused()


# Every page the staff use, by the name of its screenshot.
EVERY_PAGE = {
    "dashboard": "/",
    "email-log": "/log",
    "customers": "/find?q=Ann",
    "order-timeline": "/timeline?order=SO-104233",
    "replies": "/replies",
    "templates": "/templates",
    "template-editor": "/templates/SMS S2P",
    "reminders": "/reminders",
    "twilio-record": "/rules",
    "options": "/options",
    "account": "/account",
}


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_fits_a_desktop_and_a_phone_and_does_the_job(page, site, width):
    """Issue 25: nothing scrolls sideways at 390 px (the log becomes cards), each page is
    saved as a screenshot at both widths, and each finding on the job is checked where
    staff meet it."""
    expect = playwright_api.expect
    page.set_viewport_size({"width": width, "height": 900})

    def fits(name: str) -> None:
        shot(page, f"{width}-{name}")
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"{page.url} is {wide} px wide at {width} px"

    page.goto("/sign-in")
    fits("sign-in")
    sign_in(page)
    for name, url in EVERY_PAGE.items():
        page.goto(url)
        expect(page.locator("h1")).to_be_visible()
        fits(name)
    if width == 390:
        page.goto("/log")
        cell = page.locator("table.log td.body").first
        # A card: the text runs the card's width, not a few letters a line.
        assert cell.bounding_box()["width"] > 300

    # An undelivered text, listed first with a Retry button, can be retried.
    page.goto("/log")
    page.get_by_label(f"Select text {site['undelivered']}").check()
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash.ok")).to_contain_text(f"#{site['undelivered']} sent again as #")
    fits("job-retry-undelivered")

    # An unknown variable is named as written, not in Jinja's words.
    page.goto("/templates/SMS S2P")
    page.get_by_label("Template (Jinja2)").fill("Order {{ order.nmber }} is in production.")
    expect(page.locator("#source-error")).to_contain_text("unknown variable order.nmber")
    assert "dict object" not in page.locator("#source-error").inner_text()
    fits("job-unknown-variable")

    # Customers as staff type them: no accents; the UK number as the customer says it
    # is found in the pages' region (US here), so by its international form.
    page.goto("/find")
    page.get_by_label("Name, order number or phone number").fill("muller")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("link", name="Anna Müller")).to_be_visible()
    fits("job-search-accents")

    # The dashboard: gateways never confirm delivery, and it says so.
    page.goto("/")
    expect(page.get_by_text("gateways never confirm delivery")).to_be_visible()
    fits("job-dashboard")

    # An invoice's timeline by its number; the UK customer's reminder in London time.
    page.goto(f"/timeline?subject=invoice:{INVOICE_KEY}")
    expect(page.get_by_role("heading", name="Timeline invoice INV-7 (order SO-2)")).to_be_visible()
    fits("job-invoice-timeline")
    page.goto("/reminders")
    expect(page.locator("section", has_text="browser_dunning")).to_contain_text("Europe/London")
    assert "Europe/Guernsey" not in page.content()
    fits("job-reminders-uk")

    # A contact that does not exist: said so, and no forms to act on it.
    page.goto("/timeline?contact=99999")
    expect(page.locator(".flash.error")).to_contain_text("no contact with id '99999'")
    assert page.get_by_role("button", name="Opt out").count() == 0
    fits("job-no-such-contact")


def test_a_huge_paste_in_the_template_editor_is_refused_on_the_page_and_kept(page, site):
    expect = playwright_api.expect
    sign_in(page)
    page.goto("/templates/SMS S2P")
    source = page.get_by_label("Template (Jinja2)")
    huge = "x" * 200_000
    source.fill(huge)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#source-error")).to_contain_text("the most is 10,000")
    assert len(source.input_value()) == len(huge)  # still there, nothing lost
    shot(page, "template-too-long")


@pytest.fixture
def opt_out_site(settings, db, session):
    """A fresh installation (no SMSOPTOUTCONTACT) served with a public URL and a key: its
    gateway text carries the link to the opt-out page."""
    from sqlalchemy import delete
    from waitress import create_server

    from erp_sms.models import Option

    from ..conftest import with_settings

    session.execute(delete(Option).where(Option.name == "SMSOPTOUTCONTACT"))
    session.commit()
    server = create_server(lambda e, s: app(e, s), host="127.0.0.1", port=0)
    url = f"http://127.0.0.1:{server.effective_port}"
    served = with_settings(public_url=url, secret_key="browser-test-key-0123456789abcdef")
    app = create_app(db=db, settings=served)
    made = scene(session, {"ann": ("Ann Lee", "3125550101@vtext.com")}, order="SO-390")
    signals.sent_to_production.send(made.order, session=session)
    session.commit()
    (text,) = messages(session)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield {"url": url, "link": text.body.rsplit("To opt out: ", 1)[1]}
    stop_server(server)
    thread.join(timeout=10)


def test_the_opt_out_page_works_on_a_phone(opt_out_site):
    """Issue 30: the link from the text, opened at 390 px: nothing scrolls sideways, the
    choice and the button are within reach, and the answer says what happened."""
    expect = playwright_api.expect
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.set_default_timeout(15_000)
        assert opt_out_site["link"].startswith(opt_out_site["url"] + "/o/")
        page.goto(opt_out_site["link"])
        expect(page.get_by_role("heading", name="Texts from")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        button = page.get_by_role("button", name="Stop these texts")
        box = button.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] >= 40  # a thumb's
        page.get_by_label("Payment reminders").check()
        button.click()
        expect(page.get_by_role("status")).to_contain_text(
            "Done: you will get no more payment reminders"
        )
        expect(page.get_by_text("Payment reminders (already stopped)")).to_be_visible()
        page.screenshot(path=str(SHOTS / "390-opt-out-page.png"), full_page=True)
        browser.close()
