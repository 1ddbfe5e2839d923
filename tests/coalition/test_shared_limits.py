"""Rate limits shared in Redis (``RATE_LIMIT_STORAGE=redis://…``): the same moving windows as
in memory, one set for every worker and host, and what happens when Redis is down.

These tests use the real Redis at ``COALITION_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/11``), each under a key prefix of its own; a Redis that cannot be
reached fails them (``.ci/run`` starts one)."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask

from coalition.db import db
from coalition.http.limits import Limits, window
from tests.coalition.test_serving import clean_env, gunicorn_command, started, wait_until_healthy
from tests.conftest import TEST_SECRET, basic_auth, make_test_app, snapshot
from tests.factories.partner_api import assert_error

pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get("COALITION_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} unreachable ({exc}): shared rate limits need one",
                    pytrace=False)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own, its keys deleted afterwards."""
    mine = f"coalition-test:{uuid.uuid4().hex}:"
    yield mine
    keys = list(redis_client.scan_iter(match=mine + "*"))
    if keys:
        redis_client.delete(*keys)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- one rule


def _limits(database_url: str, storage: str, prefix: str) -> tuple[Flask, Limits]:
    url = REDIS_URL if storage == "redis" else "memory://"
    app = make_test_app(database_url, RATE_LIMIT_ENABLED=True, RATE_LIMIT_STORAGE=url,
                        RATE_LIMIT_KEY_PREFIX=prefix)
    return app, app.extensions["coalition.limits"]


@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_one_rule_in_redis_and_in_memory(app, database_url, prefix, storage):
    """The same moving window in both places: 3 requests in any 3 s per key, the wait of a
    refused one the time until the first of the three leaves the window, and the window
    moving on (not starting again at a fixed boundary)."""
    limited, limits = _limits(database_url, storage, prefix)
    item = window(1, 3, "client")
    try:
        assert limits.wait(item, "a") == 0.0
        time.sleep(1.0)
        assert [limits.wait(item, "a") for _ in range(2)] == [0.0, 0.0]
        wait = limits.wait(item, "a")
        assert 1.0 < wait < 2.1, wait  # the first leaves 3 s after it came, not 3 s from now
        assert [limits.wait(item, "b") for _ in range(3)] == [0.0] * 3  # another key
        assert limits.wait(item, "a", "member", "1") == 0.0  # and a member's
        time.sleep(wait)
        # the first left the window: one more, and not the other two that came a second later
        assert limits.wait(item, "a") == 0.0
        assert 0.0 < limits.wait(item, "a") < 1.5
    finally:
        with limited.app_context():
            db.engine.dispose()


def test_a_window_in_redis_expires_with_its_last_request(app, database_url, redis_client,
                                                         prefix):
    """The keys are the prefix's, one per limit and caller, and Redis deletes one a window
    after its last request (a window that has passed and one never seen are the same)."""
    limited, limits = _limits(database_url, "redis", prefix)
    try:
        assert limits.wait(window(1, 2, "client"), "x") == 0.0
        assert limits.wait(window(1, 2, "address"), "10.0.0.1") == 0.0
    finally:
        with limited.app_context():
            db.engine.dispose()
    keys = sorted(key.decode() for key in redis_client.scan_iter(match=prefix + "*"))
    assert keys == [prefix + "address/10.0.0.1/2/2/second", prefix + "client/x/2/2/second"]
    assert 1000 < redis_client.pttl(keys[1]) <= 2000


# --------------------------------------------------------------------------- two servers


def _serve(tmp_path: Path, name: str, database_url: str, **settings: str) -> Any:
    folder = tmp_path / name
    folder.mkdir()
    env = clean_env(folder, COALITION_ENV="testing", COALITION_DATABASE_URL=database_url,
                    COALITION_SECRET_KEY=TEST_SECRET, COALITION_LOG_LEVEL="warning",
                    COALITION_RATE_LIMIT_ENABLED="true", **settings)
    log = folder / "gunicorn.log"
    return started(gunicorn_command(), env, log, cwd=folder), log


