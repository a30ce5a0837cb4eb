"""Bad input gets one clear line that says what to do: never a traceback, nothing lost
(CONTRACT.md "Staff CLI")."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from erp_sms import signals
from erp_sms.cli import cli
from erp_sms.cli import rules as cli_module
from erp_sms.models import Rule, Status
from erp_sms.timeline import for_order

from ..conftest import with_settings
from ..factories import ContactFactory, OrganizationFactory, SalesOrderFactory
from ..helpers import AUTH, SID, activate_twilio, messages

COMMANDS = [
    ["options", "show"],
    ["db", "upgrade"],
    ["report"],
    ["dispatch"],
    ["rules", "show", "TWILIO"],
    ["timeline", "--order", "SO-1"],
    ["templates", "list"],
    ["messages", "release", "--all"],
]


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def one_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("erp-sms: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def order(session):
    org = OrganizationFactory(name="Acme")
    ann = ContactFactory(name="Ann", email2="3125550101@vtext.com", organizations=[org])
    o = SalesOrderFactory(number="SO-1", organization=org, contact=ann)
    session.add_all([org, ann, o])
    signals.sent_to_production.send(o, session=session)
    session.commit()
    return o


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_corrupted_sqlite_file_is_one_line_for_every_command(settings, tmp_path, args):
    bad = tmp_path / "broken.db"
    bad.write_bytes(b"this is not a database, it was overwritten by mistake\n" * 200)
    with_settings(database_url=f"sqlite:///{bad}")
    line = one_line(invoke(*args), 1)
    assert "is not a readable SQLite database" in line and "restore it from a backup" in line


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not-a-url", "is not a database URL: use e.g. sqlite:///erp_sms.db"),
        ("postgresql+psycopg2://erp@127.0.0.1/erp", "needs the psycopg2 driver"),
        ("mysql+mysqldb://erp@127.0.0.1/erp", "needs the MySQLdb driver"),
        ("nosuchdb://x/y", "unknown database kind"),
    ],
)
def test_a_bad_database_url_is_one_line(settings, url, fragment):
    with_settings(database_url=url)
    for args in (["options", "show"], ["db", "upgrade"], ["dispatch"]):
        assert fragment in one_line(invoke(*args), 1)


def test_report_to_a_missing_folder_or_a_full_disk_is_one_line(settings, order, tmp_path):
    line = one_line(invoke("report", "--output", str(tmp_path / "no" / "such" / "x.csv")), 2)
    assert "cannot write --output" in line and "No such file or directory" in line
    if Path("/dev/full").exists():
        line = one_line(invoke("report", "--format", "csv", "--output", "/dev/full"), 1)
        assert "No space left on device" in line


def test_report_prints_nothing_before_a_failure(settings, session):
    from sqlalchemy import text

    session.execute(text("DROP TABLE sms_message_event"))
    session.execute(text("DROP TABLE sms_message"))
    session.commit()
    result = invoke("report", "--format", "csv")
    assert "run `erp-sms db upgrade`" in one_line(result, 1)
    assert result.stdout == ""


def test_a_network_error_in_rules_test_flags_nothing_and_holds_nothing(settings, session, order):
    activate_twilio(session)
    session.commit()
    with_settings(twilio_api_url="http://127.0.0.1:9")
    line = one_line(invoke("rules", "test", "TWILIO"), 1)
    assert "the credentials were not checked" in line
    session.expire_all()
    rule = session.scalar(select(Rule))
    assert rule.rejected_at is None
    assert [m.status for m in messages(session)] == [Status.QUEUED]


def test_the_activate_hint_names_the_real_flags(settings):
    line = one_line(invoke("rules", "set", "TWILIO", "--sid", SID, "--active"), 2)
    assert "--auth-code …" in line and "--phone-number …" in line and "--authcode" not in line


def test_auth_code_dash_on_a_terminal_prompts_without_echo(settings, monkeypatch):
    monkeypatch.setattr(cli_module, "_stdin_is_terminal", lambda: True)
    result = invoke("rules", "set", "TWILIO", "--sid", SID, "--auth-code", "-", input=AUTH + "\n")
    assert result.exit_code == 0, result.output
    assert "AuthCode:" in result.stderr and AUTH not in result.output
    assert "ERP_SMS_SECRET_KEY is not set, so the AuthCode is stored unencrypted" in result.stderr
    with_settings(secret_key="k" * 32)
    again = invoke("rules", "set", "TWILIO", "--auth-code", AUTH)
    assert again.exit_code == 0 and "unencrypted" not in again.stderr


def test_timelines_say_held_once(settings, session, order, delivery, twilio_server):
    activate_twilio(session)
    session.commit()
    twilio_server.accounts[SID] = "9" * 32  # rejected: texts are held
    assert invoke("dispatch").exit_code == 0
    lines = [e.line() for e in for_order(session, "SO-1")]
    assert any("held" in ln for ln in lines)
    assert not any("held: held" in ln for ln in lines), lines


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("ERP_SMS_DISPATCH_PACE_BY_SENDER", "sometimes", "use on or off"),
        ("ERP_SMS_DISPATCH_SMTP_CONNECTIONS", "four", "use a number"),
        ("ERP_SMS_DISPATCH_CONCURRENCY", "many", "use a number"),
    ],
)
def test_a_bad_dispatch_setting_names_the_variable_and_what_to_use(var, value, fragment):
    from erp_sms.config import Settings
    from erp_sms.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({var: value})
    assert var in caught.value.message and fragment in caught.value.message
    on = Settings.from_env({"ERP_SMS_DISPATCH_PACE_BY_SENDER": "on"}).dispatch
    assert on.pace_by_sender and Settings.from_env({}).dispatch.smtp_connections == 1
