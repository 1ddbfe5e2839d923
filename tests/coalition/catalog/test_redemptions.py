"""Members redeem rewards (a burn at the fulfilling partner and a voucher), partners use
the vouchers at their tills, and the daily job refunds or forfeits the ones left unused.

Every test ends with the ledger check green, and every refusal is shown to change nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from coalition.catalog.expiry import close_expired
from coalition.catalog.models import Reward, Voucher
from coalition.db import UnitOfWork
from coalition.ledger.daily import daily
from coalition.ledger.models import Entry
from coalition.notifications.models import Notification
from partners.models import WebhookEvent
from partners.service import partner_id
from tests.conftest import snapshot
from tests.factories.ledger import PRICED_FROM
from tests.factories.member_records import (
    assert_clean,
    entries_of,
    lots_of,
    member_id,
    member_token,
    postings_of,
)
from tests.factories.partner_api import assert_error, balance, earn, enrol, publish

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CINEMA = {"name": "Cinema ticket", "kind": "voucher", "points": 800, "stock": 3,
          "per_member_limit": 2, "terms": "Not on Saturdays."}


@pytest.fixture
def acme(make_partner):
    return make_partner("acme", valid_from=PRICED_FROM)


@pytest.fixture
def cinema(make_partner):
    return make_partner("cinema", valid_from=PRICED_FROM)


@pytest.fixture
def world(client, operator_headers, acme, cinema, clock):
    """Alice with 1,000 points earned at acme, and the cinema's ticket of 800 points."""
    clock.set(T0)
    publish(client, operator_headers)
    _, acme_h = acme
    _, cinema_h = cinema
    alice = enrol(client, acme_h, "alice")
    earn(client, acme_h, alice, "e1", 1000)
    reward = client.post("/v1/rewards", json=CINEMA, headers=cinema_h).get_json()
    return alice, reward["id"]


_TOKENS: dict[str, dict[str, str]] = {}


@pytest.fixture(autouse=True)
def _fresh_tokens():
    _TOKENS.clear()


def token(number: str) -> dict[str, str]:
    """The member's token headers, one per test (so that a snapshot is not changed by a
    token written for the next call)."""
    if number not in _TOKENS:
        _TOKENS[number] = member_token(number)
    return _TOKENS[number]


def redeem(client, number, reward_id, key=None):
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/me/redemptions", json={"reward_id": reward_id},
                       headers={**token(number), **extra})


def test_a_redemption_burns_the_points_at_the_fulfilling_partner_and_issues_a_voucher(
        app, client, world, acme, cinema):
    alice, reward_id = world
    response = redeem(client, alice, reward_id)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    code = body["voucher_code"]
    assert re.fullmatch(r"[A-Z2-7]{24}", code)  # 120 random bits
    assert body == {"id": body["id"], "reward_id": reward_id, "voucher_code": code,
                    "points": 800, "expires_at": "2026-05-30T09:00:00Z", "partner": "cinema",
                    "balance": {"available": 200, "pending": 0, "held": 0}}
    (burn,) = entries_of(member_id(alice), "burn")
    cinema_id = partner_id("cinema")
    assert (burn.partner_id, burn.points, burn.partner_txn_id) == (cinema_id, 800, None)
    assert sorted(postings_of(burn.id)) == [("member:available", member_id(alice), None, -800),
                                            ("partner:redeemed", None, cinema_id, 800)]
    assert [lot["remaining"] for lot in lots_of(member_id(alice))] == [200]
    with UnitOfWork(readonly=True) as uow:
        assert uow.session.get_one(Reward, reward_id).sold == 1
        # (the earn that gave the points may have moved the member up a tier: told too)
        (note,) = uow.session.scalars(select(Notification).where(
            Notification.kind == "redemption")).all()
        assert (note.kind, note.key) == ("redemption", f"redemption:{body['id']}")
        assert code not in str(note.data)
    mine = client.get("/v1/me/vouchers", headers=token(alice)).get_json()["items"]
    assert [(v["voucher_code"], v["status"], v["reward"]) for v in mine] == \
        [(code, "issued", "Cinema ticket")]
    assert client.get("/v1/rewards").get_json()["items"][0]["available"] == 2
    assert_clean()


