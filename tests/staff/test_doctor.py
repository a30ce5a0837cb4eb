"""Issue 31: what tells an operator that texts are not going out — `erp-sms doctor`, the
worker's heartbeat (doctor, /metrics, dashboard), logs a machine can read, and `db
upgrade` that says what it did."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, update

from erp_sms.cli import cli
from erp_sms.config import set_settings
from erp_sms.dispatch import Dispatcher
from erp_sms.models import Message, Option, Worker
from erp_sms.staff import doctor

from ..conftest import with_settings
from ..helpers import Clock, activate_twilio, scene
from ..staff_pages import anon, app, staff, world  # noqa: F401 (fixtures)


def _problems(settings, **kw) -> list[str]:
    return [str(f) for f in doctor.examine(settings, smtp=False, **kw).findings]


def test_a_healthy_setup_has_no_problem_and_exits_0(delivery, session):
    out = CliRunner().invoke(cli, ["doctor"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("no problems found: database up to date (e0002, p0017)")
    assert f"SMTP relay {delivery.smtp_host}:{delivery.smtp_port} answers" in out.output


def test_gateway_texts_without_a_way_to_opt_out(settings, session):
    """Found: gateway texts were silently skipped until SMSOPTOUTCONTACT was set."""
    assert _problems(settings) == []  # the tests' database has it set, as staff would
    session.execute(delete(Option).where(Option.name == "SMSOPTOUTCONTACT"))
    session.commit()
    (line,) = _problems(settings)
    assert line.startswith("carrier-gateway texts have no way to opt out, so they are skipped")
    assert "erp-sms options set SMSOPTOUTCONTACT" in line
    # The hosted opt-out page is a way too.
    assert _problems(with_settings(public_url="https://erp.example.com", secret_key="k" * 32)) == []


def test_twilio_active_without_a_public_url_and_an_unencrypted_auth_code(settings, session):
    activate_twilio(session)
    session.commit()
    lines = _problems(settings)
    assert any(
        ln.startswith("TWILIO is active but ERP_SMS_PUBLIC_URL is not set") for ln in lines
    ), lines
    assert any(ln.startswith("the TWILIO AuthCode is stored unencrypted") for ln in lines), lines
    out = CliRunner().invoke(cli, ["doctor", "--offline"])
    assert out.exit_code == 1 and out.output.count("problem: ") == 2, out.output
    assert "fedcba98" not in out.output  # the AuthCode is never printed


def test_no_worker_while_texts_are_due_then_a_worker_is_seen(settings, session, db):
    scene(session, {"ann": ("Ann", "3125550101@vtext.com")}, fire=True)
    clock = Clock()
    clock.now += dt.timedelta(minutes=2)
    (line,) = _problems(settings, now=clock)
    assert line == (
        "no worker is running (last seen never) and 1 text(s) are due: start `erp-sms worker` "
        "under your service manager (systemd, supervisord)"
    )
    # A worker says it is alive; the text stays due (its relay is down), 20 min later.
    Dispatcher(db, clock=clock).beat()
    clock.now += dt.timedelta(seconds=4)
    with db.session() as s:
        s.execute(update(Message).values(next_attempt_at=clock.now - dt.timedelta(minutes=20)))
    (line,) = _problems(settings, now=clock)
    assert line.startswith("the oldest due text has waited 20 min (1 due): the worker is behind")


def test_the_worker_writes_its_heartbeat_and_says_when_it_stops(settings, db):
    clock = Clock("2026-12-05T09:00:00")
    worker = Dispatcher(db, clock=clock, worker_id="w1")
    worker.run_once()
    with db.read_session() as s:
        row = s.get(Worker, "w1")
        assert (row.seen_at, row.stopped_at) == (clock.now, None) and row.pid
    worker.stop.set()
    clock.now += dt.timedelta(seconds=30)
    worker.run_forever()  # stopped at once: leaves, and says so
    with db.read_session() as s:
        assert s.get(Worker, "w1").stopped_at == clock.now


def test_the_heartbeat_reaches_metrics_and_the_dashboard(app, db, staff):  # noqa: F811
    from prometheus_client.parser import text_string_to_metric_families

    def scraped() -> dict[str, float]:
        text = app.test_client().get("/metrics").get_data(as_text=True)
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    assert "erp_sms_worker_heartbeat_age_seconds" not in scraped()  # never seen
    assert scraped()["erp_sms_workers_alive"] == 0
    page = staff.get("/").get_data(as_text=True)
    assert "Last worker seen <b>never</b> — start one" in page
    assert re.search(r"the oldest due text has waited \d+ s</span>", page), page
    Dispatcher(db, worker_id="w1").beat()
    assert 0 <= scraped()["erp_sms_worker_heartbeat_age_seconds"] < 60
    assert scraped()["erp_sms_workers_alive"] == 1
    page = staff.get("/").get_data(as_text=True)
    assert "Last worker seen <b>" in page and " s ago</b>" in page and "start one" not in page


def test_json_logs_are_one_object_a_line_with_numbers_masked(settings, session, capfd):
    from erp_sms import logs

    logs.setup(verbose=True, fmt="json")
    try:
        logging.getLogger("erp_sms.dispatch").info(
            "message %s sent to %s", 41, "+13125550101", extra={"message_id": 41}
        )
        logging.getLogger("erp_sms.worker").info("worker: stopped")
    finally:
        logs.setup(verbose=False)
    lines = [json.loads(ln) for ln in capfd.readouterr().err.splitlines()]
    assert [(ln["level"], ln["logger"], ln["message"]) for ln in lines] == [
        ("INFO", "erp_sms.dispatch", "message 41 sent to ***0101"),
        ("INFO", "erp_sms.worker", "worker: stopped"),
    ]
    assert lines[0]["message_id"] == 41 and "message_id" not in lines[1]
    assert dt.datetime.fromisoformat(lines[0]["time"]).tzinfo is not None


def test_the_worker_logs_in_one_format(settings, db, tmp_path):
    """Found: with -v, one line per text in two mixed formats (click's bare lines and the
    log's). Now every line of `erp-sms worker` is the log's, JSON with the setting."""
    import signal
    import subprocess

    from ..helpers import erp_sms_command, worker_env

    env = worker_env(tmp_path, settings.database_url, "http://127.0.0.1:9", 9, {})
    env["ERP_SMS_LOG_FORMAT"] = "json"
    proc = subprocess.Popen(erp_sms_command("worker"), env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = json.loads(proc.stderr.readline())
    assert (
        first["logger"] == "erp_sms.worker" and "delivering (SIGTERM to stop)" in first["message"]
    )
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=30)[1].splitlines()
    assert [json.loads(ln)["message"] for ln in rest][-1] == "worker: stopped"


def _run_with_env(env: dict[str, str], *args: str):
    """A command as an operator runs it: its settings read from this environment."""
    set_settings(None)
    try:
        return CliRunner(env=env).invoke(cli, list(args))
    finally:
        set_settings(None)


def test_a_log_format_that_does_not_exist_is_one_line(db_url):
    out = _run_with_env({"ERP_SMS_DATABASE_URL": db_url, "ERP_SMS_LOG_FORMAT": "xml"}, "doctor")
    assert out.exit_code == 1 and "ERP_SMS_LOG_FORMAT='xml': use text or json" in out.output


def _on(url: str):
    """Run a command on the database at ``url``, as an operator would."""

    def run(_cli, args):
        return _run_with_env({"ERP_SMS_DATABASE_URL": url}, *args)

    return run


def test_db_upgrade_says_what_it_did(tmp_path):
    """Found: a first upgrade printed the same line as a no-op."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    run = _on(url)
    first = run(cli, ["db", "upgrade"])
    assert first.output.splitlines()[0] == f"database {url}: created the tables (e0002, p0017)"
    again = run(cli, ["db", "upgrade"])
    assert again.output.strip() == f"database {url} is up to date (e0002, p0017); nothing to do"
    down = run(cli, ["db", "downgrade", "p0016", "--yes"])
    assert down.output.strip() == f"database {url}: now at e0002, p0016"
    up = run(cli, ["db", "upgrade"])
    assert up.output.strip() == f"database {url}: upgraded from e0002, p0016 to e0002, p0017"
    bad = run(cli, ["db", "downgrade", "p9999", "--yes"])
    assert bad.exit_code == 2 and "unknown revision 'p9999': use one of p0001 … p0017" in bad.output


def test_doctor_on_a_database_behind_on_migrations(tmp_path):
    run = _on(f"sqlite:///{tmp_path / 'old.db'}")
    none = run(cli, ["doctor", "--offline"])
    assert none.exit_code == 1
    assert (
        none.output.strip()
        == "problem: the database has no erp-sms tables: run `erp-sms db upgrade`"
    )
    run(cli, ["db", "upgrade"])
    run(cli, ["db", "downgrade", "p0016", "--yes"])
    behind = run(cli, ["doctor", "--offline"])
    assert behind.exit_code == 1 and "is at e0002, p0016 but this erp-sms needs" in behind.output


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_db_upgrade_on_a_server_database_that_does_not_exist(server_urls, kind):
    """Found: `db upgrade` on a database that does not exist said to run `db upgrade`."""
    url = server_urls[kind]
    if url is None:
        pytest.skip(f"{kind} server not reachable on loopback")
    missing = url.rsplit("/", 1)[0] + "/erp_sms_no_such_database"
    out = _run_with_env({"ERP_SMS_DATABASE_URL": missing}, "db", "upgrade")
    assert out.exit_code == 1
    line = out.output.strip()
    assert line.startswith("erp-sms: the database erp_sms_no_such_database does not exist"), line
    assert "createdb erp_sms_no_such_database" in line and "\n" not in line


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ('database "erp_nope" does not exist', "the database erp_nope does not exist"),
        ("(1049, \"Unknown database 'Erp_Nope'\")", "the database Erp_Nope does not exist"),
    ],
)
def test_a_database_that_does_not_exist_says_to_create_it(error, says):
    """Found: `db upgrade` on a database that does not exist said to run `db upgrade`."""
    from sqlalchemy.exc import OperationalError

    from erp_sms.db import describe_error

    line = describe_error(OperationalError("SELECT 1", {}, Exception(error)), "postgresql://h/x")
    assert line.startswith(says) and "createdb" in line and "run `erp-sms db upgrade`" in line


