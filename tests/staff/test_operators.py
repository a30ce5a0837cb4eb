"""Issue 31 (part): what an operator meets first — a version, a health check that asks
the database, a port that cannot be used, an id too large, a config file with a mistake —
each one line that says what to do, never a traceback."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

import erp_sms
from erp_sms.cli import cli
from erp_sms.config import ConfigurationError, Settings
from erp_sms.db import Database
from erp_sms.webhooks import create_app

from ..conftest import with_settings


def _one_line(result) -> str:
    text = result.output.strip()
    assert "Traceback" not in text and text.count("\n") == 0, text
    return text


def test_version():
    out = CliRunner().invoke(cli, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"erp-sms {erp_sms.__version__}"


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_serve_refuses_a_port_out_of_range(settings, port):
    out = CliRunner().invoke(cli, ["serve", "--port", port])
    assert out.exit_code == 2 and "not in the range 1<=x<=65535" in out.output


def test_serve_on_a_port_in_use_says_so(settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert out.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}: it is in use by another program" in out.stderr


def test_an_id_too_large_for_any_database_is_one_line(settings):
    out = CliRunner().invoke(cli, ["messages", "retry", "99999999999999999999"])
    assert out.exit_code == 2 and "is not in the range 1<=x<=2147483647" in out.output
    assert "out of range" not in out.output.lower().replace("not in the range", "")


def test_healthz_asks_the_database(settings, db, tmp_path):
    up = create_app(db=db, settings=settings).test_client().get("/healthz")
    assert (up.status_code, up.get_data(as_text=True)) == (200, "ok")
    gone = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    down = create_app(db=gone, settings=settings).test_client().get("/healthz")
    assert down.status_code == 503 and "database unreachable" in down.get_data(as_text=True)


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[dispatch]\nlease_seconds = "abc"\n', "lease_seconds = 'abc': use a number"),
        ("[dispatch]\nbatch_size = -5\n", "batch_size = -5: use more than 0"),
        ("[dispatch]\nbatch_size = 0\n", "batch_size = 0: use more than 0"),
        ("[dispatch]\nlease_seconds = 0\n", "lease_seconds = 0: use more than 0"),
        ("[dispatch]\nbackoff_base_seconds = -1\n", "backoff_base_seconds = -1: use 0 or more"),
        ("[dispatch]\nconcurrency = 2.5\n", "concurrency = 2.5: use a whole number"),
        ("[dispatch]\npace_by_sender = 1\n", "pace_by_sender = 1: use true or false"),
        ("[dispach]\nbatch_size = 5\n", "unknown section(s) [dispach]; known: [dispatch]"),
        (
            'databse_url = "sqlite:///x.db"\n',
            "unknown setting(s) databse_url (did you mean database_url?)",
        ),
        ('inline_dispatch = "maybe"\n', "ERP_SMS_INLINE_DISPATCH='maybe': use on or off"),
        (
            'public_url = "sms.example.com"\n',
            "ERP_SMS_PUBLIC_URL='sms.example.com': use the address",
        ),
    ],
)
def test_a_config_file_mistake_is_one_line_naming_it(tmp_path, toml, says):
    path = tmp_path / "erp_sms.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError, match="ERP_SMS_") as caught:
        Settings.from_env({"ERP_SMS_CONFIG": str(path)})
    assert says in str(caught.value)
    # and through a command: one line, exit 1
    out = CliRunner(env={"ERP_SMS_CONFIG": str(path)}).invoke(cli, ["options", "show"])
    assert out.exit_code != 0 and says in out.output and "Traceback" not in out.output


def test_good_dispatch_settings_still_read(tmp_path):
    path = tmp_path / "erp_sms.toml"
    path.write_text(
        "[dispatch]\nbatch_size = 20\nlease_seconds = 60\nrate_per_second = 0\n"
        "backoff_base_seconds = 0.0\n"
    )
    d = Settings.from_env({"ERP_SMS_CONFIG": str(path)}).dispatch
    assert (d.batch_size, d.lease_seconds, d.rate_per_second) == (20, 60.0, 0.0)
    assert d.backoff_base_seconds == 0.0
    assert isinstance(d.lease_seconds, float)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgres://erp@127.0.0.1:1/erp", "postgresql+psycopg"),
        ("postgresql://erp@127.0.0.1:1/erp", "postgresql+psycopg"),
        ("mysql://erp@127.0.0.1:1/erp", "mysql+pymysql"),
        ("mariadb://erp@127.0.0.1:1/erp", "mariadb+pymysql"),
        ("postgresql+psycopg://erp@127.0.0.1:1/erp", "postgresql+psycopg"),
    ],
)
def test_database_urls_as_people_write_them_get_the_documented_driver(url, driver):
    db = Database(url)  # no connection is made until one is needed
    try:
        assert db.engine.url.drivername == driver
    finally:
        db.dispose()


@pytest.mark.parametrize("region", ["DE", "GB", "MX", "IN"])
def test_warm_up_works_in_any_region(db, region, caplog):
    import logging

    from erp_sms import warm_up

    with_settings(default_region=region)
    with caplog.at_level(logging.WARNING, logger="erp_sms"):
        warm_up(db.engine)
    assert "warm-up incomplete" not in caplog.text, caplog.text


def test_text_that_is_not_utf8_is_one_line(settings, session, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_bytes(b'database_url = "\xff\xfe"\n')
    with pytest.raises(ConfigurationError, match="is not UTF-8 text: save it as UTF-8"):
        Settings.from_env({"ERP_SMS_CONFIG": str(config)})
    csv_file = tmp_path / "bad.csv"
    csv_file.write_bytes(b"contact,date,source\n\xff\xfe,2026-10-01,form\n")
    out = CliRunner().invoke(cli, ["contacts", "import", str(csv_file)])
    assert out.exit_code == 2
    assert "a file given is not UTF-8 text (byte 0xff at position" in _one_line(out)
    typed = CliRunner().invoke(cli, ["report", "--contact", "\udcff"])
    assert typed.exit_code == 2 and "not UTF-8 text: type it again" in _one_line(typed)


def test_a_template_file_that_never_ends_is_refused_not_read(settings, session):
    out = CliRunner().invoke(cli, ["templates", "set", "SMS S2P", "--file", "/dev/urandom"])
    assert out.exit_code == 2 and "is larger than a template can be" in _one_line(out)


@pytest.mark.slow
def test_the_loopback_servers_run_as_a_process_on_fixed_ports():
    """Issue 31: `python -m erp_sms.testing` for a host's own end-to-end setup (it needed a
    29-line wrapper): fixed ports, the settings printed, the real twilio client served."""
    import subprocess
    import sys

    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "erp_sms.testing", "--twilio-port", str(ports[0]),
         "--smtp-port", str(ports[1])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        said = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(4))
        token = proc.stdout.readline().split("=", 1)[1].split()[0]
        assert said["ERP_SMS_TWILIO_API_URL"] == f"http://127.0.0.1:{ports[0]}"
        assert said["ERP_SMS_SMTP_PORT"] == str(ports[1])
        base = said["ERP_SMS_TWILIO_API_URL"]
        http = TwilioHttpClient()
        client = Client(said["TWILIO_ACCOUNT_SID"], token, http_client=http)
        client.api.base_url = base
        sent = client.api.v2010.accounts(said["TWILIO_ACCOUNT_SID"]).messages.create(
            to="+13125550101", from_="+13125550100", body="hello"
        )
        assert sent.sid.startswith("SM")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert "stopped: 1 text(s) through the API" in err


def test_metrics_are_scraped_and_parsed_with_prometheus_client(settings, db, session):
    """Issue 31: GET /metrics — no sign-in, the Prometheus text format as the maintained
    parser reads it, counts and ages only (no number or name in it)."""
    from prometheus_client.parser import text_string_to_metric_families

    from erp_sms import signals
    from erp_sms.models import Message, Status

    from ..helpers import messages, scene

    scene(session, {"ann": ("Ann Lee", "3125550101@vtext.com")}, order="SO-M1", fire=True)
    held = scene(session, {"bo": ("Bo Ray", "3125550102@vtext.com")}, org="B", order="SO-M2")
    signals.sent_to_production.send(held.order, session=session)
    session.commit()
    last = messages(session)[-1]
    last.status = Status.HELD
    session.commit()
    r = create_app(db=db, settings=settings).test_client().get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    assert "3125550101" not in text and "Ann" not in text
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    queued = ("erp_sms_texts_last_24h", (("channel", "email_gateway"), ("status", "queued")))
    assert found[queued] == 1
    assert found[("erp_sms_held_texts", ())] == 1
    assert found[("erp_sms_oldest_due_text_age_seconds", ())] >= 0
    assert session.query(Message).count() == 2


def test_an_environment_variable_that_is_no_setting_is_named_by_the_doctor(settings):
    """A misspelt ERP_SMS_ variable was silently ignored."""
    from erp_sms.staff import doctor

    env = {
        "ERP_SMS_DATABSE_URL": "sqlite:///x.db",
        "ERP_SMS_DISPATCH_CONCURENCY": "4",
        "ERP_SMS_TEST_POSTGRESQL": "postgresql://root@127.0.0.1/postgres",  # the tests' own
        "ERP_SMS_PUBLIC_URL": "https://sms.example.com",
    }
    found = [str(f) for f in doctor.examine(settings, smtp=False, environ=env).findings]
    assert found == [
        "ERP_SMS_DATABSE_URL is not an erp-sms setting, so it is ignored: did you mean "
        "ERP_SMS_DATABASE_URL?",
        "ERP_SMS_DISPATCH_CONCURENCY is not an erp-sms setting, so it is ignored: did you "
        "mean ERP_SMS_DISPATCH_CONCURRENCY?",
    ]
    assert Settings.from_env({"ERP_SMS_PUBLIC_URL": "https://sms.example.com/"}).public_url == (
        "https://sms.example.com"
    )
