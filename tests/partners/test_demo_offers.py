"""The demo coalition's promotions: the first merchant's own and one it shares with the
coalition, both opt-in, so the demo history books as it always did."""

from __future__ import annotations

import json

from coalition.ledger.check import check_ledger
from tests.conftest import bearer, fetch_token


def test_the_demo_publishes_two_promotions(app, client):
    result = app.test_cli_runner().invoke(args=["demo", "load", "--with-history", "--json"])
    assert result.exit_code == 0, result.output
    demo = json.loads(result.stdout)
    [op] = [c for c in demo["clients"] if c["for"] == "operator"]
    operator = bearer(fetch_token(client, op["client_id"], op["client_secret"]))
    offers = client.get("/v1/admin/offers", headers=operator).get_json()["offers"]
    assert [(o["published_by"], o["partners"], o["cost_share"], o["issued_points"])
            for o in offers] == [
        ("coalition", ["skyline"], {"northwind": "0.5", "coalition": "0.5"}, 0),
        ("northwind", ["northwind"], {"northwind": "1"}, 0)]
    assert check_ledger().ok