def _old_texts(db, n: int) -> None:
    """``n`` texts sent 400 days ago (as a long-running log holds them)."""
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    with db.session() as s:
        s.add_all(
            Message(
                idempotency_key=f"old-{i}", event="shipment_delivered", template="SMS DEL",
                order_ref="1", order_number="SO-1", status="delivered", body="Your order…",
                recipient="+13125550101", created_at=old, updated_at=old,
            )
            for i in range(n)
        )  # fmt: skip


def test_long_work_shows_progress_on_a_terminal_and_nothing_when_piped(settings, db, tmp_path):
    """Issue 31: a purge of many texts shows a bar on a terminal (click.progressbar); piped
    or logged, only its one-line result."""
    import os
    import pty
    import subprocess

    from ..helpers import erp_sms_command

    _old_texts(db, 2500)
    env = {**os.environ, "ERP_SMS_DATABASE_URL": settings.database_url}
    piped = subprocess.run(
        erp_sms_command("purge", "--older-than", "365", "--dry-run"),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "would remove the words, numbers and raw reports of 2500 text(s)" in piped.stdout
    assert piped.stderr == ""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        erp_sms_command("purge", "--older-than", "365"),
        env=env, stdout=subprocess.PIPE, stderr=slave, text=True,
    )  # fmt: skip
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.returncode == 0 and "of 2500 text(s)" in out
    assert b"purging" in seen and b"100%" in seen, seen


def test_a_reader_that_goes_away_ends_the_command_quietly(settings, db):
    """`erp-sms report | head` said "cannot write standard output: Broken pipe; free
    some space"; it now stops quietly (click's way: status 1, nothing on stderr)."""
    import os
    import subprocess

    from ..helpers import erp_sms_command

    _old_texts(db, 2500)  # far more than a pipe holds
    env = {**os.environ, "ERP_SMS_DATABASE_URL": settings.database_url}
    proc = subprocess.Popen(
        erp_sms_command("report"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"id")
    proc.stdout.close()  # as `head -1` does
    _out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (1, b"")
