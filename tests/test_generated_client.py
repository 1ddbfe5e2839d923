"""A partner generates a Python client from the live ``/openapi.json`` with
openapi-python-client (as the README says) and runs a till with it: token, enrol, earn,
burn and balance. The document must generate without a warning."""

from __future__ import annotations

import base64
import importlib
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = ROOT / "docs" / "openapi-python-client.yml"


@pytest.fixture
def generated(live_server, tmp_path):
    """The client package, generated from the live server's document into tmp_path."""
    result = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--url",
         f"{live_server.url}/openapi.json", "--meta", "none", "--config", str(CONFIG),
         "--output-path", str(tmp_path / "coalition_client")],
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output and "will not be generated" not in output, output
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("coalition_client")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.split(".")[0] == "coalition_client"]:
            del sys.modules[name]


def test_a_generated_client_runs_a_till(app, live_server, generated):
    from partners.service import create_partner, issue_partner_client

    create_partner(code="northwind", name="Northwind Grocers", kind="merchant", currency="GBP",
                   earn_rate=Decimal("1"), issue_price=Decimal("0.01"),
                   redeem_rate=Decimal("0.008"))
    issued = issue_partner_client("northwind", ["points:earn", "points:burn", "members:read",
                                                "members:write"])
    api = importlib.import_module("coalition_client.api.partner_api")
    oauth = importlib.import_module("coalition_client.api.oauth.post_oauth_token")
    models = importlib.import_module("coalition_client.models")
    for name in ("post_v1_members", "post_v1_earn", "post_v1_burn",
                 "get_v1_members_member_number_balance"):
        importlib.import_module(f"coalition_client.api.partner_api.{name}")

    # the token: client credentials, the client authenticated with HTTP Basic
    basic = base64.b64encode(f"{issued.client_id}:{issued.client_secret}".encode()).decode()
    with generated.AuthenticatedClient(base_url=live_server.url, token=basic,
                                       prefix="Basic") as anonymous:
        token = oauth.sync(client=anonymous, body=models.PostOauthTokenBody(
            grant_type=models.PostOauthTokenBodyGrantType.CLIENT_CREDENTIALS))
    assert token.additional_properties["token_type"] == "Bearer"

    with generated.AuthenticatedClient(
            base_url=live_server.url,
            token=token.additional_properties["access_token"]) as till:
        member = api.post_v1_members.sync(client=till, body=models.Enrol(
            partner_member_ref="cust-1", name="Ada Lovelace"))
        assert isinstance(member, models.Member) and member.activation_code
        earned = api.post_v1_earn.sync(client=till, body=models.Earn(
            partner_txn_id="t-1", member_number=member.member_number,
            spend=models.Money(amount="42.50", currency=models.MoneyCurrency.GBP)))
        assert isinstance(earned, models.Transaction) and earned.points == 42
        spent = api.post_v1_burn.sync(client=till, body=models.Burn(
            partner_txn_id="t-2", member_number=member.member_number, points=30))
        assert isinstance(spent, models.Transaction) and spent.balance.available == 12
        # a refusal arrives as the one error shape, typed
        refused = api.post_v1_burn.sync(client=till, body=models.Burn(
            partner_txn_id="t-3", member_number=member.member_number, points=1000))
        assert isinstance(refused, models.Error) and refused.error == "insufficient_points"
        balance = api.get_v1_members_member_number_balance.sync(
            member.member_number, client=till)
        assert isinstance(balance, models.Balance)
        assert (balance.available, balance.pending, balance.held) == (12, 0, 0)
