"""The ``coalition`` command: bootstrapping clients, onboarding partners, the demo."""

from __future__ import annotations

import json

import pytest

from coalition.oauth.models import PARTNER_SCOPES
from tests.conftest import basic_auth, fetch_token, snapshot


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args: str):
        return runner.invoke(args=list(args))

    return invoke


def token_response(client, credentials):
    return client.post("/oauth/token", data={"grant_type": "client_credentials"},
                       headers=basic_auth(credentials["client_id"],
                                          credentials["client_secret"]))


# --------------------------------------------------------------------------- clients


def test_client_create_operator_json(cli, client):
    result = cli("client", "create", "--operator", "--scope", "admin settlement:run", "--json")
    assert result.exit_code == 0, result.output
    issued = json.loads(result.output)
    assert set(issued) == {"client_id", "client_secret", "scopes"}
    assert issued["client_id"].startswith("op_")
    assert issued["scopes"] == ["admin", "settlement:run"]
    response = token_response(client, issued)
    assert response.status_code == 200
    assert response.get_json()["scope"] == "admin settlement:run"


def test_client_create_text_shows_the_secret_once(cli):
    result = cli("client", "create", "--operator", "--scope", "admin")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("client_id:     op_")
    assert lines[1].startswith("client_secret: ") and lines[1].endswith("(shown once)")
    assert lines[2] == "scopes:        admin"


@pytest.mark.parametrize(("scope", "message"), [
    ("points:earn", "Not an operator scope: points:earn. Allowed: admin, settlement:run."),
    ("", "At least one scope is required."),
])
def test_client_create_refuses_other_scopes(app, cli, scope, message):
    before = snapshot(app)
    result = cli("client", "create", "--operator", "--scope", scope)
    assert result.exit_code == 2
    assert f"Error: {message}" in result.output
    assert snapshot(app) == before


def test_client_create_needs_operator(cli):
    result = cli("client", "create", "--scope", "admin")
    assert result.exit_code == 2
    assert "Missing option '--operator'" in result.output


