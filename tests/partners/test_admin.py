"""Operator API for partners, rate cards and partner clients: every refusal is a 4xx in the
one error shape and writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import fetch_token, snapshot

PARTNER = {"code": "northwind", "name": "Northwind Grocers", "kind": "merchant",
           "currency": "GBP", "earn_rate": "1", "issue_price": "0.0100",
           "redeem_rate": "0.008", "valid_from": "2026-01-01"}
INVALID = {"code": 422, "status": "Unprocessable Entity", "error": "invalid_request",
           "message": "The request is not valid."}
DECIMAL = "Not a decimal string (digits with an optional '.'; no exponent)."


@pytest.fixture
def admin(client, operator_headers):
    """``admin(method, path, json=…)`` with the operator's token."""

    def call(method: str, path: str, **kwargs):
        return getattr(client, method)(path, headers=operator_headers, **kwargs)

    return call


@pytest.fixture
def northwind(admin):
    response = admin("post", "/v1/admin/partners", json=PARTNER)
    assert response.status_code == 201
    return response.get_json()


def refused(app, response_factory, status: int, body: dict):
    """Call, check the exact refusal, and that the database is untouched."""
    before = snapshot(app)
    response = response_factory()
    assert response.status_code == status, response.get_json()
    assert response.get_json() == body
    assert snapshot(app) == before


# --------------------------------------------------------------------------- partners


def test_create_partner(admin, northwind):
    card = {"valid_from": "2026-01-01T00:00:00Z", "earn_rate": "1", "issue_price": "0.01",
            "redeem_rate": "0.008"}
    created_at = northwind.pop("created_at")
    assert northwind == {"code": "northwind", "name": "Northwind Grocers", "kind": "merchant",
                         "currency": "GBP", "status": "active", "current_rate": card,
                         "rate_cards": [card]}
    assert created_at.endswith("Z")

    one = admin("get", "/v1/admin/partners/northwind")
    assert one.status_code == 200
    assert one.get_json() == {**northwind, "created_at": created_at}
    listed = admin("get", "/v1/admin/partners")
    assert listed.status_code == 200
    assert listed.get_json() == [{**northwind, "created_at": created_at}]


def test_valid_from_defaults_to_now_and_honours_offsets(admin):
    body = {k: v for k, v in PARTNER.items() if k != "valid_from"}
    created = admin("post", "/v1/admin/partners", json=body).get_json()
    valid_from = datetime.fromisoformat(created["current_rate"]["valid_from"])
    assert abs(datetime.now(UTC) - valid_from) < timedelta(minutes=1)

    offset = admin("post", "/v1/admin/partners",
                   json={**PARTNER, "code": "skyline", "valid_from": "2026-01-01T09:30:00+02:00"})
    assert offset.status_code == 201
    assert offset.get_json()["rate_cards"][0]["valid_from"] == "2026-01-01T07:30:00Z"


@pytest.mark.parametrize("field", ["code", "name", "kind", "currency", "earn_rate",
                                   "issue_price", "redeem_rate"])
def test_create_partner_missing_field(app, admin, field):
    body = {k: v for k, v in PARTNER.items() if k != field}
    refused(app, lambda: admin("post", "/v1/admin/partners", json=body), 422,
            {**INVALID, "errors": {field: ["Missing data for required field."]}})


CODE_RULE = "2 to 32 characters: lower-case letters, digits and '-', starting with a letter."


@pytest.mark.parametrize(("field", "value", "message"), [
    ("code", "North", CODE_RULE),
    ("code", "n", CODE_RULE),
    ("code", "9lives", CODE_RULE),
    ("code", "a" * 33, CODE_RULE),
    ("code", "nw_1", CODE_RULE),
    ("code", 7, "Not a valid string."),
    ("name", "", "Length must be between 1 and 200."),
    ("kind", "bank", "Must be one of: merchant, charity."),
    ("currency", "XXX", "Not a supported ISO 4217 currency code."),
    ("currency", "gbp", "Not a supported ISO 4217 currency code."),
    ("earn_rate", 1.5, DECIMAL),
    ("earn_rate", 1, DECIMAL),
    ("issue_price", "1e-2", DECIMAL),
    ("issue_price", "1E2", DECIMAL),
    ("issue_price", "NaN", DECIMAL),
    ("issue_price", "0.1.2", DECIMAL),
    ("issue_price", "", DECIMAL),
    ("redeem_rate", "-0.008", "Must not be negative."),
    ("redeem_rate", "0.000000001", "At most 8 decimal places."),
    ("redeem_rate", "12345678901234567", "Too large."),
    ("valid_from", "2026-01-01T00:00:00", "A timestamp needs a UTC offset, "
                                          "e.g. 2026-01-31T12:00:00Z."),
    ("valid_from", "2026-02-30", "Not an RFC 3339 timestamp or a date (YYYY-MM-DD)."),
    ("valid_from", "yesterday", "Not an RFC 3339 timestamp or a date (YYYY-MM-DD)."),
    ("valid_from", 1767225600, "Not an RFC 3339 timestamp or a date (YYYY-MM-DD)."),
])
def test_create_partner_invalid_field(app, admin, field, value, message):
    body = {**PARTNER, field: value}
    refused(app, lambda: admin("post", "/v1/admin/partners", json=body), 422,
            {**INVALID, "errors": {field: [message]}})


