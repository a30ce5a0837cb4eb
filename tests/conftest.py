"""Fixtures: real databases (SQLite always; PostgreSQL and MariaDB on loopback when
present), settings, and a small ERP world built with factories."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from erp_sms import erased, migrate, users
from erp_sms.config import DispatchSettings, Settings, set_settings
from erp_sms.db import Database, make_engine
from erp_sms.erp import ErpBase
from erp_sms.models import Base

PG_ADMIN = os.environ.get(
    "ERP_SMS_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN = os.environ.get("ERP_SMS_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


# -- SQLite -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("template") / "erp_sms.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    _set_up_like_staff(engine)
    engine.dispose()
    return str(path)


# A test database starts as staff leave a real one after setting up: gateway texts have
# their non-reply opt-out line (without it they are skipped; tests that check that clear it).
# Each event's text goes out as it fires: folding an order's texts (SMSDIGESTMINUTES,
# default 5) is off, so a test of anything else need not wait the minutes out; the fold's
# own tests (tests/notifier/test_fold.py) and the demo's turn it on.
OPT_OUT_CONTACT = "+13125550199"


def _set_up_like_staff(engine) -> None:
    from erp_sms.models import Option

    with engine.begin() as conn:
        conn.execute(
            Option.__table__.insert(),
            [
                {"name": "SMSOPTOUTCONTACT", "value": OPT_OUT_CONTACT, "updated_by": "tests"},
                {"name": "SMSDIGESTMINUTES", "value": "0", "updated_by": "tests"},
            ],
        )


# -- PostgreSQL and MariaDB: one database per test session, emptied between tests ---------


def _server_database(kind: str, tmp_name: str) -> str | None:
    admin = PG_ADMIN if kind == "postgresql" else MARIADB_ADMIN
    try:
        eng = create_engine(admin, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {tmp_name}"))
            conn.execute(text(f"CREATE DATABASE {tmp_name}"))
        eng.dispose()
    except Exception as exc:
        require = os.environ.get(f"ERP_SMS_TEST_REQUIRE_{kind.upper()}")
        if require:
            pytest.fail(f"{kind} is required here (ERP_SMS_TEST_REQUIRE_{kind.upper()}) but: {exc}")
        return None
    base = admin.rsplit("/", 1)[0]
    return f"{base}/{tmp_name}"


@pytest.fixture(scope="session")
def server_urls() -> Iterator[dict[str, str | None]]:
    name = f"erp_sms_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    urls = {kind: _server_database(kind, name) for kind in ("postgresql", "mariadb")}
    for url in urls.values():
        if url:
            eng = make_engine(url)
            migrate.upgrade(eng)
            eng.dispose()
    yield urls
    for kind, url in urls.items():
        if url:
            admin = PG_ADMIN if kind == "postgresql" else MARIADB_ADMIN
            eng = create_engine(admin, isolation_level="AUTOCOMMIT")
            with eng.connect() as conn:
                if kind == "postgresql":
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :n AND pid <> pg_backend_pid()"
                        ),
                        {"n": name},
                    )
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            eng.dispose()


def _empty(url: str) -> None:
    eng = make_engine(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)] + [
        t.name for t in reversed(ErpBase.metadata.sorted_tables)
    ]
    with eng.begin() as conn:
        if eng.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            for t in tables:
                conn.execute(text(f"TRUNCATE TABLE {t}"))
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
        erased.ensure_key(conn)  # as migration p0017 leaves a new database
    _set_up_like_staff(eng)
    eng.dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Tests that take `any_db_url` run on every database; the rest on SQLite.
    if "any_db_url" in metafunc.fixturenames:
        metafunc.parametrize(
            "any_db_url",
            [
                "sqlite",
                pytest.param("postgresql", marks=pytest.mark.postgresql),
                pytest.param("mariadb", marks=pytest.mark.mariadb),
            ],
            indirect=True,
        )


@pytest.fixture
def any_db_url(request: pytest.FixtureRequest, tmp_path, sqlite_template: str, server_urls) -> str:
    kind = request.param
    if kind == "sqlite":
        path = tmp_path / "erp_sms.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = server_urls[kind]
    if url is None:
        pytest.skip(
            f"{kind} server not reachable on loopback (install it or see docs/development.md 'Tests and benchmarks')"
        )
    _empty(url)
    return url


@pytest.fixture
def db_url(tmp_path, sqlite_template: str) -> str:
    path = tmp_path / "erp_sms.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


# -- settings, database, session ------------------------------------------------------------


@pytest.fixture
def settings(db_url: str) -> Iterator[Settings]:
    s = Settings(
        database_url=db_url,
        smtp_from="orders@example.com",
        dispatch=DispatchSettings(backoff_base_seconds=0.0, backoff_max_seconds=0.0),
    )
    set_settings(s)
    yield s
    set_settings(None)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def any_db(any_db_url: str) -> Iterator[Database]:
    s = Settings(
        database_url=any_db_url,
        smtp_from="orders@example.com",
        dispatch=DispatchSettings(backoff_base_seconds=0.0, backoff_max_seconds=0.0),
    )
    set_settings(s)
    database = Database(any_db_url)
    yield database
    database.dispose()
    set_settings(None)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    """The host's session: an engine as a host would make it (deferred transactions), not
    the dispatcher's."""
    engine = make_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


@pytest.fixture
def host(any_db: Database) -> Iterator[Session]:
    """The host's own session on `any_db` (deferred transactions, as a host makes it)."""
    engine = make_engine(any_db.engine.url.render_as_string(hide_password=False))
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


def with_settings(**changes: object) -> Settings:
    from erp_sms.config import get_settings

    s = replace(get_settings(), **changes)  # type: ignore[arg-type]
    set_settings(s)
    return s


# -- loopback servers ----------------------------------------------------------------------


@pytest.fixture
def twilio_server() -> Iterator[object]:
    from erp_sms.testing import TwilioServer

    from .helpers import AUTH, SID

    with TwilioServer() as server:
        server.add_account(SID, AUTH)
        yield server


@pytest.fixture
def smtp_sink() -> Iterator[object]:
    from erp_sms.testing import SmtpSink

    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def delivery(settings: Settings, twilio_server, smtp_sink) -> Settings:
    """Settings pointing at the loopback SMTP sink and Twilio-compatible API."""
    return _to_loopback(settings, twilio_server, smtp_sink)


@pytest.fixture
def any_delivery(any_db: Database, twilio_server, smtp_sink) -> Settings:
    """`delivery` on every database (with `any_db`)."""
    from erp_sms.config import get_settings

    return _to_loopback(get_settings(), twilio_server, smtp_sink)


def _to_loopback(settings: Settings, twilio_server, smtp_sink) -> Settings:
    return with_settings(
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
        twilio_api_url=twilio_server.url,
        dispatch=replace(settings.dispatch, http_timeout_seconds=5.0, smtp_timeout_seconds=5.0),
    )


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Argon2id at its cheapest for the tests (the real one costs 64 MB and ~0.1 s a
    hash, which sign-in tests paid many times over); the CLI's subprocesses and the
    product keep the real parameters."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    users._dummy.cache_clear()
    yield
    users._dummy.cache_clear()
