"""Program rules: published in versions by the operator, readable by anyone."""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from coalition.db import read
from coalition.models import ProgramRules
from partners.service import add_rate_card
from tests.conftest import snapshot

RULES = {
    "pending_days": 14,
    "expiry": {"policy": "fixed", "months": 24},
    "tiers": [
        {"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
        {"code": "silver", "name": "Silver", "threshold": 5000, "multiplier": "1.25"},
        {"code": "gold", "name": "Gold", "threshold": 20000, "multiplier": "1.5"},
    ],
    "bonuses": {"welcome": 100, "birthday": 250},
    "transfers": {"enabled": True, "min_points": 100, "max_points": 50000,
                  "max_points_per_day": 100000},
    "holds": {"default_seconds": 900, "max_seconds": 86400},
    "earn_reversal_after_spend": "refuse",
    "terms": "Earn everywhere, spend anywhere.",
}
FORFEITURE = ("Points have no cash value. Points left on an account when it is closed are "
              "forfeited; points not used before they expire are lost.")


def rules_of(body):
    return {key: body[key] for key in RULES}


def test_before_anything_is_published_the_defaults_show_as_version_0(client):
    response = client.get("/v1/program")
    assert response.status_code == 200
    assert response.get_json() == {
        "version": 0,
        "published_at": None,
        "points_have_no_cash_value": True,
        "forfeiture": FORFEITURE,
        "partners": [],
        "pending_days": 0,
        "expiry": {"policy": "none", "months": None},
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}],
        "bonuses": {"welcome": 0, "birthday": 0},
        "transfers": {"enabled": True, "min_points": 1, "max_points": 100000,
                      "max_points_per_day": 250000},
        "holds": {"default_seconds": 900, "max_seconds": 604800},
        "vouchers": {"valid_days": 90, "unused": "refund"},
        "earn_reversal_after_spend": "take_from_other_lots",
        "settlement_model": "operator",
        "late_posting_days": 30,
        "claims": {"window_days": 30, "max_open": 5},
        "terms": "",
        "memberships": [],
    }


def test_the_settlement_model_is_operator_or_clearing(client, operator_headers):
    tiers = [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]
    refused = client.put("/v1/admin/program", headers=operator_headers,
                         json={"tiers": tiers, "settlement_model": "barter"})
    assert refused.status_code == 422
    body = refused.get_json()
    assert body["error"] == "invalid_request" and "settlement_model" in body["errors"]
    assert client.get("/v1/program").get_json()["version"] == 0  # nothing published
    ok = client.put("/v1/admin/program", headers=operator_headers,
                    json={"tiers": tiers, "settlement_model": "clearing"})
    assert ok.status_code == 200 and ok.get_json()["settlement_model"] == "clearing"


def test_put_publishes_the_next_version_and_get_shows_it(client, operator, operator_headers):
    first = client.put("/v1/admin/program", json=RULES, headers=operator_headers)
    assert first.status_code == 200
    assert first.get_json()["version"] == 1
    assert rules_of(first.get_json()) == RULES

    second_rules = {**RULES, "pending_days": 30}
    second = client.put("/v1/admin/program", json=second_rules, headers=operator_headers)
    assert second.status_code == 200
    assert second.get_json()["version"] == 2

    # public: no token needed
    public = client.get("/v1/program")
    assert public.status_code == 200
    body = public.get_json()
    assert body["version"] == 2
    assert rules_of(body) == second_rules
    assert body["points_have_no_cash_value"] is True
    assert body["forfeiture"] == FORFEITURE
    published = datetime.fromisoformat(body["published_at"])
    assert published.tzinfo is not None
    assert abs((datetime.now(UTC) - published).total_seconds()) < 60

    # every version is kept, as published, with who published it
    with read() as session:
        rows = session.scalars(select(ProgramRules).order_by(ProgramRules.version)).all()
    assert [(r.version, r.published_by) for r in rows] == [
        (1, operator["client_id"]), (2, operator["client_id"])]
    assert rows[0].rules["pending_days"] == 14