def test_create_partner_unknown_field(app, admin):
    body = {**PARTNER, "status": "suspended", "credit_limit": "100"}
    refused(app, lambda: admin("post", "/v1/admin/partners", json=body), 422,
            {**INVALID, "errors": {"status": ["Unknown field."],
                                   "credit_limit": ["Unknown field."]}})


def test_create_partner_duplicate_code(app, admin, northwind):
    body = {**PARTNER, "name": "Another Northwind"}
    refused(app, lambda: admin("post", "/v1/admin/partners", json=body), 409, {
        "code": 409, "status": "Conflict", "error": "already_exists",
        "message": "A partner with code 'northwind' exists.",
        "errors": {"code": ["Already taken."]}})


@pytest.mark.parametrize("code", ["coalition", "total", "operator", "clearing"])
def test_a_name_settlement_uses_for_itself_is_not_a_partner_code(app, admin, code):
    """``coalition`` is the coalition's own party in every run (its matrix, positions and
    payments); a partner of that name would be netted with it."""
    message = f"{code!r} is reserved: settlement uses it for itself."
    refused(app, lambda: admin("post", "/v1/admin/partners", json={**PARTNER, "code": code}),
            422, {**INVALID, "message": message, "errors": {"code": [message]}})


def test_unknown_partner(app, admin):
    refused(app, lambda: admin("get", "/v1/admin/partners/nobody"), 404, {
        "code": 404, "status": "Not Found", "error": "not_found",
        "message": "No partner 'nobody'."})


def test_malformed_json(app, admin):
    refused(app, lambda: admin("post", "/v1/admin/partners", data='{"code": ',
                               content_type="application/json"), 400, {
        "code": 400, "status": "Bad Request", "error": "invalid_request",
        "message": "The request is not valid.", "errors": {"_schema": ["Invalid JSON body."]}})


def test_wrong_content_type(app, admin):
    refused(app, lambda: admin("post", "/v1/admin/partners", data="code=northwind",
                               content_type="application/x-www-form-urlencoded"), 415, {
        "code": 415, "status": "Unsupported Media Type", "error": "unsupported_media_type",
        "message": "Send the body as application/json."})


def test_unknown_path_and_method(app, admin, northwind):
    response = admin("get", "/v1/admin/partnerz")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    refused(app, lambda: admin("delete", "/v1/admin/partners/northwind"), 405, {
        "code": 405, "status": "Method Not Allowed", "error": "method_not_allowed",
        "message": "The method is not allowed for the requested URL."})


def test_admin_api_needs_an_operator_token(app, client, make_partner):
    _, partner_headers = make_partner("acme")
    before = snapshot(app)
    anonymous = client.post("/v1/admin/partners", json=PARTNER)
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"] == "unauthorized"
    partner = client.post("/v1/admin/partners", json=PARTNER, headers=partner_headers)
    assert partner.status_code == 403
    assert partner.get_json()["error"] == "insufficient_scope"
    assert snapshot(app) == before


# --------------------------------------------------------------------------- rate cards


