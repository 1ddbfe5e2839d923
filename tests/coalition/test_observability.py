"""Request ids, the JSON access log (and what it must never hold), Prometheus metrics."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from coalition.db import db
from tests.conftest import basic_auth, bearer, fetch_token, make_test_app
from tests.factories.partner_api import burn, earn, enrol, publish

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def observed(app: Flask, database_url: str) -> Iterator[Flask]:
    """An app on the test database that logs at info, with a route that logs and one that
    crashes."""
    observed = make_test_app(database_url, LOG_LEVEL="info")

    @observed.route("/_test/log")
    def logs_a_line() -> str:
        logging.getLogger("coalition.test").warning("inside the request")
        return "ok"

    @observed.route("/_test/crash")
    def crashes() -> str:
        raise RuntimeError("boom")

    try:
        with observed.app_context():
            yield observed
            db.engine.dispose()
    finally:
        logging.getLogger("coalition").setLevel(app.config["LOG_LEVEL"].upper())


@pytest.fixture
def logged(observed: Flask) -> Iterator[io.StringIO]:
    """What the app's own log handler (JSON, with the request id filter) writes."""
    handler = logging.getLogger("coalition").handlers[0]
    stream = io.StringIO()
    previous = handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


def lines_of(logged: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in logged.getvalue().splitlines()]


def access(logged: io.StringIO) -> list[dict]:
    return [line for line in lines_of(logged) if line["logger"] == "coalition.access"]


# --------------------------------------------------------------------------- request ids


@pytest.mark.parametrize("offered", ["abc-123", "A.b_C-9", "x" * 128])
def test_a_sane_request_id_is_accepted_and_echoed(client, offered):
    response = client.get("/healthz", headers={"X-Request-ID": offered})
    assert response.headers["X-Request-ID"] == offered


@pytest.mark.parametrize("offered", [None, "", "has space", "x" * 129, "émoji", "a/b",
                                     "id\r\nSet-Cookie: x=1"])
def test_an_absent_or_odd_request_id_is_replaced_by_a_new_one(client, offered):
    headers = {} if offered is None else {"X-Request-ID": offered}
    try:
        first = client.get("/healthz", headers=headers)
    except ValueError:  # the test client itself refuses a header with a newline
        return
    second = client.get("/healthz", headers=headers)
    made = first.headers["X-Request-ID"]
    assert made != offered and len(made) == 32 and int(made, 16) >= 0
    assert second.headers["X-Request-ID"] != made