def test_client_list_and_revoke(cli, client):
    issued = json.loads(cli("client", "create", "--operator", "--scope", "admin",
                            "--json").output)
    token = fetch_token(client, issued["client_id"], issued["client_secret"])

    listed = cli("client", "list", "--json")
    assert listed.exit_code == 0
    assert json.loads(listed.output) == [{"client_id": issued["client_id"], "kind": "operator",
                                          "scopes": ["admin"], "revoked": False}]
    assert issued["client_secret"] not in listed.output

    revoked = cli("client", "revoke", issued["client_id"])
    assert revoked.exit_code == 0
    assert revoked.output == f"revoked {issued['client_id']}\n"
    assert client.get("/v1/admin/partners",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert token_response(client, issued).status_code == 401
    assert json.loads(cli("client", "list", "--json").output)[0]["revoked"] is True

    again = cli("client", "revoke", issued["client_id"])
    assert again.exit_code == 1
    assert f"Error: No active client {issued['client_id']}." in again.output


# --------------------------------------------------------------------------- partners


PARTNER_ARGS = ("--code", "northwind", "--name", "Northwind Grocers", "--currency", "GBP",
                "--earn-rate", "1", "--issue-price", "0.01", "--redeem-rate", "0.008")


def test_partner_create_and_list(cli):
    created = cli("partner", "create", *PARTNER_ARGS, "--json")
    assert created.exit_code == 0, created.output
    partner = json.loads(created.output)
    assert {k: partner[k] for k in ("code", "name", "kind", "currency", "status")} == {
        "code": "northwind", "name": "Northwind Grocers", "kind": "merchant",
        "currency": "GBP", "status": "active"}
    assert {k: v for k, v in partner["current_rate"].items() if k != "valid_from"} == {
        "earn_rate": "1", "issue_price": "0.01", "redeem_rate": "0.008"}

    charity = cli("partner", "create", "--code", "greenhearts", "--name", "Green Hearts",
                  "--kind", "charity", "--currency", "EUR", "--earn-rate", "0",
                  "--issue-price", "0", "--redeem-rate", "0.01")
    assert charity.exit_code == 0, charity.output
    assert charity.output.split() == ["greenhearts", "charity", "EUR", "earn", "0", "issue",
                                      "0", "redeem", "0.01", "Green", "Hearts"]

    listed = cli("partner", "list", "--json")
    assert listed.exit_code == 0
    assert [(p["code"], p["kind"], p["currency"]) for p in json.loads(listed.output)] == [
        ("greenhearts", "charity", "EUR"), ("northwind", "merchant", "GBP")]


def test_partner_list_when_empty(cli):
    assert cli("partner", "list").output == "no partners\n"
    assert json.loads(cli("partner", "list", "--json").output) == []


@pytest.mark.parametrize(("replace", "field"), [
    (("--currency", "XXX"), "currency"),
    (("--code", "North Wind"), "code"),
    (("--earn-rate", "1e3"), "earn_rate"),
    (("--issue-price", "-0.01"), "issue_price"),
])
def test_partner_create_refuses_bad_input(app, cli, replace, field):
    args = list(PARTNER_ARGS)
    args[args.index(replace[0]) + 1] = replace[1]
    before = snapshot(app)
    result = cli("partner", "create", *args)
    assert result.exit_code == 2
    assert f"'{field}'" in result.output
    assert snapshot(app) == before


def test_partner_create_refuses_a_taken_code(app, cli):
    assert cli("partner", "create", *PARTNER_ARGS).exit_code == 0
    before = snapshot(app)
    result = cli("partner", "create", *PARTNER_ARGS)
    assert result.exit_code == 1
    assert "Error: A partner with code 'northwind' exists." in result.output
    assert snapshot(app) == before


def test_partner_client(cli, client):
    assert cli("partner", "create", *PARTNER_ARGS).exit_code == 0
    result = cli("partner", "client", "northwind", "--scope", "points:earn points:burn",
                 "--json")
    assert result.exit_code == 0, result.output
    issued = json.loads(result.output)
    assert issued["client_id"].startswith("pt_")
    assert issued["scopes"] == ["points:earn", "points:burn"]
    assert token_response(client, issued).get_json()["scope"] == "points:earn points:burn"

    unknown = cli("partner", "client", "nobody", "--scope", "points:earn")
    assert unknown.exit_code == 1
    assert "Error: No partner 'nobody'." in unknown.output
    admin = cli("partner", "client", "northwind", "--scope", "admin")
    assert admin.exit_code == 1
    assert "Not a partner scope: admin." in admin.output


# --------------------------------------------------------------------------- demo and db


def test_demo_load_once(app, cli, client):
    result = cli("demo", "load", "--json")
    assert result.exit_code == 0, result.output
    loaded = json.loads(result.output)
    assert loaded["loaded"] is True
    assert [c["for"] for c in loaded["clients"]] == [
        "operator", "northwind", "skyline", "greenhearts"]
    operator = loaded["clients"][0]
    assert operator["scopes"] == ["admin", "settlement:run"]
    assert all(c["scopes"] == list(PARTNER_SCOPES) for c in loaded["clients"][1:])
    # every secret printed works
    for credentials in loaded["clients"]:
        assert token_response(client, credentials).status_code == 200

    program = client.get("/v1/program").get_json()
    assert program["version"] == 1
    assert [t["code"] for t in program["tiers"]] == ["blue", "silver", "gold"]
    assert [(p["code"], p["earn_rate"]) for p in program["partners"]] == [
        ("greenhearts", "0"), ("northwind", "1"), ("skyline", "2")]

    before = snapshot(app)
    again = cli("demo", "load")
    assert again.exit_code == 0
    assert again.output == "demo coalition already loaded\n"
    assert json.loads(cli("demo", "load", "--json").output) == {"loaded": False}
    assert snapshot(app) == before


def test_demo_load_text_lists_the_secrets(cli):
    result = cli("demo", "load")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "Demo coalition loaded. These secrets are shown once:"
    assert [line.split()[0] for line in lines[1:]] == [
        "operator", "northwind", "skyline", "greenhearts"]


def test_db_check(cli):
    result = cli("db", "check")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("schema matches the models\n")