@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_two_gunicorn_servers_share_one_limit_in_redis(app, database_url, make_partner,
                                                       operator, tmp_path, prefix, storage):
    """Two gunicorn servers of two workers each, as two hosts would be. With Redis a client
    gets its burst once in all; with memory:// (each worker on its own) it gets it up to
    four times, which is what sharing the buckets fixes."""
    _, headers = make_partner("acme")
    settings = {"COALITION_RATE_LIMIT": "0.001", "COALITION_RATE_LIMIT_BURST": "6",
                "COALITION_TOKEN_RATE_LIMIT": "0.001", "COALITION_TOKEN_RATE_LIMIT_BURST": "4"}
    if storage == "redis":
        settings.update(COALITION_RATE_LIMIT_STORAGE=REDIS_URL,
                        COALITION_RATE_LIMIT_KEY_PREFIX=prefix)
    first, first_log = _serve(tmp_path, "one", database_url, **settings)
    second, second_log = _serve(tmp_path, "two", database_url, **settings)
    with first as one, second as two:
        bases = [wait_until_healthy(one, first_log), wait_until_healthy(two, second_log)]
        # new connections each time: gunicorn's workers take them in turn, whichever
        granted, refused = 0, []
        for n in range(40):
            response = requests.get(f"{bases[n % 2]}/v1/transactions", headers=headers,
                                    timeout=10)
            if response.status_code == 200:
                granted += 1
            else:
                refused.append(response)
        tokens = [requests.post(f"{bases[n % 2]}/oauth/token",
                                data={"grant_type": "client_credentials"},
                                headers=basic_auth(operator["client_id"],
                                                   operator["client_secret"]), timeout=10)
                  for n in range(20)]
    token_granted = sum(1 for answer in tokens if answer.status_code == 200)
    if storage == "memory":
        assert granted > 6 and token_granted > 4, (granted, token_granted)
        return
    assert granted == 6
    assert token_granted == 4
    for response in [*refused, *(answer for answer in tokens if answer.status_code != 200)]:
        body = response.json()
        assert (response.status_code, body["code"], body["error"]) == (429, 429, "rate_limited")
        seconds = int(response.headers["Retry-After"])
        assert seconds >= 1 and f"Retry after {seconds} s" in body["message"]


# --------------------------------------------------------------------------- Redis down


class Logged:
    """The records of the ``coalition.limits`` logger, as JSON lines."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def __enter__(self) -> Logged:
        logging.getLogger("coalition.limits").addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("coalition.limits").removeHandler(self.handler)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def redis_down_app(database_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """An app whose rate limits are in a Redis that is not there (a closed port), failing
    open or closed as the test's parameter says."""
    down = make_test_app(database_url, RATE_LIMIT_ENABLED=True,
                         RATE_LIMIT_STORAGE=f"redis://127.0.0.1:{closed_port()}/0",
                         RATE_LIMIT_FAIL_OPEN=request.param)
    try:
        yield down
    finally:
        with down.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("redis_down_app", [True], indirect=True)
def test_redis_down_failing_open_lets_requests_through_and_says_so_once(
        app, redis_down_app, make_partner, operator):
    _, headers = make_partner("acme")
    client = redis_down_app.test_client()
    with Logged() as logged:
        for _ in range(3):
            assert client.get("/v1/transactions", headers=headers).status_code == 200
        token = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                            headers=basic_auth(operator["client_id"], operator["client_secret"]))
        assert token.status_code == 200
    [line] = logged.lines()  # once per outage, not once per request
    assert line.startswith("ERROR rate limit storage redis://127.0.0.1:")
    assert "unreachable (ConnectionError" in line
    assert line.endswith("requests go through unlimited (RATE_LIMIT_FAIL_OPEN=true) until it "
                         "answers")


@pytest.mark.parametrize("redis_down_app", [False], indirect=True)
def test_redis_down_failing_closed_refuses_with_503_and_changes_nothing(
        app, redis_down_app, make_partner, operator):
    _, headers = make_partner("acme")
    client = redis_down_app.test_client()
    before = snapshot(app)
    with Logged() as logged:
        answers = [
            client.get("/v1/transactions", headers=headers),
            client.post("/v1/members", json={"partner_member_ref": "c9"}, headers=headers),
            client.post("/oauth/token", data={"grant_type": "client_credentials"},
                        headers=basic_auth(operator["client_id"], operator["client_secret"])),
        ]
    for answer in answers:
        body = assert_error(answer, 503, "unavailable")
        assert answer.headers["Retry-After"] == "1"
        assert "Rate limits cannot be checked" in body["message"]
    assert snapshot(app) == before
    [line] = logged.lines()
    assert "unreachable (ConnectionError" in line
    assert line.endswith("requests are refused with 503 (RATE_LIMIT_FAIL_OPEN=false) until it "
                         "answers")
    # anonymous requests are still 401 (the limit is taken once the caller is known)
    assert json.loads(client.get("/v1/transactions").data)["code"] == 401


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextmanager
def redis_server(port: int, folder: Path, *options: str) -> Iterator[None]:
    """A Redis of this test's own on ``port`` (and ``options``), stopped (SIGTERM, then
    SIGKILL) on exit."""
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(folder), *options]
    with started(command, os.environ, folder / f"redis-{port}.log", cwd=folder) as server:
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            if server.poll() is not None:
                pytest.fail(f"redis-server exited:\n{(folder / f'redis-{port}.log').read_text()}",
                            pytrace=False)
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not answer within 10 s", pytrace=False)
                time.sleep(0.05)
        client.close()
        yield


