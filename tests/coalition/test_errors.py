"""The one error shape, for every way a request can fail, and opaque 500s."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from http import HTTPStatus

import pytest
from flask import Flask, abort
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from coalition.db import db
from coalition.errors import IdempotencyConflict, InsufficientPoints
from tests.conftest import make_test_app, snapshot

OPAQUE_500 = {"code": 500, "status": "Internal Server Error", "error": "internal_error",
              "message": "The server could not complete the request."}
PARTNER = {"code": "acme", "name": "Acme", "kind": "merchant", "currency": "GBP",
           "earn_rate": "1", "issue_price": "0.01", "redeem_rate": "0.008"}


def test_unknown_path_is_404(client):
    response = client.get("/v1/nowhere")
    assert response.status_code == 404
    body = response.get_json()
    assert set(body) == {"code", "status", "message", "error"}
    assert (body["code"], body["status"], body["error"]) == (404, "Not Found", "not_found")


def test_unknown_method_is_405_with_allow(client):
    response = client.delete("/v1/program")
    assert response.status_code == 405
    assert response.get_json() == {
        "code": 405, "status": "Method Not Allowed", "error": "method_not_allowed",
        "message": "The method is not allowed for the requested URL.",
    }
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_malformed_json_is_400_and_writes_nothing(app, client, operator_headers):
    before = snapshot(app)
    response = client.post("/v1/admin/partners", data='{"code": "acme",',
                           content_type="application/json", headers=operator_headers)
    assert response.status_code == 400
    assert response.get_json() == {
        "code": 400, "status": "Bad Request", "error": "invalid_request",
        "message": "The request is not valid.", "errors": {"_schema": ["Invalid JSON body."]},
    }
    assert snapshot(app) == before


@pytest.mark.parametrize("body", ["[]", "null", '"acme"', "1"])
def test_json_that_is_not_an_object_is_422(app, client, operator_headers, body):
    before = snapshot(app)
    response = client.post("/v1/admin/partners", data=body, content_type="application/json",
                           headers=operator_headers)
    assert response.status_code == 422
    assert response.get_json() == {
        "code": 422, "status": "Unprocessable Entity", "error": "invalid_request",
        "message": "The request is not valid.", "errors": {"_schema": ["Invalid input type."]},
    }
    assert snapshot(app) == before


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain",
                                          "text/csv"])
def test_wrong_content_type_is_415_and_writes_nothing(app, client, operator_headers,
                                                      content_type):
    before = snapshot(app)
    response = client.post("/v1/admin/partners", data="code=acme&name=Acme",
                           content_type=content_type, headers=operator_headers)
    assert response.status_code == 415
    assert response.get_json() == {
        "code": 415, "status": "Unsupported Media Type", "error": "unsupported_media_type",
        "message": "Send the body as application/json.",
    }
    assert snapshot(app) == before


def test_json_with_charset_is_accepted(client, operator_headers):
    response = client.post("/v1/admin/partners", data=json.dumps(PARTNER),
                           content_type="application/json; charset=utf-8",
                           headers=operator_headers)
    assert response.status_code == 201


def test_body_too_large_is_413(app, client, operator_headers):
    before = snapshot(app)
    padding = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    response = client.post("/v1/admin/partners", json={**PARTNER, "name": padding},
                           headers=operator_headers)
    assert response.status_code == 413
    body = response.get_json()
    assert (body["code"], body["status"], body["error"]) == (
        # the reason phrase depends on the Python version (RFC 9110 renamed it)
        413, HTTPStatus(413).phrase, "payload_too_large")
    assert snapshot(app) == before


# --------------------------------------------------------------------------- 500s


@pytest.fixture
def crashing_app(tmp_path) -> Iterator[Flask]:
    """A fresh app with routes that fail in the ways a bug would."""
    app = make_test_app(f"sqlite:///{tmp_path / 'crash.sqlite3'}")

    @app.route("/crash/python")
    def python_error():
        raise RuntimeError("secret internals: password=hunter2 at /srv/coalition")

    @app.route("/crash/database")
    def database_error():
        with db.engine.connect() as conn:
            conn.execute(text("SELECT secret_column FROM no_such_table"))

    @app.route("/crash/abort")
    def aborted():
        abort(500, description="secret internals: stack frame")

    @app.route("/crash/domain")
    def domain_error():
        raise InsufficientPoints("Not enough points.", errors={"points": ["Only 5 available."]})

    @app.route("/crash/domain-headers")
    def domain_error_with_headers():
        raise IdempotencyConflict("Different request.", headers={"Retry-After": "0"})

    with app.app_context():
        yield app
        db.engine.dispose()


@pytest.mark.parametrize("path", ["/crash/python", "/crash/database", "/crash/abort"])
def test_500_never_leaks_internals(crashing_app, path):
    response = crashing_app.test_client().get(path)
    assert response.status_code == 500
    assert response.get_json() == OPAQUE_500
    text_body = response.get_data(as_text=True)
    for leak in ("secret", "hunter2", "no_such_table", "Traceback", "sqlite"):
        assert leak not in text_body


def test_500_is_logged_with_its_cause(crashing_app, caplog):
    # the coalition logger does not propagate to the root logger that caplog watches
    logger = logging.getLogger("coalition")
    logger.addHandler(caplog.handler)
    try:
        crashing_app.test_client().get("/crash/database")
    finally:
        logger.removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors, "the crash was not logged"
    assert any(r.exc_info and isinstance(r.exc_info[1], OperationalError) for r in errors)


def test_domain_errors_map_to_their_status_and_code(crashing_app):
    client = crashing_app.test_client()
    response = client.get("/crash/domain")
    assert response.status_code == 409
    assert response.get_json() == {
        "code": 409, "status": "Conflict", "error": "insufficient_points",
        "message": "Not enough points.", "errors": {"points": ["Only 5 available."]},
    }
    response = client.get("/crash/domain-headers")
    assert response.status_code == 409
    assert response.get_json()["error"] == "idempotency_conflict"
    assert response.headers["Retry-After"] == "0"
