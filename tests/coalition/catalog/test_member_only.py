"""Member-only rewards: a reward that names a paid membership plan is redeemed only by a
member holding that plan in force; publishing one names a plan of the program rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import snapshot
from tests.factories.ledger import PRICED_FROM
from tests.factories.member_records import member_token
from tests.factories.partner_api import assert_error, earn, enrol, publish

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PLANS = [{"code": "vip", "name": "VIP", "price_points": 100, "period_months": 1}]
LOUNGE = {"name": "Lounge pass", "kind": "service", "points": 200, "plan": "vip"}


@pytest.fixture
def world(client, operator_headers, make_partner, clock):
    clock.set(T0)
    publish(client, operator_headers, memberships=PLANS)
    _, headers = make_partner("acme", valid_from=PRICED_FROM)
    alice = enrol(client, headers, "alice")
    earn(client, headers, alice, "e1", 1000)
    created = client.post("/v1/rewards", json=LOUNGE, headers=headers)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["plan"] == "vip"
    return alice, headers, created.get_json()["id"]


def test_only_a_member_holding_the_plan_redeems_it(app, client, world) -> None:
    alice, _, reward = world
    token = member_token(alice)
    before = snapshot(app)
    refused = client.post("/v1/me/redemptions", json={"reward_id": reward}, headers=token)
    assert_error(refused, 409, "membership_required", {"reward_id"})
    assert snapshot(app) == before
    bought = client.post("/v1/me/memberships", json={"plan": "vip", "pay_with": "points"},
                         headers=token)
    assert bought.status_code == 201, bought.get_json()
    redeemed = client.post("/v1/me/redemptions", json={"reward_id": reward}, headers=token)
    assert redeemed.status_code == 201, redeemed.get_json()
    assert redeemed.get_json()["points"] == 200
    public = client.get("/v1/rewards").get_json()["items"]
    assert [(r["name"], r["plan"]) for r in public] == [("Lounge pass", "vip")]


def test_a_reward_names_a_plan_of_the_program(app, client, world) -> None:
    _, headers, reward = world
    before = snapshot(app)
    assert_error(client.post("/v1/rewards", json={**LOUNGE, "plan": "gold"},
                             headers=headers), 422, "invalid_request", {"plan"})
    assert_error(client.patch(f"/v1/rewards/{reward}", json={"plan": "gold"},
                              headers=headers), 422, "invalid_request", {"plan"})
    assert snapshot(app) == before
    opened = client.patch(f"/v1/rewards/{reward}", json={"plan": None}, headers=headers)
    assert opened.status_code == 200 and opened.get_json()["plan"] is None
