"""Test harness.

Every test that uses ``app`` runs once on SQLite and once on PostgreSQL (when
``COALITION_TEST_DATABASE_URL`` names a server). Each backend gets a fresh database,
migrated once per test process with the real migrations; after each test every table is
emptied, so tests see real commits (the ledger's concurrency tests need them) and still
start clean. Tests marked ``postgres`` run on PostgreSQL only.

With ``COALITION_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) a missing or unreachable
PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from coalition import clock as app_clock
from coalition.app import create_app
from coalition.db import Base, db
from coalition.migrations import runner
from coalition.program.service import forget_parsed_rules
from tests.coalition.test_serving import (
    clean_env,
    gunicorn_command,
    started,
    wait_until_healthy,
)
from tests.factories.clock import HandClock, clock_of
from tests.factories.partners import partner_maker
from tests.factories.tokens import (  # noqa: F401 - also imported from here by tests
    basic_auth,
    bearer,
    fetch_token,
    operator_client,
)

PG_URL = os.environ.get("COALITION_TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("COALITION_REQUIRE_POSTGRES", "").lower() in ("1", "true", "yes")
BACKENDS = ["sqlite", "postgresql"]
TEST_SECRET = "test-secret-key-0123456789abcdef"


def fuzz_backends() -> set[str]:
    """Where tests marked ``fuzz`` run: COALITION_FUZZ_BACKENDS, else PostgreSQL when a
    server is configured (its types and limits find more), else SQLite."""
    named = os.environ.get("COALITION_FUZZ_BACKENDS", "").strip()
    if named:
        return {name.strip() for name in named.split(",") if name.strip()}
    return {"postgresql" if PG_URL else "sqlite"}


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by the backend
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    fuzzed = fuzz_backends()
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec else None
        if item.get_closest_marker("postgres") and backend == "sqlite":
            drop.append(item)
        elif item.get_closest_marker("fuzz") and backend not in fuzzed:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    # the modules marked slow first, otherwise the order found (a stable sort): under
    # ``--dist loadscope`` the workers take them on at the start, and the many short
    # modules even out the end (a long one last would leave the other workers idle)
    slow = {module_of(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: module_of(item) not in slow)


def module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def worker_suffix() -> str:
    # one database per test process, so two runs against one server never collide
    return f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


def _fresh_postgres_database() -> str:
    if not PG_URL:
        message = "PostgreSQL tests need COALITION_TEST_DATABASE_URL (postgresql+psycopg://…)"
        if REQUIRE_PG:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    base = make_url(PG_URL)
    name = f"coalition_test_{worker_suffix()}"
    try:
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server
        message = f"PostgreSQL at {base.render_as_string(hide_password=True)} unreachable: {exc}"
        if REQUIRE_PG:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return base.set(database=name).render_as_string(hide_password=False)


def make_test_app(database_url: str, **overrides: Any) -> Flask:
    # the cheapest Argon2id: the suite signs in hundreds of times (production keeps the full
    # cost: tests/coalition/test_passwords.py)
    # a pool that keeps 5 connections open between tests (15 more while threads need them):
    # with a worker per core, idle pools must leave PostgreSQL's max_connections to the
    # tests that open many at once (tests/coalition/test_concurrency.py)
    config = {"ENV": "testing", "DATABASE_URL": database_url, "SECRET_KEY": TEST_SECRET,
              "LOG_LEVEL": "warning", "TX_RETRIES": 20, "PASSWORD_HASHING": "minimal",
              "DB_POOL_SIZE": 5, "DB_MAX_OVERFLOW": 15}
    config.update(overrides)
    return create_app(config)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")  # type: ignore[arg-type]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class BackendDatabases:
    """Each backend's database and its migrated app, made on first use and kept to the end
    of the test process.

    The session-scoped fixtures that take the parametrized ``backend`` are made again each
    time a worker's next module runs on the other backend (``--dist loadscope`` hands a
    worker a module's tests on both backends, one after the other): they look their
    backend up here, so that a database is created and migrated once per process rather
    than once per module.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.urls: dict[str, str] = {}
        self.apps: dict[str, Flask] = {}

    def url(self, backend: str) -> str:
        if backend not in self.urls:
            self.urls[backend] = (
                f"sqlite:///{self.tmp_path_factory.mktemp('db') / 'coalition.sqlite3'}"
                if backend == "sqlite" else _fresh_postgres_database())
        return self.urls[backend]

    def app(self, backend: str) -> Flask:
        if backend not in self.apps:
            app = make_test_app(self.url(backend))
            with app.app_context():
                runner.upgrade()
            self.apps[backend] = app
        return self.apps[backend]

    def release_connections(self) -> None:
        """Close the apps' pooled connections."""
        for app in self.apps.values():
            with app.app_context():
                db.engine.dispose()

    def close(self) -> None:
        self.release_connections()
        for backend, url in self.urls.items():
            if backend == "postgresql":
                _drop_postgres_database(url)