def test_omitted_sections_take_their_defaults(client, operator_headers):
    response = client.put("/v1/admin/program", headers=operator_headers, json={
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["version"] == 1
    assert body["expiry"] == {"policy": "none", "months": None}
    assert body["earn_reversal_after_spend"] == "take_from_other_lots"
    assert body["transfers"]["max_points"] == 100000


def test_partners_show_the_earn_rate_in_force_now(client, make_partner):
    make_partner("skyline", valid_from=datetime(2020, 1, 1, tzinfo=UTC), earn_rate=Decimal("1"))
    add_rate_card("skyline", datetime(2021, 1, 1, tzinfo=UTC), earn_rate=Decimal("2.5"))
    add_rate_card("skyline", datetime(2999, 1, 1, tzinfo=UTC), earn_rate=Decimal("9"))
    make_partner("greenhearts", kind="charity", currency="EUR", earn_rate=Decimal("0"))
    make_partner("later", valid_from=datetime(2999, 1, 1, tzinfo=UTC))

    response = client.get("/v1/program")
    assert response.status_code == 200
    assert response.get_json()["partners"] == [
        {"code": "greenhearts", "name": "Greenhearts", "kind": "charity", "currency": "EUR",
         "earn_rate": "0"},
        # no card in force yet
        {"code": "later", "name": "Later", "kind": "merchant", "currency": "GBP",
         "earn_rate": None},
        {"code": "skyline", "name": "Skyline", "kind": "merchant", "currency": "GBP",
         "earn_rate": "2.5"},
    ]


def test_put_needs_an_operator_token_with_admin(app, client, make_partner):
    before = snapshot(app)
    anonymous = client.put("/v1/admin/program", json=RULES)
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"] == "unauthorized"
    _, partner_headers = make_partner("acme")
    partner = client.put("/v1/admin/program", json=RULES, headers=partner_headers)
    assert partner.status_code == 403
    assert partner.get_json()["error"] == "insufficient_scope"
    with read() as session:
        assert session.scalars(select(ProgramRules)).all() == []
    assert snapshot(app)["program_rules"] == before["program_rules"]


def _tiers(*specs):
    return [{"code": code, "name": code.title(), "threshold": threshold,
             "multiplier": multiplier} for code, threshold, multiplier in specs]


@pytest.mark.parametrize(("change", "errors"), [
    ({"tiers": _tiers(("blue", 100, "1"))},
     {"tiers": ["The first tier must have threshold 0."]}),
    ({"tiers": _tiers(("blue", 0, "1"), ("silver", 5000, "1.2"), ("gold", 5000, "1.5"))},
     {"tiers": ["Thresholds must rise strictly."]}),
    ({"tiers": _tiers(("blue", 0, "1"), ("silver", 5000, "1.2"), ("gold", 4000, "1.5"))},
     {"tiers": ["Thresholds must rise strictly."]}),
    ({"tiers": _tiers(("blue", 0, "0.5"))},
     {"tiers": {"0": {"multiplier": ["Must be between 1 and 10."]}}}),
    ({"tiers": _tiers(("blue", 0, "1"), ("gold", 10, "10.5"))},
     {"tiers": {"1": {"multiplier": ["Must be between 1 and 10."]}}}),
    ({"tiers": _tiers(("blue", 0, "1"), ("blue", 10, "2"))},
     {"tiers": ["Tier codes must be unique."]}),
    ({"tiers": _tiers(("blue", 0, 1))},
     {"tiers": {"0": {"multiplier": [
         "Not a decimal string (digits with an optional '.'; no exponent)."]}}}),
    ({"tiers": _tiers(("blue", 0.0, "1"))},
     {"tiers": {"0": {"threshold": ["Not a valid integer."]}}}),
    ({"tiers": []}, {"tiers": ["Length must be between 1 and 10."]}),
    ({"tiers": None}, {"tiers": ["Field may not be null."]}),
    ({"expiry": {"policy": "fixed"}},
     {"expiry": {"months": ["Required unless the policy is 'none'."]}}),
    ({"holds": {"default_seconds": 7200, "max_seconds": 3600}},
     {"holds": ["default_seconds must not exceed max_seconds."]}),
    ({"pending_days": -1}, {"pending_days": ["Must be greater than or equal to 0 and less "
                                             "than or equal to 365."]}),
    ({"cash_value": True}, {"cash_value": ["Unknown field."]}),
])
def test_invalid_rules_are_refused_and_nothing_is_published(app, client, operator_headers,
                                                            change, errors):
    before = snapshot(app)
    body = {**copy.deepcopy(RULES), **change}
    response = client.put("/v1/admin/program", json=body, headers=operator_headers)
    assert response.status_code == 422
    assert response.get_json() == {
        "code": 422, "status": "Unprocessable Entity", "error": "invalid_request",
        "message": "The request is not valid.", "errors": errors,
    }
    assert snapshot(app) == before
    assert client.get("/v1/program").get_json()["version"] == 0


def test_missing_tiers_are_refused(app, client, operator_headers):
    body = {k: v for k, v in RULES.items() if k != "tiers"}
    response = client.put("/v1/admin/program", json=body, headers=operator_headers)
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"tiers": ["Missing data for required field."]}


def test_concurrent_publishes_take_successive_versions(app, operator_headers):
    """Operators publishing at the same moment each get their own version, never a 500."""
    publishers = 6
    barrier = threading.Barrier(publishers)
    results: list[tuple[int, int | None]] = []

    def publish(n: int) -> None:
        client = app.test_client()
        barrier.wait(5)
        response = client.put("/v1/admin/program", json={**RULES, "pending_days": n},
                              headers=operator_headers)
        results.append((response.status_code, (response.get_json() or {}).get("version")))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(status for status, _ in results) == [200] * publishers
    with read() as session:
        rows = session.scalars(select(ProgramRules).order_by(ProgramRules.version)).all()
    assert [r.version for r in rows] == list(range(1, publishers + 1))
    assert sorted(r.rules["pending_days"] for r in rows) == list(range(publishers))
