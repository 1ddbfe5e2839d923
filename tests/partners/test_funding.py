"""Funding: prepaid blocks (reserve, automatic top-up), post-paid credit limits,
``insufficient_funding`` that writes nothing, ``funding.low`` once per crossing, the ledger
check, and 64 concurrent earns against a nearly exhausted block on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from coalition.db import db, read
from coalition.ledger.check import check_ledger
from coalition.schemas import rfc3339
from partners.funding import SLOTS
from partners.models import FundingBlock, FundingSlot, WebhookEvent
from tests.conftest import snapshot
from tests.factories.partner_api import assert_error, earn, enrol, post_ok, publish


@pytest.fixture
def acme(client, operator_headers, make_partner):
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    return headers


def fund(client, operator_headers, status: int = 201, code: str = "acme",
         **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/admin/partners/{code}/funding", json=body,
                           headers=operator_headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def funding_of(client, headers) -> dict[str, Any]:
    response = client.get("/v1/funding", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def refused(client, headers, member: str, txn: str, points: int) -> None:
    assert_error(client.post("/v1/earn", headers=headers, json={
        "member_number": member, "partner_txn_id": txn, "points": points}),
        409, "insufficient_funding")


def check_ok() -> None:
    report = check_ledger()
    assert report.ok, [(c.name, c.violations) for c in report.checks if not c.ok]


# --------------------------------------------------------------------------- prepaid


def test_a_prepaid_partner_issues_no_more_than_it_bought(app, client, acme, operator_headers):
    assert funding_of(client, acme)["model"] == "postpaid"  # no funding: no limit
    bought = fund(client, operator_headers, points=100, price="1.00", currency="GBP")
    assert (bought["model"], bought["available_points"]) == ("prepaid", 100)
    with read() as session:  # shared out over every slot: an earn finds them wherever it looks
        shares = session.scalars(select(FundingSlot.remaining)).all()
    assert len(shares) == SLOTS and max(shares) - min(shares) <= 1
    ada = enrol(client, acme, "ada")
    earn(client, acme, ada, "e1", points=60)
    before = snapshot(app)
    refused(client, acme, ada, "e2", 41)
    assert snapshot(app) == before
    earn(client, acme, ada, "e3", points=40)
    refused(client, acme, ada, "e4", 1)
    mine = funding_of(client, acme)
    assert mine["available_points"] == 0
    assert [(b["kind"], b["points"], b["price"]) for b in mine["blocks"]] == [
        ("block", 100, "1.00")]
    # a burn uses no funding; a reversal gives its points back
    post_ok(client, "/v1/burn", acme, {"member_number": ada, "partner_txn_id": "b1",
                                       "points": 10})
    first = client.get("/v1/transactions", headers=acme,
                       query_string={"type": "earn"}).get_json()["items"][-1]
    post_ok(client, f"/v1/transactions/{first['id']}/reversals", acme,
            {"partner_txn_id": "r1", "points": 15})
    assert funding_of(client, acme)["available_points"] == 15
    earn(client, acme, ada, "e5", points=15)
    check_ok()


def test_a_reserve_block_takes_over_when_the_others_run_out(client, acme, operator_headers):
    fund(client, operator_headers, points=50, price="0.50", currency="GBP")
    with_reserve = fund(client, operator_headers, points=100, price="1.00", currency="GBP",
                        reserve=True)
    assert (with_reserve["available_points"], with_reserve["reserve_points"]) == (50, 100)
    ada = enrol(client, acme, "ada")
    earn(client, acme, ada, "e1", points=80)
    mine = funding_of(client, acme)
    assert (mine["available_points"], mine["reserve_points"]) == (70, 0)
    assert mine["blocks"][1]["kind"] == "reserve" and mine["blocks"][1]["activated_at"]
    refused(client, acme, ada, "e2", 71)
    check_ok()


def test_an_automatic_top_up_buys_what_the_earn_needs(client, acme, operator_headers):
    fund(client, operator_headers, points=10, price="0.10", currency="GBP",
         auto_topup={"points": 100, "price": "1.00", "currency": "GBP"})
    ada = enrol(client, acme, "ada")
    earn(client, acme, ada, "e1", points=150)  # 10 bought + two top-ups of 100
    mine = funding_of(client, acme)
    assert [(b["kind"], b["points"]) for b in mine["blocks"]] == [
        ("block", 10), ("topup", 100), ("topup", 100)]
    assert mine["available_points"] == 60
    check_ok()


def test_funding_low_is_raised_once_per_crossing(client, acme, operator_headers):
    hook = client.post("/v1/webhooks", headers=acme, json={
        "url": "https://hooks.example.com/f", "events": ["funding.low"]})
    assert hook.status_code == 201
    fund(client, operator_headers, points=100, price="1.00", currency="GBP",
         low_threshold_points=50)
    ada = enrol(client, acme, "ada")
    for n in range(8):  # 100 → 20: crosses 50 once
        earn(client, acme, ada, f"e{n}", points=10)
    fund(client, operator_headers, points=100, price="1.00", currency="GBP")  # 120: above
    for n in range(8, 16):  # 120 → 40: crosses again
        earn(client, acme, ada, f"e{n}", points=10)
    with read() as session:
        bodies = [json.loads(e.body) for e in session.scalars(
            select(WebhookEvent).order_by(WebhookEvent.created_at))]
    assert [b["type"] for b in bodies] == ["funding.low", "funding.low"]
    assert [b["data"]["available_points"] for b in bodies] == [40, 40]


# --------------------------------------------------------------------------- post-paid


def test_a_post_paid_credit_limit_comes_back_when_the_period_is_settled(
        client, acme, operator_headers, clock):
    limited = fund(client, operator_headers, credit_limit_points=100)
    assert (limited["model"], limited["available_points"]) == ("postpaid", 100)
    ada = enrol(client, acme, "ada")
    earn(client, acme, ada, "e1", points=80)
    refused(client, acme, ada, "e2", 30)
    mine = funding_of(client, acme)
    assert (mine["unsettled_points"], mine["available_points"]) == (80, 20)
    # finance settles and closes the period that holds the earn, once it has ended
    start = clock.advance(seconds=1.1) - timedelta(days=1)
    end = clock().replace(microsecond=0)
    run = post_ok(client, "/v1/settlement/runs", operator_headers,
                  {"period_start": rfc3339(start), "period_end": rfc3339(end)})
    post_ok(client, f"/v1/settlement/runs/{run['id']}/close", operator_headers, {}, 200)
    assert funding_of(client, acme)["available_points"] == 100
    earn(client, acme, ada, "e3", points=30)
    assert funding_of(client, acme)["unsettled_points"] == 30


def test_no_credit_limit_means_no_limit(client, acme, operator_headers):
    fund(client, operator_headers, credit_limit_points=None)
    ada = enrol(client, acme, "ada")
    earn(client, acme, ada, "e1", points=10_000)
    assert funding_of(client, acme)["available_points"] is None


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("body, status, field", [
    ({"points": 100, "currency": "GBP"}, 422, "points"),
    ({"points": 0, "price": "1.00", "currency": "GBP"}, 422, "points"),
    ({"points": 100, "price": "-1", "currency": "GBP"}, 422, "price"),
    ({"points": 100, "price": "1.00", "currency": "EUR"}, 422, "currency"),
    ({"points": 100, "price": "1.005", "currency": "GBP"}, 422, "price"),
    ({"points": 100, "price": "1.00", "currency": "GBP", "credit_limit_points": 5}, 422,
     "_schema"),
    ({"reserve": True}, 422, "reserve"),
    ({}, 422, "_schema"),
    ({"low_threshold_points": 5}, 422, "_schema"),
    ({"credit_limit_points": -1}, 422, "credit_limit_points"),
    ({"credit_limit_points": "10"}, 422, "credit_limit_points"),
    ({"auto_topup": {"points": 10, "price": "1", "currency": "EUR"}}, 422, "_schema"),
])
def test_bad_funding_is_refused_and_changes_nothing(app, client, acme, operator_headers, body,
                                                    status, field):
    before = snapshot(app)
    assert_error(client.post("/v1/admin/partners/acme/funding", json=body,
                             headers=operator_headers), status, "invalid_request", {field})
    assert snapshot(app) == before


def test_funding_of_no_partner_is_404(client, operator_headers):
    assert_error(client.post("/v1/admin/partners/nosuch/funding", headers=operator_headers,
                             json={"credit_limit_points": 5}), 404, "not_found")
    assert_error(client.get("/v1/admin/partners/nosuch/funding", headers=operator_headers),
                 404, "not_found")


# --------------------------------------------------------------------------- the check


def test_the_ledger_check_finds_funding_that_does_not_add_up(client, acme, operator_headers):
    fund(client, operator_headers, points=100, price="1.00", currency="GBP")
    ada = enrol(client, acme, "ada")
    earn(client, acme, ada, "e1", points=60)
    check_ok()
    with db.engine.begin() as conn:
        conn.execute(update(FundingSlot.__table__).where(FundingSlot.slot == 0)
                     .values(remaining=FundingSlot.remaining + 500))
    report = check_ledger()
    [failed] = [c for c in report.checks if not c.ok]
    assert failed.name == "funded_points"


# --------------------------------------------------------------------------- the race


@pytest.mark.postgres
def test_64_concurrent_earns_never_issue_more_than_the_block(app, client, acme,
                                                             operator_headers):
    """A block of 1000 points and 64 earns of 20 at once (1280 asked for): exactly 50 are
    booked, the others refused, and nothing is issued beyond the block."""
    fund(client, operator_headers, points=1000, price="10.00", currency="GBP")
    members = [enrol(client, acme, f"m{n}") for n in range(64)]
    answers: list[int] = []
    lock = threading.Lock()
    go = threading.Barrier(64)

    def one(n: int) -> None:
        with app.app_context():
            local = app.test_client()
            go.wait()
            response = local.post("/v1/earn", headers=acme, json={
                "member_number": members[n], "partner_txn_id": f"race-{n}", "points": 20})
            with lock:
                answers.append(response.status_code)
            if response.status_code != 201:
                assert response.get_json()["error"] == "insufficient_funding"

    threads = [threading.Thread(target=one, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(set(answers)) == [201, 409]
    assert answers.count(201) == 50 and answers.count(409) == 14
    with read() as session:
        left = session.execute(select(func.sum(FundingSlot.remaining))).scalar_one()
        blocks = session.execute(select(func.count()).select_from(FundingBlock)).scalar_one()
    assert (left, blocks) == (0, 1)
    check_ok()


# --------------------------------------------------------------------------- CLI


def test_the_command_line_sets_and_shows_funding(app, client, acme):
    runner = app.test_cli_runner()
    got = runner.invoke(args=["partner", "funding", "acme", "--block", "500", "--price",
                              "5.00", "--low-threshold", "100", "--topup", "200:2.00"])
    assert got.exit_code == 0, got.output
    assert "acme: prepaid, available 500, reserve 0" in got.output
    shown = runner.invoke(args=["partner", "funding", "acme", "--json"])
    assert '"auto_topup"' in shown.output and '"price": "2.00"' in shown.output
    bad = runner.invoke(args=["partner", "funding", "acme", "--block", "5"])
    assert bad.exit_code != 0 and "points" in bad.output
    post = runner.invoke(args=["partner", "funding", "acme", "--credit-limit", "none"])
    assert post.exit_code == 0 and "acme: postpaid, available None" in post.output
    assert runner.invoke(args=["partner", "funding", "nosuch"]).exit_code != 0


# --------------------------------------------------------------------------- statement


def test_blocks_bought_and_points_used_are_on_the_partners_statement(client, acme,
                                                                     operator_headers, clock):
    fund(client, operator_headers, points=500, price="5.00", currency="GBP")
    fund(client, operator_headers, points=100, price="1.00", currency="GBP", reserve=True)
    ada = enrol(client, acme, "ada")
    earn(client, acme, ada, "e1", points=120)
    end = clock.advance(seconds=1.1).replace(microsecond=0)
    run = post_ok(client, "/v1/settlement/runs", operator_headers,
                  {"period_start": "2020-01-01", "period_end": rfc3339(end)})
    statement = client.get(f"/v1/settlement/runs/{run['id']}/statements/acme",
                           headers=operator_headers).get_json()
    assert statement["issued_points"] == 120
    got = statement["funding"]
    assert (got["model"], got["points_bought"], got["points_used"]) == ("prepaid", 600, 120)
    assert [(b["kind"], b["points"], b["price"]) for b in got["blocks_bought"]] == [
        ("block", 500, "5.00"), ("reserve", 100, "1.00")]
