"""Missing-points claims: a member claims an earn a partner did not post, the partner
confirms (the earn is booked once) or refuses, the member is told."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from coalition.claims.models import Claim
from coalition.db import UnitOfWork
from coalition.models import Partner
from coalition.notifications.models import Notification
from coalition.schemas import rfc3339
from partners.demo import history_file, load_history
from partners.models import WebhookEvent
from tests.conftest import snapshot
from tests.factories.clock import HandClock
from tests.factories.member_records import assert_clean, member_id, member_token
from tests.factories.partner_api import (
    assert_error,
    balance,
    earn,
    enrol,
    publish,
    set_member_status,
)


@pytest.fixture
def acme(client: FlaskClient, make_partner: Any, operator_headers: dict[str, str]
         ) -> dict[str, str]:
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    return headers


@pytest.fixture
def member(client: FlaskClient, acme: dict[str, str]) -> str:
    return enrol(client, acme, "cust-1")


_TOKENS: dict[str, dict[str, str]] = {}


def token(number: str) -> dict[str, str]:
    """The member's headers, written once per test (snapshots taken after it agree)."""
    if number not in _TOKENS:
        _TOKENS[number] = member_token(number)
    return _TOKENS[number]


@pytest.fixture(autouse=True)
def _fresh_tokens() -> None:
    _TOKENS.clear()


def claim(client: FlaskClient, number: str, clock: HandClock, status: int = 201,
          days_ago: float = 2, **fields: Any) -> Any:
    body = {"partner": "acme", "receipt": "R-1001",
            "spend": {"amount": "42.50", "currency": "GBP"},
            "occurred_at": rfc3339(clock() - timedelta(days=days_ago)), **fields}
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post("/v1/me/claims", json=body, headers=token(number))
    if status != 201:
        return response
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def notifications(number: str) -> list[tuple[str, str, dict[str, Any]]]:
    with UnitOfWork(readonly=True) as uow:
        return [tuple(r) for r in uow.session.execute(
            select(Notification.kind, Notification.key, Notification.data)
            .where(Notification.member_id == member_id(number)))]


# --------------------------------------------------------------------------- opening


def test_a_member_claims_and_the_partner_sees_the_open_claim(client, acme, member, clock):
    opened = claim(client, member, clock)
    assert opened["status"] == "open" and opened["receipt"] == "R-1001"
    assert opened["partner"] == "acme" and opened["member_number"] == member
    assert opened["spend"] == {"amount": "42.5", "currency": "GBP"}
    assert opened["partner_txn_id"] == f"claim-{opened['id']}"
    mine = client.get("/v1/me/claims", headers=token(member)).get_json()
    assert [c["id"] for c in mine["items"]] == [opened["id"]]
    listed = client.get("/v1/claims?status=open", headers=acme).get_json()
    assert [c["id"] for c in listed["items"]] == [opened["id"]]
    assert client.get("/v1/claims?status=refused", headers=acme).get_json()["items"] == []
    assert client.get(f"/v1/claims/{opened['id']}", headers=acme).get_json() == opened


def test_claims_page_with_a_cursor(client, acme, member, clock):
    ids = [claim(client, member, clock, receipt=f"R-{i}")["id"] for i in range(3)]
    first = client.get("/v1/claims?limit=2", headers=acme).get_json()
    assert [c["id"] for c in first["items"]] == ids[::-1][:2]
    rest = client.get(f"/v1/claims?limit=2&cursor={first['next_cursor']}",
                      headers=acme).get_json()
    assert [c["id"] for c in rest["items"]] == ids[:1] and rest["next_cursor"] is None
    assert_error(client.get("/v1/claims?cursor=nonsense", headers=acme), 422,
                 "invalid_request")


def test_another_partner_neither_sees_nor_answers_the_claim(client, acme, member, clock,
                                                             make_partner):
    opened = claim(client, member, clock)
    _, other = make_partner("other")
    assert client.get("/v1/claims", headers=other).get_json()["items"] == []
    before = snapshot(client.application)
    assert_error(client.post(f"/v1/claims/{opened['id']}/confirm", headers=other), 404,
                 "not_found")
    assert_error(client.post(f"/v1/claims/{opened['id']}/refuse", json={"reason": "no"},
                             headers=other), 404, "not_found")
    assert snapshot(client.application) == before


def test_opening_a_claim_tells_the_partners_webhooks(client, acme, member, clock):
    hook = client.post("/v1/webhooks", json={"url": "https://acme.example/hook",
                                             "events": ["claim.opened"]}, headers=acme)
    assert hook.status_code == 201, hook.get_json()
    opened = claim(client, member, clock)
    with UnitOfWork(readonly=True) as uow:
        events = uow.session.execute(select(WebhookEvent.type, WebhookEvent.body)).all()
    assert [e.type for e in events] == ["claim.opened"]
    assert f'"id":{opened["id"]}' in events[0].body and '"receipt":"R-1001"' in events[0].body


