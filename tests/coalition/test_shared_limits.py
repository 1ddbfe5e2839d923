"""Rate limits shared in Redis (``RATE_LIMIT_STORAGE=redis://…``): the same token buckets as
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
from hypothesis import given, settings
from hypothesis import strategies as st

from coalition.db import db
from coalition.http.limits import RedisBuckets, TokenBuckets
from tests.coalition.test_serving import clean_env, gunicorn_command, started, wait_until_healthy
from tests.conftest import TEST_SECRET, basic_auth, make_test_app, snapshot
from tests.partners.support import assert_error

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


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=40, deadline=None)
@given(rate=st.sampled_from([0.5, 1.0, 3.0, 200.0]), burst=st.integers(1, 5),
       steps=st.lists(st.tuples(st.sampled_from(["a", "b"]),
                                st.sampled_from([0.0, 0.0, 0.001, 0.25, 0.3333, 1.0, 7.5])),
                      min_size=1, max_size=40))
def test_redis_buckets_answer_exactly_as_the_memory_buckets(redis_client, rate, burst, steps):
    """One rule in two places: for any sequence of requests the bucket in Redis grants and
    refuses the same requests as the one in memory, with the same wait to the last bit."""
    clock = Clock()
    prefix = f"coalition-test:{uuid.uuid4().hex}:"
    memory = TokenBuckets(rate, burst, clock=clock)
    shared = RedisBuckets(rate, burst, redis_client, prefix, clock=clock)
    try:
        for key, later in steps:
            clock.now += later
            assert shared.take(key) == memory.take(key), (key, clock.now)
    finally:
        redis_client.delete(prefix + "a", prefix + "b")


def test_a_bucket_in_redis_expires_once_full_again(redis_client, prefix):
    """On Redis's own clock: a bucket of 2 at 1 a second is full again 2 s after its last
    take, and then it is deleted (1 s later), as full and never seen are the same."""
    buckets = RedisBuckets(rate=1.0, burst=2, client=redis_client, prefix=prefix)
    assert buckets.take("x") == 0.0 and buckets.take("x") == 0.0
    assert 0.9 < buckets.take("x") <= 1.0
    assert 2000 < redis_client.pttl(prefix + "x") <= 3000


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
def redis_server(port: int, folder: Path) -> Iterator[None]:
    """A Redis of this test's own on ``port``, stopped (SIGTERM, then SIGKILL) on exit."""
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(folder)]
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
