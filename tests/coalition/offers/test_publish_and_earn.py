"""Promotions: published by a partner or the operator, applied to earns in force with
their lines, within their cap, for the members they target, opt-in ones once activated;
refused input changes nothing; the ledger check stays clean."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from coalition.db import read
from coalition.ledger.check import check_ledger
from coalition.notifications.models import Notification
from coalition.oauth.models import PARTNER_SCOPES
from tests.conftest import snapshot
from tests.factories.clock import HandClock
from tests.factories.ledger import postings
from tests.factories.member_records import member_id, member_token
from tests.factories.partner_api import assert_error, earn, enrol, post_ok, publish
from tests.factories.tokens import partner_headers


def _when(clock: HandClock, **delta: float) -> str:
    return (clock() + timedelta(**delta)).isoformat()


def offer(clock: HandClock, **fields: Any) -> dict[str, Any]:
    body = {"name": "Double points", "rule": "multiplier", "multiplier": "2",
            "valid_from": _when(clock, days=-1), "valid_to": _when(clock, days=30),
            "opt_in": False, "cap_points": 1000}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def spend(amount: str) -> dict[str, Any]:
    return {"spend": {"amount": amount, "currency": "GBP"}}


def assert_ledger_clean() -> None:
    report = check_ledger()
    assert report.ok, json.dumps(report.to_dict(), default=str, indent=1)


@pytest.fixture
def coalition(client: FlaskClient, operator_headers: dict[str, str], make_partner: Any,
              clock: HandClock) -> dict[str, Any]:
    publish(client, operator_headers)
    _, acme = make_partner("acme")
    _, bolt = make_partner("bolt")
    return {"acme": acme, "bolt": bolt, "operator": operator_headers,
            "member": enrol(client, acme, "c1")}


def test_a_partner_promotion_adds_its_points_as_a_line(client, coalition, clock, app):
    acme = coalition["acme"]
    published = post_ok(client, "/v1/offers", acme, offer(clock))
    assert published["cost_share"] == {"acme": "1"} and published["partners"] == ["acme"]
    assert published["issued_points"] == 0 and published["published_by"] == "acme"

    answer = earn(client, acme, coalition["member"], "t-1", **spend("25.40"))
    assert answer["points"] == 50
    assert answer["lines"] == [
        {"kind": "base", "points": 25},
        {"kind": "promotion", "offer_id": published["id"], "name": "Double points",
         "points": 25}]
    assert answer["balance"]["available"] == 50
    with app.app_context():
        assert postings(answer["id"]) == {
            ("partner:issued", None, _partner_id(app, "acme"), -25),
            ("promotion:funded", None, _partner_id(app, "acme"), -25),
            ("member:available", member_id(coalition["member"]), None, 50)}
        assert_ledger_clean()
    # a replay answers the same, lines included
    again = client.post("/v1/earn", json={"member_number": coalition["member"],
                                          "partner_txn_id": "t-1", **spend("25.40")},
                        headers=acme)
    assert again.status_code == 201 and again.get_json() == answer
    # an earn of given points gets no promotion; another partner's earn neither
    given = earn(client, acme, coalition["member"], "t-2", points=10)
    assert given["points"] == 10 and given["lines"] == [{"kind": "base", "points": 10}]
    other = earn(client, coalition["bolt"], coalition["member"], "t-3", **spend("10"))
    assert other["points"] == 10 and len(other["lines"]) == 1
    listed = client.get("/v1/offers", headers=acme).get_json()["offers"]
    assert [(o["id"], o["issued_points"]) for o in listed] == [(published["id"], 25)]
    assert client.get("/v1/offers", headers=coalition["bolt"]).get_json() == {"offers": []}


def _partner_id(app, code: str) -> int:
    from sqlalchemy import select

    from coalition.models import Partner
    with read() as session:
        return session.scalars(select(Partner.id).where(Partner.code == code)).one()


def test_the_cap_gives_what_is_left_then_nothing(client, coalition, clock, app):
    acme = coalition["acme"]
    post_ok(client, "/v1/offers", acme,
            offer(clock, rule="bonus", multiplier=None, bonus_points=40, cap_points=100))
    answers = [earn(client, acme, coalition["member"], f"t-{i}", **spend("10"))
               for i in range(4)]
    # 40 + 40 + the 20 left + nothing: the base earn always books
    assert [sum(line["points"] for line in a["lines"] if line["kind"] == "promotion")
            for a in answers] == [40, 40, 20, 0]
    assert all(a["points"] == sum(line["points"] for line in a["lines"]) for a in answers)
    listed = client.get("/v1/offers", headers=acme).get_json()["offers"]
    assert listed[0]["issued_points"] == 100
    with app.app_context():
        assert_ledger_clean()


def test_an_opt_in_offer_applies_once_activated(client, coalition, clock, app):
    acme = coalition["acme"]
    published = post_ok(client, "/v1/offers", acme,
                        offer(clock, opt_in=True, name="Activate for double"))
    with app.app_context():
        headers = member_token(coalition["member"])
    seen = client.get("/v1/me/offers", headers=headers).get_json()["offers"]
    assert [(o["id"], o["opt_in"], o["activated"]) for o in seen] == [
        (published["id"], True, False)]
    assert seen[0]["partners"] == [{"code": "acme", "name": "Acme"}]
    assert earn(client, acme, coalition["member"], "t-1", **spend("10"))["points"] == 10

    activated = post_ok(client, f"/v1/me/offers/{published['id']}/activate", headers, {},
                        status=200)
    assert activated["activated"] is True and activated["activated_at"]
    again = post_ok(client, f"/v1/me/offers/{published['id']}/activate", headers, {},
                    status=200)
    assert again == activated
    assert earn(client, acme, coalition["member"], "t-2", **spend("10"))["points"] == 20
    with app.app_context():
        assert_ledger_clean()


def test_targets_tiers_and_new_members(client, coalition, clock, app):
    acme = coalition["acme"]
    post_ok(client, "/v1/offers", acme, offer(clock, tiers=["silver"], name="Silver",
                                              valid_to=_when(clock, days=90)))
    post_ok(client, "/v1/offers", acme, offer(clock, new_member_days=30, name="Welcome",
                                              rule="bonus", multiplier=None,
                                              bonus_points=5))
    member = coalition["member"]  # blue, enrolled now
    answer = earn(client, acme, member, "t-1", **spend("10"))
    assert [line.get("name") for line in answer["lines"]] == [None, "Welcome"]
    clock.advance(days=31)
    acme = partner_headers(client, "acme", PARTNER_SCOPES)  # the first token expired
    answer = earn(client, acme, member, "t-2", **spend("10"))
    assert answer["lines"] == [{"kind": "base", "points": 10}]
    # 100 qualifying points make the member silver: the silver promotion applies then
    earn(client, acme, member, "t-3", **spend("100"))
    answer = earn(client, acme, member, "t-4", **spend("10"))
    assert [line.get("name") for line in answer["lines"]] == [None, "Silver"]
    assert answer["points"] == 40  # silver's × 2, then the promotion's × 2
    with app.app_context():
        assert_ledger_clean()


def test_the_operator_publishes_a_shared_promotion_and_members_are_told(
        client, coalition, clock, app):
    enrol(client, coalition["acme"], "c2")
    published = post_ok(client, "/v1/admin/offers", coalition["operator"], offer(
        clock, name="Shared", multiplier="1.5", partners=["acme", "bolt"],
        cost_share={"acme": "0.25", "bolt": "0.25", "coalition": "0.5"}))
    assert published["cost_share"] == {"acme": "0.25", "bolt": "0.25", "coalition": "0.5"}
    assert published["published_by"] == "coalition"
    answer = earn(client, coalition["bolt"], coalition["member"], "t-1", **spend("101"))
    assert answer["points"] == 151 and answer["lines"][1]["points"] == 50
    with app.app_context():
        acme, bolt = _partner_id(app, "acme"), _partner_id(app, "bolt")
        assert postings(answer["id"]) == {
            ("partner:issued", None, bolt, -101),
            ("promotion:funded", None, acme, -12),
            ("promotion:funded", None, bolt, -13),
            ("promotion:funded", None, None, -25),
            ("member:available", member_id(coalition["member"]), None, 151)}
        assert_ledger_clean()
        with read() as session:
            told = session.query(Notification.key, Notification.kind).filter(
                Notification.kind == "offer").all()
        # (the earn above also moved the member up a tier, which is told as well)
        assert sorted(told) == [(f"offer:{published['id']}", "offer")] * 2
    audit = client.get("/v1/admin/audit", headers=coalition["operator"]).get_json()
    assert any(e["action"] == "offer.published" for e in audit["items"])


@pytest.mark.parametrize(("path", "changes", "fields"), [
    ("/v1/offers", {"multiplier": "1"}, {"multiplier"}),
    ("/v1/offers", {"multiplier": None, "rule": "bonus"}, {"bonus_points"}),
    ("/v1/offers", {"bonus_points": 5}, {"bonus_points"}),
    ("/v1/offers", {"multiplier": 2}, {"multiplier"}),
    ("/v1/offers", {"cap_points": 0}, {"cap_points"}),
    ("/v1/offers", {"tiers": ["gold"]}, {"tiers"}),
    ("/v1/offers", {"cost_share": {"acme": "0.5", "bolt": "0.5"}}, {"cost_share"}),
    ("/v1/offers", {"surprise": 1}, {"surprise"}),
    ("/v1/offers", {"opt_in": "yes"}, {"opt_in"}),
    ("/v1/admin/offers", {"partners": ["acme"], "cost_share": {"acme": "0.5",
                                                                "coalition": "0.4"}},
     {"cost_share"}),
    ("/v1/admin/offers", {"partners": ["nope"], "cost_share": {"coalition": "1"}},
     {"partners"}),
    ("/v1/admin/offers", {"partners": ["acme"], "cost_share": {"nope": "1"}},
     {"cost_share"}),
    ("/v1/admin/offers", {"partners": ["acme"], "cost_share": {"acme": "0"}},
     {"cost_share"}),
])
def test_a_bad_promotion_is_refused_and_changes_nothing(client, coalition, clock, app, path,
                                                         changes, fields):
    headers = coalition["acme"] if path == "/v1/offers" else coalition["operator"]
    body = {k: v for k, v in {**offer(clock), **changes}.items() if v is not None}
    before = snapshot(app)
    assert_error(client.post(path, json=body, headers=headers), 422, "invalid_request",
                 fields)
    assert snapshot(app) == before


def test_periods_in_the_past_and_the_wrong_callers_are_refused(client, coalition, clock, app):
    before = snapshot(app)
    assert_error(client.post("/v1/offers", json=offer(clock, valid_from=_when(clock, days=-9),
                                                      valid_to=_when(clock, days=-1)),
                             headers=coalition["acme"]), 422, "invalid_request", {"valid_to"})
    assert_error(client.post("/v1/offers", json=offer(clock), headers={}), 401,
                 "unauthorized")
    assert_error(client.post("/v1/admin/offers", json=offer(clock),
                             headers=coalition["acme"]), 403, "insufficient_scope")
    assert snapshot(app) == before


def test_activation_of_what_is_not_open_is_refused(client, coalition, clock, app):
    plain = post_ok(client, "/v1/offers", coalition["acme"], offer(clock))
    silver = post_ok(client, "/v1/offers", coalition["acme"],
                     offer(clock, opt_in=True, tiers=["silver"]))
    with app.app_context():
        headers = member_token(coalition["member"])
    before = snapshot(app)
    assert_error(client.post(f"/v1/me/offers/{plain['id']}/activate", headers=headers),
                 422, "invalid_request")
    for missing in (silver["id"], 999999, 2**63 - 1):
        assert_error(client.post(f"/v1/me/offers/{missing}/activate", headers=headers),
                     404, "not_found")
    assert snapshot(app) == before
    seen = client.get("/v1/me/offers", headers=headers).get_json()["offers"]
    assert [o["id"] for o in seen] == [plain["id"]]


def test_reversals_give_back_each_funders_share_in_proportion(client, coalition, clock, app):
    post_ok(client, "/v1/admin/offers", coalition["operator"], offer(
        clock, name="Shared", multiplier="1.5", partners=["bolt"],
        cost_share={"acme": "0.25", "bolt": "0.25", "coalition": "0.5"}))
    bolt = coalition["bolt"]
    earned = earn(client, bolt, coalition["member"], "t-1", **spend("101"))
    assert earned["points"] == 151  # 101 of bolt's own; 12 acme, 13 bolt, 25 coalition
    half = post_ok(client, f"/v1/transactions/{earned['id']}/reversals", bolt,
                   {"partner_txn_id": "r-1", "refund": {"amount": "50.50", "currency": "GBP"}})
    rest = post_ok(client, f"/v1/transactions/{earned['id']}/reversals", bolt,
                   {"partner_txn_id": "r-2"})
    assert (half["points"], rest["points"]) == (75, 76)
    with app.app_context():
        acme_id, bolt_id = _partner_id(app, "acme"), _partner_id(app, "bolt")
        member = member_id(coalition["member"])
        # ⌊issued so far × 75 / 151⌋ at each part: 50, 56, 62, 75
        assert postings(half["id"]) == {
            ("partner:issued", None, bolt_id, 50), ("promotion:funded", None, acme_id, 6),
            ("promotion:funded", None, bolt_id, 6), ("promotion:funded", None, None, 13),
            ("member:available", member, None, -75)}
        # the rest: exactly what each issued, less what the first part gave back
        assert postings(rest["id"]) == {
            ("partner:issued", None, bolt_id, 51), ("promotion:funded", None, acme_id, 6),
            ("promotion:funded", None, bolt_id, 7), ("promotion:funded", None, None, 12),
            ("member:available", member, None, -76)}
        assert_ledger_clean()


def test_a_prepaid_partner_uses_funding_for_its_own_points_only(client, coalition, clock, app):
    acme = coalition["acme"]
    bought = client.post("/v1/admin/partners/acme/funding", headers=coalition["operator"],
                         json={"points": 100, "price": "1.00", "currency": "GBP"})
    assert bought.status_code == 201, bought.get_json()
    post_ok(client, "/v1/offers", acme, offer(clock))
    answer = earn(client, acme, coalition["member"], "t-1", **spend("60"))
    assert answer["points"] == 120  # 60 its own, 60 the promotion's
    assert client.get("/v1/funding", headers=acme).get_json()["available_points"] == 40
    post_ok(client, f"/v1/transactions/{answer['id']}/reversals", acme,
            {"partner_txn_id": "r-1", "points": 30})  # 15 of its own back
    assert client.get("/v1/funding", headers=acme).get_json()["available_points"] == 55
    with app.app_context():
        assert_ledger_clean()


def test_a_merge_moves_the_opt_in_activations_to_the_survivor(client, coalition, clock, app):
    from sqlalchemy import select

    from coalition.ledger import merge
    from coalition.offers.models import OfferActivation

    def activations() -> dict[tuple[int, int], Any]:
        with read() as session:
            return {(a.offer_id, a.member_id): a.activated_at
                    for a in session.scalars(select(OfferActivation))}

    acme = coalition["acme"]
    first = post_ok(client, "/v1/offers", acme, offer(clock, opt_in=True, name="First"))
    both = post_ok(client, "/v1/offers", acme, offer(clock, opt_in=True, name="Both",
                                                     rule="bonus", multiplier=None,
                                                     bonus_points=5))
    absorbed, survivor = coalition["member"], enrol(client, acme, "c2")
    with app.app_context():
        absorbed_h, survivor_h = member_token(absorbed), member_token(survivor)
    post_ok(client, f"/v1/me/offers/{both['id']}/activate", survivor_h, {}, status=200)
    clock.advance(minutes=5)
    for offer_id in (first["id"], both["id"]):
        post_ok(client, f"/v1/me/offers/{offer_id}/activate", absorbed_h, {}, status=200)
    with app.app_context():
        activated = activations()
        merge.merge(absorbed, survivor, operator="test")
        after = activations()
        absorbed_id, survivor_id = member_id(absorbed), member_id(survivor)
    # the survivor's own activation stays as it was; the absorbed member's other moves
    assert after == {(first["id"], survivor_id): activated[(first["id"], absorbed_id)],
                     (both["id"], survivor_id): activated[(both["id"], survivor_id)]}
    answer = earn(client, acme, survivor, "t-1", **spend("10"))
    assert [line.get("name") for line in answer["lines"]] == [None, "First", "Both"]
    with app.app_context():
        assert_ledger_clean()


def test_the_cap_counts_awards_net_of_reversals(client, coalition, clock, app):
    acme = coalition["acme"]
    published = post_ok(client, "/v1/offers", acme, offer(
        clock, rule="bonus", multiplier=None, bonus_points=40, cap_points=40))
    first = earn(client, acme, coalition["member"], "t-1", **spend("10"))
    assert first["points"] == 50
    full = earn(client, acme, coalition["member"], "t-2", **spend("10"))
    assert full["lines"] == [{"kind": "base", "points": 10}]  # the cap is reached

    def issued() -> int:
        listed = client.get("/v1/offers", headers=acme).get_json()["offers"]
        assert [o["id"] for o in listed] == [published["id"]]
        return listed[0]["issued_points"]

    # a refund of 20 of the 50 points gives back ⌊40 × 20 / 50⌋ = 16 of the award
    post_ok(client, f"/v1/transactions/{first['id']}/reversals", acme,
            {"partner_txn_id": "t-1-r1", "points": 20})
    assert issued() == 24
    # the rest, 30 more: ⌊40 × 50 / 50⌋ − 16 = 24, the whole award back
    post_ok(client, f"/v1/transactions/{first['id']}/reversals", acme,
            {"partner_txn_id": "t-1-r2", "points": 30})
    assert issued() == 0
    with app.app_context():
        assert_ledger_clean()
    # a refunded purchase never earned the bonus: the next earn gets it
    later = earn(client, acme, coalition["member"], "t-3", **spend("10"))
    assert [line["points"] for line in later["lines"]] == [10, 40]
    assert issued() == 40
    with app.app_context():
        assert_ledger_clean()