@pytest.mark.parametrize(("fields", "days_ago", "status", "error", "field"), [
    ({}, 31, 422, "invalid_request", "occurred_at"),  # outside the 30-day window
    ({}, -1, 422, "invalid_request", "occurred_at"),  # in the future
    ({"partner": "nobody"}, 2, 422, "invalid_request", "partner"),
    ({"spend": {"amount": "10", "currency": "EUR"}}, 2, 422, "invalid_request", "spend"),
    ({"spend": {"amount": "0", "currency": "GBP"}}, 2, 422, "invalid_request", "spend"),
    ({"spend": {"amount": 10.5, "currency": "GBP"}}, 2, 422, "invalid_request", "spend"),
    ({"receipt": None}, 2, 422, "invalid_request", "receipt"),
    ({"receipt": "has space"}, 2, 422, "invalid_request", "receipt"),
    ({"points": 100}, 2, 422, "invalid_request", "points"),
])
def test_bad_claims_are_refused_and_change_nothing(client, acme, member, clock, fields,
                                                   days_ago, status, error, field):
    token(member)
    before = snapshot(client.application)
    response = claim(client, member, clock, status=status, days_ago=days_ago, **fields)
    answer = assert_error(response, status, error)
    assert field in (answer.get("errors") or {}), answer
    assert snapshot(client.application) == before


def test_the_window_is_the_program_rule_and_the_late_posting_limit_bounds_it(
        client, acme, member, clock, operator_headers):
    publish(client, operator_headers, claims={"window_days": 60, "max_open": 5})
    claim(client, member, clock, days_ago=29, receipt="R-ok")
    refused = assert_error(claim(client, member, clock, status=422, days_ago=31,
                                 receipt="R-late"), 422, "invalid_request")
    assert "within 30 days" in refused["message"]  # late_posting_days stays 30
    publish(client, operator_headers, claims={"window_days": 7, "max_open": 5})
    assert_error(claim(client, member, clock, status=422, days_ago=8, receipt="R-old"),
                 422, "invalid_request", {"occurred_at"})


def test_a_receipt_is_claimed_once_at_its_partner(client, acme, member, clock):
    claim(client, member, clock)
    other = enrol(client, acme, "cust-2")
    token(other)
    before = snapshot(client.application)
    again = claim(client, member, clock, status=409)
    assert assert_error(again, 409, "already_exists", {"receipt"})["message"] == (
        "Receipt R-1001 at Acme was claimed before.")
    assert_error(claim(client, other, clock, status=409), 409, "already_exists")
    assert snapshot(client.application) == before


def test_a_sale_the_partner_booked_is_refused_at_once(client, acme, member, clock):
    earn(client, acme, member, "T-77", spend={"amount": "42.50", "currency": "GBP"})
    refused = claim(client, member, clock, status=409, partner_txn_id="T-77")
    assert assert_error(refused, 409, "already_booked", {"partner_txn_id"})["message"] == (
        "Acme has booked T-77 already: see your history.")


def test_open_claims_are_capped_per_member(client, acme, member, clock, operator_headers):
    publish(client, operator_headers, claims={"window_days": 30, "max_open": 2})
    first = claim(client, member, clock, receipt="R-1")
    claim(client, member, clock, receipt="R-2")
    assert_error(claim(client, member, clock, status=409, receipt="R-3"), 409, "claim_limit")
    client.post(f"/v1/claims/{first['id']}/refuse", json={"reason": "No such sale."},
                headers=acme)
    claim(client, member, clock, receipt="R-3")  # an answered claim no longer counts


def test_a_closed_member_cannot_claim(client, acme, member, clock):
    token(member)
    set_member_status(client.application, member, "closed")
    before = snapshot(client.application)
    assert_error(claim(client, member, clock, status=409), 409, "member_closed")
    assert snapshot(client.application) == before


# --------------------------------------------------------------------------- answers


def test_a_confirmation_books_the_earn_once_and_tells_the_member(client, acme, member,
                                                                 clock):
    opened = claim(client, member, clock)
    confirmed = client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme)
    assert confirmed.status_code == 200, confirmed.get_json()
    body = confirmed.get_json()
    assert body["status"] == "confirmed" and body["points"] == 42  # 42.50 × 1, rounded down
    assert "Idempotent-Replayed" not in confirmed.headers
    assert balance(client, acme, member)["available"] == 42
    txn = client.get(f"/v1/transactions/{body['transaction_id']}", headers=acme).get_json()
    assert txn["type"] == "earn" and txn["partner_txn_id"] == f"claim-{opened['id']}"
    assert txn["occurred_at"] == opened["occurred_at"]
    again = client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == body
    assert balance(client, acme, member)["available"] == 42
    assert notifications(member) == [("claim_answered", f"claim:{opened['id']}", {
        "claim_id": opened["id"], "partner": "acme", "receipt": "R-1001",
        "status": "confirmed", "points": 42, "reason": None})]
    assert_clean()