def test_errors_carry_the_request_id_too(client):
    response = client.get("/v1/nowhere", headers={"X-Request-ID": "lost-1"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "lost-1"


def test_every_line_of_a_request_carries_its_id(observed, logged):
    client = observed.test_client()
    client.get("/_test/log", headers={"X-Request-ID": "req-log-1"})
    response = client.get("/_test/crash", headers={"X-Request-ID": "req-crash-1"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "req-crash-1"

    inside = [line for line in lines_of(logged) if line["message"] == "inside the request"]
    assert [line["request_id"] for line in inside] == ["req-log-1"]
    crash = [line for line in lines_of(logged) if line["level"] == "error"]
    assert crash and all(line["request_id"] == "req-crash-1" for line in crash)
    assert "RuntimeError: boom" in crash[0]["exc"]
    lines = access(logged)
    assert [(line["request_id"], line["status"], line["outcome"]) for line in lines] == [
        ("req-log-1", 200, "ok"), ("req-crash-1", 500, "internal_error")]


def test_the_access_line(observed, logged, make_partner):
    client = observed.test_client()
    _, acme = make_partner("acme")
    member = enrol(client, acme, "c-1")
    client.get(f"/v1/members/{member}", headers={**acme, "X-Request-ID": "look-1"})
    client.get("/v1/settlement/runs/999999", headers=acme)
    client.get("/v1/nowhere")

    lines = {line["request_id"]: line for line in access(logged)}
    line = lines["look-1"]
    assert set(line) == {"ts", "level", "logger", "message", "request_id", "method", "path",
                         "status", "duration_ms", "client_id", "partner", "outcome",
                         "remote_addr"}
    assert line["level"] == "info"
    assert line["remote_addr"] == "127.0.0.1"  # the test client's
    assert line["message"] == "GET /v1/members/<member_number> 200"
    # the URL rule, not the member number
    assert (line["method"], line["path"], line["status"], line["outcome"]) == (
        "GET", "/v1/members/<member_number>", 200, "ok")
    assert line["client_id"].startswith("pt_") and line["partner"] == "acme"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert member not in logged.getvalue()

    refused, unknown = list(lines.values())[-2:]
    assert refused["path"].startswith("/v1/settlement/runs/<int")
    assert refused["path"].endswith(":run_id>")
    assert (refused["status"], refused["outcome"]) == (403, "insufficient_scope")
    assert (unknown["path"], unknown["status"], unknown["outcome"]) == (
        "(unmatched)", 404, "not_found")
    assert unknown["client_id"] is None and unknown["partner"] is None


def test_no_secret_token_or_password_reaches_the_log(observed, logged):
    from coalition.oauth.clients import create_operator_client

    client = observed.test_client()
    operator = create_operator_client(["admin", "settlement:run"])
    token = fetch_token(client, operator.client_id, operator.client_secret)
    admin = bearer(token)
    issued = client.post("/v1/admin/partners", headers=admin, json={
        "code": "acme", "name": "Acme", "kind": "merchant", "currency": "GBP",
        "earn_rate": "1", "issue_price": "0.01", "redeem_rate": "0.008"})
    assert issued.status_code == 201
    partner_client = client.post("/v1/admin/partners/acme/clients", headers=admin,
                                 json={"scopes": ["points:earn"]}).get_json()
    rotated = client.post(f"/v1/admin/partners/acme/clients/{partner_client['client_id']}"
                          "/secret", headers=admin).get_json()
    partner_token = fetch_token(client, partner_client["client_id"], rotated["client_secret"])
    # refusals: a wrong secret, a bad token, a body with a password-like field
    wrong = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                        headers=basic_auth(operator.client_id, "not-the-secret-123"))
    assert wrong.status_code == 401
    assert client.get("/v1/admin/partners", headers=bearer("forged-token-456")).status_code \
        == 401
    client.post("/v1/earn", headers=bearer(partner_token),
                json={"member_number": "400000000006", "partner_txn_id": "t-1",
                      "points": 5, "password": "hunter2-password"})
    client.post("/oauth/revoke", data={"token": partner_token},
                headers=basic_auth(partner_client["client_id"], rotated["client_secret"]))

    text = logged.getvalue()
    assert len(access(logged)) >= 8
    for secret in (operator.client_secret, token, partner_client["client_secret"],
                   rotated["client_secret"], partner_token, "not-the-secret-123",
                   "forged-token-456", "hunter2-password", "Authorization", "Bearer ",
                   "Basic "):
        assert secret not in text
    outcomes = [(line["path"], line["status"], line["outcome"]) for line in access(logged)]
    assert ("/oauth/token", 401, "invalid_client") in outcomes
    assert ("/v1/admin/partners", 401, "unauthorized") in outcomes


# --------------------------------------------------------------------------- metrics


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def entries(samples, kind: str) -> float:
    return samples.get(("coalition_ledger_entries_total", (("kind", kind),)), 0.0)


def requests_(samples, endpoint: str, status: int, method: str = "POST") -> float:
    key = ("coalition_http_requests_total",
           (("endpoint", endpoint), ("method", method), ("status", str(status))))
    return samples.get(key, 0.0)


def latency_count(samples, endpoint: str, status: int) -> float:
    key = ("coalition_http_request_duration_seconds_count",
           (("endpoint", endpoint), ("method", "POST"), ("status", str(status))))
    return samples.get(key, 0.0)


def test_metrics_count_requests_and_committed_entries_only(client, make_partner,
                                                           operator_headers):
    publish(client, operator_headers)
    _, acme = make_partner("acme")
    member = enrol(client, acme, "m-1")

    before = scrape(client)
    earn(client, acme, member, "e-1", 100)
    burn(client, acme, member, "b-1", 30)
    middle = scrape(client)
    assert entries(middle, "earn") == entries(before, "earn") + 1
    assert entries(middle, "burn") == entries(before, "burn") + 1
    assert requests_(middle, "/v1/earn", 201) == requests_(before, "/v1/earn", 201) + 1
    assert latency_count(middle, "/v1/burn", 201) == latency_count(before, "/v1/burn", 201) + 1

    # refused (rolled back), and a replay (nothing new booked): no entry counted
    refused = client.post("/v1/burn", headers=acme, json={
        "member_number": member, "partner_txn_id": "b-2", "points": 10_000})
    assert refused.status_code == 409
    replay = client.post("/v1/earn", headers=acme, json={
        "member_number": member, "partner_txn_id": "e-1", "points": 100})
    assert replay.status_code == 201
    after = scrape(client)
    for kind in ("earn", "burn"):
        assert entries(after, kind) == entries(middle, kind)
    assert requests_(after, "/v1/burn", 409) == requests_(middle, "/v1/burn", 409) + 1
    assert requests_(after, "/v1/earn", 201) == requests_(middle, "/v1/earn", 201) + 1


def test_metrics_need_no_token_and_stay_out_of_the_api_document(client):
    assert client.get("/metrics").status_code == 200
    assert "/metrics" not in client.get("/openapi.json").get_json()["paths"]


def test_metrics_can_be_switched_off(app, database_url):
    hidden = make_test_app(database_url, METRICS=False)
    with hidden.app_context():
        try:
            response = hidden.test_client().get("/metrics")
            assert response.status_code == 404
            assert response.headers["X-Request-ID"]
        finally:
            db.engine.dispose()


def test_metrics_add_up_across_processes_with_a_multiprocess_directory(tmp_path):
    """What gunicorn workers do: each process writes its samples to the directory, and any
    of them (here: this process, reading the directory) answers with the sum."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    script = (
        "from coalition.app import create_app\n"
        "app = create_app({'ENV': 'testing', 'SECRET_KEY': 'x' * 32,\n"
        f"                  'DATABASE_URL': 'sqlite:///{tmp_path / 'mp.sqlite3'}'}})\n"
        "client = app.test_client()\n"
        "for _ in range(3):\n"
        "    assert client.get('/v1/nowhere').status_code == 404\n"
        "body = client.get('/metrics').get_data(as_text=True)\n"
        "print([line for line in body.splitlines()\n"
        "       if line.startswith('coalition_http_requests_total{')])\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    seen = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        seen.append(done.stdout)
    unmatched = 'endpoint="(unmatched)",method="GET",status="404"}'
    # each worker answers with the sum over every worker so far
    assert f"{unmatched} 3.0" in seen[0] and f"{unmatched} 6.0" in seen[1]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    total = registry.get_sample_value("coalition_http_requests_total", {
        "method": "GET", "endpoint": "(unmatched)", "status": "404"})
    assert total == 6