def test_add_rate_card_carries_over_prices_and_keeps_history(admin, northwind):
    response = admin("post", "/v1/admin/partners/northwind/rates",
                     json={"valid_from": "2026-06-01T00:00:00Z", "redeem_rate": "0.009"})
    assert response.status_code == 201
    assert response.get_json() == {"valid_from": "2026-06-01T00:00:00Z", "earn_rate": "1",
                                   "issue_price": "0.01", "redeem_rate": "0.009"}
    future = admin("post", "/v1/admin/partners/northwind/rates",
                   json={"valid_from": "2999-01-01", "earn_rate": "2"})
    assert future.status_code == 201

    partner = admin("get", "/v1/admin/partners/northwind").get_json()
    assert [c["valid_from"] for c in partner["rate_cards"]] == [
        "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "2999-01-01T00:00:00Z"]
    # the card in force now, not the future one
    assert partner["current_rate"] == {"valid_from": "2026-06-01T00:00:00Z", "earn_rate": "1",
                                       "issue_price": "0.01", "redeem_rate": "0.009"}


@pytest.mark.parametrize("valid_from", ["2026-01-01", "2026-01-01T00:00:00Z",
                                        "2026-01-01T01:00:00+01:00", "2026-03-01"])
def test_rate_card_must_start_after_the_latest_or_before_the_first(app, admin, northwind,
                                                                   valid_from):
    later = admin("post", "/v1/admin/partners/northwind/rates",
                  json={"valid_from": "2026-06-01", "earn_rate": "3"})
    assert later.status_code == 201
    message = ("valid_from must be after the latest rate card (2026-06-01T00:00:00+00:00) "
               "or before the first (2026-01-01T00:00:00+00:00).")
    refused(app, lambda: admin("post", "/v1/admin/partners/northwind/rates",
                               json={"valid_from": valid_from, "earn_rate": "2"}), 422, {
        **INVALID, "message": message, "errors": {"valid_from": [message]}})


def test_a_card_before_the_first_brings_the_partner_start_forward(app, admin, northwind):
    """A partner whose first card was set to start too late is repaired by an earlier one;
    prices not given carry over from the first card."""
    response = admin("post", "/v1/admin/partners/northwind/rates",
                     json={"valid_from": "2025-12-01", "redeem_rate": "0.007"})
    assert response.status_code == 201
    assert response.get_json() == {"valid_from": "2025-12-01T00:00:00Z", "earn_rate": "1",
                                   "issue_price": "0.01", "redeem_rate": "0.007"}
    partner = admin("get", "/v1/admin/partners/northwind").get_json()
    assert [c["valid_from"] for c in partner["rate_cards"]] == [
        "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"]


def test_rate_card_needs_a_price(app, admin, northwind):
    message = "Give at least one of earn_rate, issue_price, redeem_rate."
    refused(app, lambda: admin("post", "/v1/admin/partners/northwind/rates",
                               json={"valid_from": "2026-06-01"}), 422, {
        **INVALID, "message": message, "errors": {"_schema": [message]}})


@pytest.mark.parametrize(("body", "errors"), [
    ({"earn_rate": "2"}, {"valid_from": ["Missing data for required field."]}),
    ({"valid_from": "2026-06-01", "earn_rate": 2.5}, {"earn_rate": [DECIMAL]}),
    ({"valid_from": "2026-06-01", "issue_price": "-1"},
     {"issue_price": ["Must not be negative."]}),
    ({"valid_from": "2026-06-01T00:00:00", "issue_price": "1"},
     {"valid_from": ["A timestamp needs a UTC offset, e.g. 2026-01-31T12:00:00Z."]}),
    ({"valid_from": "2026-06-01", "currency": "EUR"}, {"currency": ["Unknown field."]}),
])
def test_rate_card_invalid_fields(app, admin, northwind, body, errors):
    refused(app, lambda: admin("post", "/v1/admin/partners/northwind/rates", json=body), 422,
            {**INVALID, "errors": errors})


def test_rate_card_for_unknown_partner(app, admin):
    refused(app, lambda: admin("post", "/v1/admin/partners/nobody/rates",
                               json={"valid_from": "2026-06-01", "earn_rate": "2"}), 404, {
        "code": 404, "status": "Not Found", "error": "not_found",
        "message": "No partner 'nobody'."})


# --------------------------------------------------------------------------- clients


def test_issue_and_list_partner_clients(app, admin, client, northwind):
    response = admin("post", "/v1/admin/partners/northwind/clients",
                     json={"scopes": ["points:earn", "transactions:read", "points:earn"],
                           "name": "till"})
    assert response.status_code == 201
    issued = response.get_json()
    assert set(issued) == {"client_id", "client_secret", "scopes"}
    assert issued["scopes"] == ["points:earn", "transactions:read"]
    token = fetch_token(client, issued["client_id"], issued["client_secret"])
    assert token

    listed = admin("get", "/v1/admin/partners/northwind/clients")
    assert listed.status_code == 200
    [row] = listed.get_json()
    assert row["client_id"] == issued["client_id"]
    assert row["name"] == "till"
    assert row["scopes"] == ["points:earn", "transactions:read"]
    assert row["revoked_at"] is None and row["secret_rotated_at"] is None
    assert issued["client_secret"] not in listed.get_data(as_text=True)


@pytest.mark.parametrize(("body", "errors"), [
    ({"scopes": ["admin"]}, {"scopes": {"0": [
        "Must be one of: points:earn, points:burn, members:read, members:write, "
        "transactions:read, settlement:read."]}}),
    ({"scopes": ["points:earn", "settlement:run"]}, {"scopes": {"1": [
        "Must be one of: points:earn, points:burn, members:read, members:write, "
        "transactions:read, settlement:read."]}}),
    ({"scopes": []}, {"scopes": ["Shorter than minimum length 1."]}),
    ({"scopes": "points:earn"}, {"scopes": ["Not a valid list."]}),
    ({}, {"scopes": ["Missing data for required field."]}),
    ({"scopes": ["points:earn"], "secret": "mine"}, {"secret": ["Unknown field."]}),
])
def test_issue_client_invalid(app, admin, northwind, body, errors):
    refused(app, lambda: admin("post", "/v1/admin/partners/northwind/clients", json=body), 422,
            {**INVALID, "errors": errors})


def test_issue_client_for_unknown_partner(app, admin):
    refused(app, lambda: admin("post", "/v1/admin/partners/nobody/clients",
                               json={"scopes": ["points:earn"]}), 404, {
        "code": 404, "status": "Not Found", "error": "not_found",
        "message": "No partner 'nobody'."})


@pytest.mark.parametrize("method, suffix", [("post", "/secret"), ("delete", "")])
def test_unknown_client(app, admin, northwind, method, suffix):
    refused(app, lambda: admin(method, f"/v1/admin/partners/northwind/clients/pt_nobody{suffix}"),
            404, {"code": 404, "status": "Not Found", "error": "not_found",
                  "message": "No active client pt_nobody."})