def test_redis_lost_and_back_limits_apply_again_and_both_are_logged(
        app, database_url, make_partner, tmp_path):
    """A real Redis stops and starts again on the same port: meanwhile requests go through
    (failing open), then the limits hold again; the outage and the recovery are logged."""
    port = closed_port()
    limited = make_test_app(database_url, RATE_LIMIT_ENABLED=True, RATE_LIMIT=0.001,
                            RATE_LIMIT_BURST=2,
                            RATE_LIMIT_STORAGE=f"redis://127.0.0.1:{port}/0")
    _, headers = make_partner("acme")
    client = limited.test_client()

    def status() -> int:
        return client.get("/v1/transactions", headers=headers).status_code

    try:
        with Logged() as logged:
            with redis_server(port, tmp_path):
                assert [status() for _ in range(3)] == [200, 200, 429]
            assert [status() for _ in range(3)] == [200, 200, 200]  # no Redis: unlimited
            with redis_server(port, tmp_path):
                time.sleep(1.0)  # STORE_RETRY: the lost Redis is asked again after 1 s
                # a new Redis, empty: a full bucket again, then the limit
                assert [status() for _ in range(3)] == [200, 200, 429]
    finally:
        with limited.app_context():
            db.engine.dispose()
    error, recovered = logged.lines()
    assert error.startswith(f"ERROR rate limit storage redis://127.0.0.1:{port}/0 unreachable")
    assert recovered == (f"WARNING rate limit storage redis://127.0.0.1:{port}/0 answers "
                         "again: limits apply")


def test_a_redis_that_does_not_answer_costs_one_request_the_timeout_not_all(
        app, database_url, make_partner):
    """A Redis that accepts connections and never answers (a hung server): the first
    request waits STORE_TIMEOUT (0.5 s), those of the next second do not wait for it."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        port = hung.getsockname()[1]
        limited = make_test_app(database_url, RATE_LIMIT_ENABLED=True,
                                RATE_LIMIT_STORAGE=f"redis://127.0.0.1:{port}/0")
        _, headers = make_partner("acme")
        client = limited.test_client()
        try:
            with Logged() as logged:
                timings = []
                for _ in range(4):
                    started_at = time.perf_counter()
                    assert client.get("/v1/transactions", headers=headers).status_code == 200
                    timings.append(time.perf_counter() - started_at)
        finally:
            with limited.app_context():
                db.engine.dispose()
    assert 0.45 < timings[0] < 2.0, timings
    assert max(timings[1:]) < 0.45, timings
    [line] = logged.lines()
    assert "unreachable (TimeoutError" in line


def test_a_redis_socket_path_counts_the_limits_there(app, database_url, tmp_path):
    """``unix:///path`` (what the library calls ``redis+unix://``): the windows are counted
    in the Redis behind that socket, under the default prefix."""
    path = tmp_path / "redis.sock"
    with redis_server(closed_port(), tmp_path, "--unixsocket", str(path)):
        limited = make_test_app(database_url, RATE_LIMIT_ENABLED=True,
                                RATE_LIMIT_STORAGE=f"unix://{path}")
        limits = limited.extensions["coalition.limits"]
        client = redis.Redis(unix_socket_path=str(path))
        try:
            assert limits.storage == f"unix://{path}"
            item = window(1, 2, "client")
            assert [limits.wait(item, "a") > 0 for _ in range(3)] == [False, False, True]
            assert client.llen("coalition:ratelimit:client/a/2/2/second") == 2
        finally:
            client.close()
            with limited.app_context():
                db.engine.dispose()