def test_a_retried_redemption_with_the_same_key_answers_with_the_first(
        app, client, world, operator_headers, cinema):
    alice, reward_id = world
    first = redeem(client, alice, reward_id, key="r-1")
    assert first.status_code == 201
    again = redeem(client, alice, reward_id, key="r-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    _, cinema_h = cinema
    other = client.post("/v1/rewards", json={**CINEMA, "points": 10},
                        headers=cinema_h).get_json()["id"]
    token(alice)
    before = snapshot(app)
    assert_error(redeem(client, alice, other, key="r-1"), 409, "idempotency_conflict")
    # the member's keys are one namespace: a transfer with the key is another request
    assert_error(client.post("/v1/me/transfers", json={"to_member_number": alice,
                                                        "points": 1},
                             headers={**token(alice), "Idempotency-Key": "r-1"}),
                 422, "invalid_request")
    assert snapshot(app) == before
    assert len(entries_of(member_id(alice), "burn")) == 1
    assert_clean()


def test_refusals_change_nothing(app, client, world, cinema, clock):
    alice, reward_id = world
    _, cinema_h = cinema
    token(alice)
    dear = client.post("/v1/rewards", json={**CINEMA, "points": 5000},
                       headers=cinema_h).get_json()["id"]
    later = client.post("/v1/rewards", json={**CINEMA, "valid_from": "2026-04-01"},
                        headers=cinema_h).get_json()["id"]
    off = client.post("/v1/rewards", json={**CINEMA, "active": False},
                      headers=cinema_h).get_json()["id"]
    before = snapshot(app)
    assert_error(redeem(client, alice, dear), 409, "insufficient_points", {"reward_id"})
    assert_error(redeem(client, alice, later), 409, "out_of_stock")
    assert_error(redeem(client, alice, off), 422, "invalid_request", {"reward_id"})
    assert_error(redeem(client, alice, 999_999), 422, "invalid_request", {"reward_id"})
    for body in ({}, {"reward_id": "1"}, {"reward_id": 0}, {"reward_id": reward_id, "x": 1}):
        assert_error(client.post("/v1/me/redemptions", json=body,
                                 headers=token(alice)), 422, "invalid_request")
    assert_error(client.post("/v1/me/redemptions", json={"reward_id": reward_id}), 401,
                 "unauthorized")
    assert_error(client.post("/v1/me/redemptions", json={"reward_id": reward_id},
                             headers=cinema_h), 403, "insufficient_scope")
    assert snapshot(app) == before


def test_stock_and_the_per_member_limit_are_kept(app, client, world, acme):
    alice, reward_id = world
    _, acme_h = acme
    earn(client, acme_h, alice, "e2", 5000)
    bob = enrol(client, acme_h, "bob")
    earn(client, acme_h, bob, "e3", 5000)
    assert redeem(client, alice, reward_id).status_code == 201
    assert redeem(client, alice, reward_id).status_code == 201
    before = snapshot(app)
    assert_error(redeem(client, alice, reward_id), 409, "out_of_stock")  # her limit of 2
    assert snapshot(app) == before
    assert redeem(client, bob, reward_id).status_code == 201
    before = snapshot(app)
    assert_error(redeem(client, bob, reward_id), 409, "out_of_stock")  # 3 sold of 3
    assert snapshot(app) == before
    assert client.get("/v1/rewards").get_json()["items"][0]["available"] == 0
    assert_clean()


def test_the_partner_checks_and_uses_a_voucher_once_at_its_till(
        app, client, world, acme, cinema, clock):
    alice, reward_id = world
    _, acme_h = acme
    _, cinema_h = cinema
    hook = client.post("/v1/webhooks", json={"url": "https://till.example/hook",
                                              "events": ["voucher.redeemed"]}, headers=cinema_h)
    assert hook.status_code == 201, hook.get_json()
    code = redeem(client, alice, reward_id).get_json()["voucher_code"]
    typed = "-".join(code[i:i + 4] for i in range(0, 24, 4)).lower()
    checked = client.get(f"/v1/vouchers/{typed}", headers=cinema_h)
    assert checked.status_code == 200
    assert checked.get_json()["status"] == "issued"
    before = snapshot(app)
    # another partner's voucher is not found, whatever it asks
    assert_error(client.get(f"/v1/vouchers/{code}", headers=acme_h), 404, "not_found")
    assert_error(client.post(f"/v1/vouchers/{code}/redeem", headers=acme_h), 404, "not_found")
    assert_error(client.post("/v1/vouchers/NOSUCHCODE/redeem", headers=cinema_h), 404,
                 "not_found")
    assert snapshot(app) == before

    clock.advance(hours=1)
    used = client.post(f"/v1/vouchers/{code}/redeem",
                       headers={**cinema_h, "Idempotency-Key": "till-7"})
    assert used.status_code == 200, used.get_json()
    assert (used.get_json()["status"], used.get_json()["used_at"]) == \
        ("used", "2026-03-01T10:00:00Z")
    retried = client.post(f"/v1/vouchers/{code}/redeem",
                          headers={**cinema_h, "Idempotency-Key": "till-7"})
    assert retried.status_code == 200
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert retried.get_json() == used.get_json()
    before = snapshot(app)
    assert_error(client.post(f"/v1/vouchers/{code}/redeem", headers=cinema_h), 409,
                 "voucher_used")
    assert snapshot(app) == before
    with UnitOfWork(readonly=True) as uow:
        (event,) = uow.session.scalars(select(WebhookEvent)).all()
        assert event.type == "voucher.redeemed"
    # (a new token: the first one expired while the clock moved on)
    mine = client.get("/v1/me/vouchers", headers=member_token(alice)).get_json()["items"]
    assert mine[0]["status"] == "used"
    assert_clean()


@pytest.mark.parametrize("rule", ["refund", "forfeit"])
def test_an_unused_voucher_is_refunded_or_forfeited_by_the_daily_job(
        app, client, world, operator_headers, cinema, clock, rule):
    alice, reward_id = world
    # each rule published at a moment of its own (parsed rules are cached per version and
    # publication time)
    clock.set(T0 + timedelta(minutes=1 if rule == "refund" else 2))
    publish(client, operator_headers, vouchers={"valid_days": 30, "unused": rule})
    _, cinema_h = cinema
    body = redeem(client, alice, reward_id).get_json()
    code = body["voucher_code"]
    lots_before = lots_of(member_id(alice))
    clock.set(T0 + timedelta(days=30, minutes=5))
    before = snapshot(app)
    assert_error(client.post(f"/v1/vouchers/{code}/redeem", headers=cinema_h), 409,
                 "voucher_expired")
    assert snapshot(app) == before
    assert client.get(f"/v1/vouchers/{code}", headers=cinema_h).get_json()["status"] == \
        "expired"

    clock.advance(hours=1)
    summary = daily(date(2026, 3, 31))
    again = daily(date(2026, 3, 31))  # safe to rerun
    assert (again.vouchers_refunded, again.vouchers_forfeited) == (0, 0)
    with UnitOfWork(readonly=True) as uow:
        voucher = uow.session.get_one(Voucher, body["id"])
    available = balance(client, cinema_h, alice)["available"]
    if rule == "refund":
        assert (summary.vouchers_refunded, summary.voucher_points_refunded) == (1, 800)
        assert (voucher.status, available) == ("refunded", 1000)
        (reversal,) = entries_of(member_id(alice), "burn_reversal")
        assert (reversal.partner_id, reversal.points, reversal.reference_id) == \
            (partner_id("cinema"), 800, voucher.entry_id)
        assert voucher.refund_entry_id == reversal.id
        # the points are back in the lot they came from
        assert [lot["remaining"] for lot in lots_of(member_id(alice))] == [1000]
    else:
        assert (summary.vouchers_forfeited, voucher.status, available) == (1, "forfeited", 200)
        assert lots_of(member_id(alice)) == lots_before
    assert_error(client.post(f"/v1/vouchers/{code}/redeem", headers=cinema_h), 409,
                 "voucher_expired")
    assert_clean()


def test_a_voucher_used_before_its_expiry_is_never_refunded(app, client, world, cinema, clock):
    alice, reward_id = world
    _, cinema_h = cinema
    code = redeem(client, alice, reward_id).get_json()["voucher_code"]
    assert client.post(f"/v1/vouchers/{code}/redeem", headers=cinema_h).status_code == 200
    clock.set(T0 + timedelta(days=200))
    assert close_expired(T0 + timedelta(days=200)).refunded == 0
    with UnitOfWork(readonly=True) as uow:
        assert uow.session.scalars(select(Entry).where(Entry.kind == "burn_reversal")).all() \
            == []
    assert_clean()


def test_the_ledger_check_finds_a_voucher_or_a_stock_out_of_order(app, client, world):
    from sqlalchemy import update

    from coalition.ledger.check import check_ledger

    alice, reward_id = world
    voucher_id = redeem(client, alice, reward_id).get_json()["id"]
    assert_clean()
    with UnitOfWork() as uow:
        uow.session.execute(update(Reward).where(Reward.id == reward_id).values(sold=2))
        uow.session.execute(update(Voucher).where(Voucher.id == voucher_id).values(points=700))
        uow.commit()
    (result,) = [c for c in check_ledger().checks if c.name == "vouchers_paid"]
    assert result.violation_count == 2
    assert {v["problem"] for v in result.violations} == {
        "voucher not paid by its own burn", "units sold disagree with vouchers or stock"}


def test_a_closed_members_unused_voucher_is_forfeited_not_refunded(app, client, world, clock):
    from coalition.ledger import closure

    alice, reward_id = world
    body = redeem(client, alice, reward_id).get_json()
    closure.close(member_id(alice))
    clock.set(T0 + timedelta(days=91))
    summary = close_expired(clock())
    assert (summary.refunded, summary.forfeited) == (0, 1)
    with UnitOfWork(readonly=True) as uow:
        assert uow.session.get_one(Voucher, body["id"]).status == "forfeited"
    assert entries_of(member_id(alice), "burn_reversal") == []
    assert_clean()


def test_a_merged_members_voucher_is_refunded_to_the_survivor(app, client, world, acme,
                                                              operator_headers, clock):
    from coalition.ledger import merge

    alice, reward_id = world
    _, acme_h = acme
    body = redeem(client, alice, reward_id).get_json()
    survivor = enrol(client, acme_h, "alice-again")
    merge.merge(alice, survivor, operator="test")
    mine = client.get("/v1/me/vouchers", headers=member_token(survivor)).get_json()["items"]
    assert [v["id"] for v in mine] == [body["id"]]
    clock.set(T0 + timedelta(days=91))
    assert close_expired(clock()).refunded_points == 800
    assert balance(client, acme_h, survivor)["available"] == 1000
    assert_clean()