@pytest.fixture(scope="session")
def _test_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendDatabases]:
    databases = BackendDatabases(tmp_path_factory)
    yield databases
    databases.close()


@pytest.fixture(scope="module", autouse=True)
def _connections_of_the_module(_test_databases: BackendDatabases) -> Iterator[None]:
    """No pooled connection passes from one module's tests to another's, as when each
    module had an app of its own: SQLite connections kept from the job tests' threads
    made the next module's re-creation of a dropped trigger fail ("already exists")."""
    yield
    _test_databases.release_connections()


@pytest.fixture(scope="session")
def database_url(backend: str, _test_databases: BackendDatabases) -> str:
    return _test_databases.url(backend)


@pytest.fixture(scope="session")
def _migrated_app(backend: str, _test_databases: BackendDatabases) -> Flask:
    return _test_databases.app(backend)


#: the statements that empty a PostgreSQL test database, by its URL (its tables and
#: sequences are known once it is migrated)
_POSTGRES_EMPTYING: dict[str, str] = {}


def _empty_postgres(conn: Any, tables: list[str]) -> None:
    """DELETE with the append-only triggers suspended, and identities restarted, in one
    round trip.

    Much cheaper than TRUNCATE on small tables (which makes new files for each); it needs
    the superuser that the test server's trust login gives, else TRUNCATE is used.
    """
    key = conn.engine.url.render_as_string(hide_password=False)
    script = _POSTGRES_EMPTYING.get(key)
    if script is None:
        script = _POSTGRES_EMPTYING[key] = _postgres_emptying(conn, tables)
    # no parameters: psycopg sends the statements together (the simple query protocol)
    conn.connection.dbapi_connection.cursor().execute(script)


def _postgres_emptying(conn: Any, tables: list[str]) -> str:
    superuser = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    if not superuser.scalar():
        return f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"
    sequences = conn.execute(text(
        "SELECT pg_get_serial_sequence(c.table_name, c.column_name) AS seq "
        "FROM information_schema.columns c WHERE c.table_schema = 'public' "
        "AND c.table_name = ANY(:tables)"), {"tables": tables}).scalars()
    restart = [f"SELECT setval('{seq}', 1, false)" for seq in sequences if seq]
    return "; ".join(["SET LOCAL session_replication_role = replica",
                      *(f"DELETE FROM {table}" for table in tables), *restart])