def test_a_confirmation_is_priced_as_any_earn(client, acme, member, clock, operator_headers):
    # silver from 100 qualifying points: multiplier 2
    earn(client, acme, member, "T-1", points=150)
    opened = claim(client, member, clock)
    body = client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme).get_json()
    assert body["points"] == 85  # 42.50 × 2


def test_a_refusal_is_final_and_tells_the_member_why(client, acme, member, clock):
    opened = claim(client, member, clock)
    refused = client.post(f"/v1/claims/{opened['id']}/refuse",
                          json={"reason": "No sale with this receipt."}, headers=acme)
    assert refused.status_code == 200, refused.get_json()
    assert refused.get_json()["status"] == "refused"
    before = snapshot(client.application)
    assert_error(client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme), 409,
                 "claim_answered")
    again = client.post(f"/v1/claims/{opened['id']}/refuse", json={"reason": "other"},
                        headers=acme)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["reason"] == "No sale with this receipt."
    assert snapshot(client.application) == before
    assert balance(client, acme, member)["available"] == 0
    assert notifications(member)[0][2]["reason"] == "No sale with this receipt."
    mine = client.get("/v1/me/claims", headers=token(member)).get_json()["items"]
    assert mine[0]["status"] == "refused"


def test_a_confirmed_claim_cannot_be_refused(client, acme, member, clock):
    opened = claim(client, member, clock)
    client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme)
    before = snapshot(client.application)
    assert_error(client.post(f"/v1/claims/{opened['id']}/refuse", json={"reason": "x"},
                             headers=acme), 409, "claim_answered")
    assert snapshot(client.application) == before


def test_bad_answers_are_refused(client, acme, member, clock):
    opened = claim(client, member, clock)
    before = snapshot(client.application)
    assert_error(client.post(f"/v1/claims/{opened['id']}/refuse", json={}, headers=acme),
                 422, "invalid_request", {"reason"})
    assert_error(client.post(f"/v1/claims/{opened['id']}/refuse", json={"reason": ""},
                             headers=acme), 422, "invalid_request", {"reason"})
    assert_error(client.post("/v1/claims/99999999/confirm", headers=acme), 404, "not_found")
    assert_error(client.post("/v1/claims/99999999999999999999/confirm", headers=acme), 404,
                 "not_found")
    assert_error(client.post(f"/v1/claims/{opened['id']}/confirm"), 401, "unauthorized")
    assert snapshot(client.application) == before


def test_confirming_after_the_partner_posted_the_sale_matches_it(client, acme, member,
                                                                 clock):
    opened = claim(client, member, clock, partner_txn_id="T-5", receipt="R-5")
    posted = earn(client, acme, member, "T-5", spend={"amount": "42.50", "currency": "GBP"})
    body = client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme).get_json()
    assert body["status"] == "confirmed" and body["transaction_id"] == posted["id"]
    assert balance(client, acme, member)["available"] == 42  # once
    assert_clean()


def test_confirming_when_the_id_is_booked_for_someone_else_is_refused(client, acme, member,
                                                                      clock):
    opened = claim(client, member, clock, partner_txn_id="T-6", receipt="R-6")
    earn(client, acme, enrol(client, acme, "cust-2"), "T-6", points=10)
    before = snapshot(client.application)
    assert_error(client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme), 409,
                 "already_booked")
    assert snapshot(client.application) == before


def test_the_partner_posting_after_the_confirmation_is_not_counted_twice(client, acme,
                                                                        member, clock):
    opened = claim(client, member, clock, partner_txn_id="T-8", receipt="R-8")
    client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme)
    late = client.post("/v1/earn", headers=acme, json={
        "member_number": member, "partner_txn_id": "T-8",
        "spend": {"amount": "42.50", "currency": "GBP"}})
    assert late.status_code in (201, 409)
    assert balance(client, acme, member)["available"] == 42


def test_a_closed_member_claim_is_refused_not_confirmed(client, acme, member, clock):
    opened = claim(client, member, clock)
    set_member_status(client.application, member, "closed")
    before = snapshot(client.application)
    assert_error(client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme), 409,
                 "member_closed")
    assert snapshot(client.application) == before
    refused = client.post(f"/v1/claims/{opened['id']}/refuse",
                          json={"reason": "Account closed."}, headers=acme)
    assert refused.status_code == 200 and notifications(member) == []


