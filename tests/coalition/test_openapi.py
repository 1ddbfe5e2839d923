"""The generated OpenAPI document and the interactive docs."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from coalition.oauth.models import ALL_SCOPES
from tests.conftest import make_test_app

METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The document needs no database, so one app serves it for both backends."""
    app = make_test_app(f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'unused.sqlite3'}")
    return app.test_client()


@pytest.fixture(scope="module")
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_document_is_valid_openapi(spec):
    validate(spec)
    assert spec["openapi"] == "3.0.3"
    assert spec["info"]["title"] == "Coalition"
    assert spec["info"]["version"] == "v1"


def test_oauth2_security_scheme_is_declared(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["oauth2"]["type"] == "oauth2"
    # other flows (members' authorization code) may sit beside it
    assert schemes["oauth2"]["flows"]["clientCredentials"] == {
        "tokenUrl": "/oauth/token",
        "scopes": {scope: scope for scope in ALL_SCOPES},
    }
    assert schemes["clientBasic"]["type"] == "http"
    assert schemes["clientBasic"]["scheme"] == "basic"


def test_admin_operations_require_the_admin_scope(spec):
    admin = [(p, m, o) for p, m, o in operations(spec) if p.startswith("/v1/admin/")]
    assert {(p, m) for p, m, _ in admin} >= {
        ("/v1/admin/program", "put"),
        ("/v1/admin/partners", "get"),
        ("/v1/admin/partners", "post"),
        ("/v1/admin/partners/{code}", "get"),
        ("/v1/admin/partners/{code}/rates", "post"),
        ("/v1/admin/partners/{code}/clients", "get"),
        ("/v1/admin/partners/{code}/clients", "post"),
        ("/v1/admin/partners/{code}/clients/{client_id}/secret", "post"),
        ("/v1/admin/partners/{code}/clients/{client_id}", "delete"),
    }
    for path, method, operation in admin:
        assert operation.get("security") == [{"oauth2": ["admin"]}], (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_every_operation_that_can_answer_401_declares_its_security(spec):
    for path, method, operation in operations(spec):
        if "401" in operation["responses"]:
            assert operation.get("security"), (method, path)


def test_public_operations_need_no_token(spec):
    assert "security" not in spec["paths"]["/v1/program"]["get"]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert "security" not in spec  # no global requirement that would cover public calls


def test_oauth_endpoints_take_form_bodies_and_client_authentication(spec):
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"clientBasic": []}, {}]
        assert list(operation["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]


def test_errors_are_documented_in_the_one_shape(spec):
    schema = spec["components"]["schemas"]["Error"]
    assert set(schema["properties"]) == {"code", "status", "message", "error", "errors"}
    assert set(schema["required"]) == {"code", "status", "message", "error"}
    create = spec["paths"]["/v1/admin/partners"]["post"]["responses"]
    assert create["422"] == {"$ref": "#/components/responses/UNPROCESSABLE_ENTITY"}
    assert spec["components"]["responses"]["UNPROCESSABLE_ENTITY"]["content"][
        "application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_money_is_documented_as_decimal_strings(spec):
    partner = spec["components"]["schemas"]["PartnerCreate"]["properties"]
    for field in ("earn_rate", "issue_price", "redeem_rate"):
        assert partner[field]["type"] == "string", field
    assert partner["valid_from"] == {"type": "string", "format": "date-time",
                                     "description": "default: now"}


def test_docs_are_served(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert 'url: "/openapi.json"' in response.get_data(as_text=True)