def empty_all_tables(app: Flask) -> None:
    forget_parsed_rules()  # the versions emptied may be published again, at the same time
    with app.app_context():
        tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                _empty_postgres(conn, tables)
            else:
                # the journal's append-only triggers are lifted just for the clean-up
                triggers = conn.execute(text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
                for name, _ in triggers:
                    conn.execute(text(f'DROP TRIGGER "{name}"'))
                for table in tables:
                    conn.execute(text(f"DELETE FROM {table}"))
                for _, sql in triggers:
                    conn.execute(text(sql))


@pytest.fixture
def app(_migrated_app: Flask) -> Iterator[Flask]:
    with _migrated_app.app_context():
        yield _migrated_app
    app_clock.use(_migrated_app, None)  # whatever clock the test handed it
    empty_all_tables(_migrated_app)


@pytest.fixture
def clock(app: Flask) -> Iterator[HandClock]:
    """The app's clock, moved on by hand (``clock.advance(seconds=2)``) instead of sleeping."""
    with clock_of(app, HandClock()) as hand:
        yield hand


@pytest.fixture
def many_connections(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For a test that opens many PostgreSQL connections at once (up to 80): one such test
    at a time across the workers of a run, so that two never add up past the server's
    max_connections. A lock on a file that every worker's temporary folder shares."""
    lock = tmp_path_factory.getbasetemp().parent / "coalition-many-connections.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# --------------------------------------------------------------------------- actors


@pytest.fixture
def operator(app: Flask) -> dict[str, str]:
    """An operator client with ``admin settlement:run``: ``{client_id, client_secret}``."""
    return operator_client()


@pytest.fixture
def operator_headers(client: FlaskClient, operator: dict[str, str]) -> dict[str, str]:
    return bearer(fetch_token(client, operator["client_id"], operator["client_secret"]))


@pytest.fixture
def make_partner(app: Flask, client: FlaskClient):
    """``make_partner(code, **fields) -> (partner dict, headers with a token of all partner
    scopes)``."""
    return partner_maker(client)


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, for asserting that a refused request changed nothing.

    The rows as the driver gives them (compared with another snapshot, never with the
    models' values), read on one connection with the statements made once per database:
    the isolation matrix takes a snapshot after each of thousands of attempts."""
    with app.app_context(), db.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        result = {}
        for table, sql in _snapshot_statements(conn):
            cursor.execute(sql)
            result[table] = sorted(map(tuple, cursor.fetchall()), key=repr)
        cursor.close()
        return result


#: each database's ``(table, SELECT)`` pairs, by URL
_SNAPSHOT_STATEMENTS: dict[str, list[tuple[str, str]]] = {}


def _snapshot_statements(conn: Any) -> list[tuple[str, str]]:
    key = conn.engine.url.render_as_string(hide_password=False)
    if key not in _SNAPSHOT_STATEMENTS:
        _SNAPSHOT_STATEMENTS[key] = [
            (table.name, str(table.select().compile(dialect=conn.dialect)))
            for table in Base.metadata.sorted_tables]
    return _SNAPSHOT_STATEMENTS[key]


# --------------------------------------------------------------------------- live server


class LiveServer:
    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # serve_forever checks for shutdown once per poll: its default half second was
        # what every test with a live server waited for at its end
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    """The test app served over real HTTP on a free loopback port."""
    with LiveServer(app) as server:
        yield server


def post_short(url: str, path: str, headers: dict[str, str], body: bytes,
               declared: int) -> tuple[int, Any]:
    """POST over a raw socket declaring ``Content-Length: declared`` but sending only
    ``body`` (fewer bytes), then closing the write side, as a dropped upload does; the
    status and JSON answer (``None`` if the server answered nothing)."""
    address = make_url_parts(url)
    head = [f"POST {path} HTTP/1.1", f"Host: {address[0]}:{address[1]}",
            f"Content-Length: {declared}", "Connection: close",
            *(f"{name}: {value}" for name, value in headers.items())]
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    if not received:
        return 0, None
    status_line, _, rest = received.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload) if payload.strip() else None


def make_url_parts(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


@pytest.fixture
def gunicorn_server(app: Flask, database_url: str, tmp_path: Any) -> Iterator[str]:
    """The app served by the real gunicorn (as in production) on the test database: its
    base URL."""
    env = clean_env(tmp_path, COALITION_ENV="testing", COALITION_DATABASE_URL=database_url,
                    COALITION_SECRET_KEY=TEST_SECRET, COALITION_LOG_LEVEL="warning",
                    COALITION_PASSWORD_HASHING="minimal")
    log = tmp_path / "gunicorn.log"
    with started(gunicorn_command(), env, log, cwd=tmp_path) as server:
        yield wait_until_healthy(server, log)


@pytest.fixture(params=["werkzeug", "gunicorn"])
def server_url(request: pytest.FixtureRequest) -> str:
    """A live server: werkzeug's (threads in this process) or gunicorn (production's)."""
    if request.param == "werkzeug":
        return request.getfixturevalue("live_server").url  # type: ignore[no-any-return]
    return request.getfixturevalue("gunicorn_server")  # type: ignore[no-any-return]
# --------------------------------------------------------------------------- a real browser

#: screenshots of the browser tests, kept for people to look at
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("COALITION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REQUIRE_BROWSER = os.environ.get("COALITION_REQUIRE_BROWSER", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def chromium():
    """Debian's headless Chromium driven by Playwright (never a browser Playwright downloads)."""
    def unavailable(reason: str) -> None:
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason} (COALITION_REQUIRE_BROWSER is set)", pytrace=False)
        pytest.skip(reason)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(f"Playwright for Python is not installed: {exc}")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"Chromium is not installed at {CHROMIUM} "
                    "(apt-get install chromium chromium-driver)")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
    except Exception as exc:  # noqa: BLE001 - whatever stops Chromium from starting
        playwright.stop()
        unavailable(f"Chromium could not be launched: {exc}")
    yield browser
    browser.close()
    playwright.stop()
