"""Rewards: partners publish and change the rewards they fulfil, the operator coalition
rewards; anyone browses the catalog of what is on offer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import snapshot
from tests.factories.ledger import PRICED_FROM
from tests.factories.partner_api import assert_error

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

CINEMA = {"name": "Cinema ticket", "description": "One 2D screening", "kind": "voucher",
          "points": 800, "stock": 100, "per_member_limit": 2, "terms": "Not on Saturdays."}


@pytest.fixture
def acme(make_partner):
    return make_partner("acme", valid_from=PRICED_FROM)


def test_a_partner_publishes_a_reward_and_anyone_sees_it_in_the_catalog(client, acme, clock):
    clock.set(T0)
    _, headers = acme
    created = client.post("/v1/rewards", json=CINEMA, headers=headers)
    assert created.status_code == 201, created.get_json()
    reward = created.get_json()
    assert reward == {**CINEMA, "id": reward["id"], "partner": "acme", "partner_name": "Acme",
                      "coalition": False, "sold": 0, "available": 100, "valid_from": None,
                      "valid_to": None, "active": True, "plan": None}
    public = client.get("/v1/rewards")
    assert public.status_code == 200
    assert public.get_json() == {"items": [reward]}
    assert client.get(f"/v1/rewards/{reward['id']}").get_json() == reward


def test_the_catalog_shows_only_what_is_on_offer_now_but_the_partner_sees_all_its_own(
        client, acme, make_partner, clock):
    clock.set(T0)
    _, headers = acme
    _, bravo_headers = make_partner("bravo", valid_from=PRICED_FROM)

    def publish(headers, **fields):
        response = client.post("/v1/rewards", json={**CINEMA, **fields}, headers=headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    on = publish(headers, name="On offer", points=500)
    later = publish(headers, name="Later", valid_from=(T0 + timedelta(days=1)).isoformat())
    over = publish(headers, name="Over", valid_to=T0.isoformat())
    off = publish(headers, name="Off", active=False)
    other = publish(bravo_headers, name="Bravo's", points=900)
    assert [r["id"] for r in client.get("/v1/rewards").get_json()["items"]] == [on, other]
    mine = client.get("/v1/rewards?mine=true", headers=headers).get_json()["items"]
    assert [r["id"] for r in mine] == [off, over, later, on]
    clock.set(T0 + timedelta(days=1))
    assert [r["id"] for r in client.get("/v1/rewards").get_json()["items"]] == \
        [on, later, other]
    # one's own list needs a partner token
    assert_error(client.get("/v1/rewards?mine=true"), 401, "unauthorized")
    # a withdrawn reward is not shown to the public, even by its id
    assert_error(client.get(f"/v1/rewards/{off}"), 404, "not_found")
    assert client.get(f"/v1/rewards/{later}").status_code == 200


def test_a_partner_changes_its_reward_but_not_below_what_was_sold_nor_anothers(
        app, client, acme, make_partner):
    _, headers = acme
    _, bravo_headers = make_partner("bravo", valid_from=PRICED_FROM)
    reward = client.post("/v1/rewards", json=CINEMA, headers=headers).get_json()
    changed = client.patch(f"/v1/rewards/{reward['id']}", json={"points": 750, "stock": 5,
                                                                  "active": False},
                           headers=headers)
    assert changed.status_code == 200, changed.get_json()
    assert (changed.get_json()["points"], changed.get_json()["stock"],
            changed.get_json()["active"]) == (750, 5, False)

    before = snapshot(app)
    assert_error(client.patch(f"/v1/rewards/{reward['id']}", json={"name": "x"},
                              headers=bravo_headers), 404, "not_found")
    assert_error(client.patch(f"/v1/rewards/{reward['id']}",
                              json={"valid_from": "2026-05-01", "valid_to": "2026-04-01"},
                              headers=headers), 422, "invalid_request", {"valid_to"})
    assert_error(client.patch(f"/v1/rewards/{reward['id']}", json={"points": 0},
                              headers=headers), 422, "invalid_request", {"points"})
    assert_error(client.patch(f"/v1/rewards/{reward['id']}", json={"sold": 3},
                              headers=headers), 422, "invalid_request", {"sold"})
    assert_error(client.patch("/v1/rewards/999999", json={"name": "x"}, headers=headers),
                 404, "not_found")
    assert snapshot(app) == before


@pytest.mark.parametrize(("body", "fields"), [
    ({**CINEMA, "kind": "cash"}, {"kind"}),
    ({**CINEMA, "points": "800"}, {"points"}),
    ({**CINEMA, "points": 0}, {"points"}),
    ({**CINEMA, "stock": -1}, {"stock"}),
    ({**CINEMA, "per_member_limit": 0}, {"per_member_limit"}),
    ({**CINEMA, "valid_from": "2026-05-01", "valid_to": "2026-05-01"}, {"valid_to"}),
    ({**CINEMA, "partner": "bravo"}, {"partner"}),
    ({**CINEMA, "price": 3}, {"price"}),
    ({k: v for k, v in CINEMA.items() if k != "name"}, {"name"}),
])
def test_a_bad_reward_is_refused_and_changes_nothing(app, client, acme, body, fields):
    _, headers = acme
    before = snapshot(app)
    assert_error(client.post("/v1/rewards", json=body, headers=headers), 422,
                 "invalid_request", fields)
    assert snapshot(app) == before


def test_publishing_needs_a_partner_with_points_burn_or_the_operator(
        app, client, make_partner):
    _, read_only = make_partner("acme", scopes=("members:read",), valid_from=PRICED_FROM)
    before = snapshot(app)
    assert_error(client.post("/v1/rewards", json=CINEMA), 401, "unauthorized")
    assert_error(client.post("/v1/rewards", json=CINEMA, headers=read_only), 403,
                 "insufficient_scope")
    assert snapshot(app) == before


def test_the_operator_publishes_a_coalition_reward_fulfilled_by_a_partner_it_names(
        app, client, operator_headers, make_partner):
    _, charity_headers = make_partner("trees", kind="charity", valid_from=PRICED_FROM)
    before = snapshot(app)
    assert_error(client.post("/v1/rewards", json={**CINEMA, "kind": "charity"},
                             headers=operator_headers), 422, "invalid_request", {"partner"})
    assert_error(client.post("/v1/rewards", json={**CINEMA, "partner": "nobody"},
                             headers=operator_headers), 422, "invalid_request", {"partner"})
    assert snapshot(app) == before
    gift = {**CINEMA, "name": "Plant a tree", "kind": "charity", "stock": None,
            "per_member_limit": None, "partner": "trees"}
    created = client.post("/v1/rewards", json=gift, headers=operator_headers)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert (body["coalition"], body["partner"], body["available"]) == (True, "trees", None)
    # the fulfilling partner sees it among its own, but only the operator changes it
    assert [r["id"] for r in client.get("/v1/rewards?mine=true",
                                        headers=charity_headers).get_json()["items"]] == \
        [body["id"]]
    assert_error(client.patch(f"/v1/rewards/{body['id']}", json={"points": 1},
                              headers=charity_headers), 403, "forbidden")
    changed = client.patch(f"/v1/rewards/{body['id']}", json={"points": 300},
                           headers=operator_headers)
    assert changed.status_code == 200 and changed.get_json()["points"] == 300