def test_a_merged_members_claim_credits_the_survivor(client, acme, member, clock,
                                                     operator_headers):
    opened = claim(client, member, clock)
    survivor = enrol(client, acme, "cust-2")
    merged = client.post("/v1/admin/members/merge", headers=operator_headers,
                         json={"absorbed": member, "survivor": survivor})
    assert merged.status_code in (200, 201), merged.get_json()
    body = client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme).get_json()
    assert body["status"] == "confirmed"
    assert balance(client, acme, survivor)["available"] == 42
    assert [n[1] for n in notifications(survivor)] == [f"claim:{opened['id']}"]
    mine = client.get("/v1/me/claims", headers=token(survivor)).get_json()["items"]
    assert [c["id"] for c in mine] == [opened["id"]]
    assert_clean()


def test_a_prepaid_partners_confirmation_uses_its_funding(client, acme, member, clock,
                                                          operator_headers):
    bought = client.post("/v1/admin/partners/acme/funding", headers=operator_headers,
                         json={"points": 1000, "price": "10.00", "currency": "GBP"})
    assert bought.status_code in (200, 201), bought.get_json()
    opened = claim(client, member, clock)
    client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme)
    assert client.get("/v1/funding", headers=acme).get_json()["available_points"] == 958
    assert_clean()


def test_claims_in_the_ledger_check(app: Flask, client, acme, member, clock):
    opened = claim(client, member, clock)
    client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme)
    assert_clean()
    with UnitOfWork() as uow:
        row = uow.session.get_one(Claim, opened["id"])
        row.points = 41
        uow.commit()
    from coalition.ledger.check import check_ledger
    report = check_ledger().to_dict()
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["claims_booked"]


def test_the_demo_leaves_claims_open_at_the_portal_partner(app):
    loaded = app.test_cli_runner().invoke(args=["demo", "load", "--with-history", "--json"])
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.stdout)["history"]["claims"] == 2
    with UnitOfWork(readonly=True) as uow:
        open_claims = uow.session.execute(
            select(Partner.code, Claim.receipt).join(Partner, Partner.id == Claim.partner_id)
            .where(Claim.status == "open").order_by(Claim.receipt)).all()
    assert [tuple(r) for r in open_claims] == [("northwind", "NW-RCPT-20418"),
                                              ("northwind", "NW-RCPT-20533")]
    assert load_history(history_file().read_text())["claims"] == 0  # opened once


def test_the_partners_own_id_stands_for_the_receipt_when_alone(client, acme, member, clock):
    opened = claim(client, member, clock, receipt=None, partner_txn_id="T-900")
    assert opened["receipt"] == "T-900" and opened["partner_txn_id"] == "T-900"
    assert_error(claim(client, member, clock, status=409, receipt="T-900"), 409,
                 "already_exists")
    body = client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme).get_json()
    txn = client.get(f"/v1/transactions/{body['transaction_id']}", headers=acme).get_json()
    assert txn["partner_txn_id"] == "T-900"


def test_a_confirmation_is_reported_like_any_earn(client, acme, member, clock):
    hook = client.post("/v1/webhooks", json={"url": "https://acme.example/hook",
                                             "events": ["transaction.booked"]}, headers=acme)
    assert hook.status_code == 201, hook.get_json()
    opened = claim(client, member, clock)
    client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme)
    client.post(f"/v1/claims/{opened['id']}/confirm", headers=acme)  # a replay: no event
    with UnitOfWork(readonly=True) as uow:
        events = uow.session.execute(select(WebhookEvent.type, WebhookEvent.body)).all()
    assert [e.type for e in events] == ["transaction.booked"]
    assert f'"partner_txn_id":"claim-{opened["id"]}"' in events[0].body


def test_the_members_list_pages_with_a_cursor(client, acme, member, clock):
    ids = [claim(client, member, clock, receipt=f"R-{i}")["id"] for i in range(3)]
    first = client.get("/v1/me/claims?limit=2", headers=token(member)).get_json()
    assert [c["id"] for c in first["items"]] == ids[::-1][:2]
    rest = client.get(f"/v1/me/claims?cursor={first['next_cursor']}",
                      headers=token(member)).get_json()
    assert [c["id"] for c in rest["items"]] == ids[:1]
    assert_error(client.get("/v1/me/claims?status=lost", headers=token(member)), 422,
                 "invalid_request")
    assert_error(client.get("/v1/me/claims", headers=acme), 403, "insufficient_scope")
    assert_error(client.post("/v1/me/claims", json={}, headers=acme), 403,
                 "insufficient_scope")
