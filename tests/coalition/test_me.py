"""``GET /v1/me`` and ``GET /v1/me/transactions``: the member's one balance across every
partner, what expires when, where the points came from, the tier, and the full history."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from coalition.clock import add_months
from coalition.db import UnitOfWork, read, utcnow
from coalition.ledger import daily, merge, transfers
from coalition.ledger.models import Entry, Lot, Member
from coalition.ledger.tiers import qualifying_points
from tests.factories.members import active_member, bearer_of, member_token
from tests.factories.partner_api import earn, hold

RULES = {
    "pending_days": 0,
    "expiry": {"policy": "fixed", "months": 12},
    "tiers": [
        {"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
        {"code": "silver", "name": "Silver", "threshold": 1000, "multiplier": "1.5"},
        {"code": "gold", "name": "Gold", "threshold": 5000, "multiplier": "2"},
    ],
    "bonuses": {"welcome": 50, "birthday": 0},
    "transfers": {"enabled": True, "min_points": 1, "max_points": 10000,
                  "max_points_per_day": 100000},
}

ME_KEYS = {"member_number", "status", "name", "email", "member_since", "available",
           "pending", "held", "pending_releases", "awaiting_first_spend", "holds",
           "expiring", "by_partner", "tier", "as_of"}


def publish(client, operator_headers, **changes):
    rules = copy.deepcopy(RULES)
    rules.update(changes)
    response = client.put("/v1/admin/program", json=rules, headers=operator_headers)
    assert response.status_code == 200, response.get_json()


@pytest.fixture
def partners(make_partner):
    northwind = make_partner("northwind", name="Northwind Grocers")[1]
    skyline = make_partner("skyline", name="Skyline Fuel")[1]
    return northwind, skyline


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def member_id_of(number: str) -> int:
    with read() as session:
        return session.scalar(select(Member.id).where(Member.member_number == number))


def member_row(number: str) -> Member:
    with read() as session:
        return session.scalars(select(Member).where(Member.member_number == number)).one()


def set_expiry(entry_id: int, expires_at: datetime) -> None:
    with UnitOfWork() as uow:
        uow.session.execute(update(Lot).where(Lot.entry_id == entry_id)
                            .values(expires_at=expires_at))
        uow.commit()


def test_one_balance_across_partners(client, operator_headers, partners):
    northwind, skyline = partners
    publish(client, operator_headers)
    member = active_member(client, northwind, name="Ada", email="ada@example.com")
    number = member.member_number
    n = earn(client, northwind, number, "n1", spend={"amount": "300", "currency": "GBP"})
    s = earn(client, skyline, number, "s1", 200)
    now = utcnow()
    with read() as session:
        bonus_entry = session.scalar(select(Entry.id).where(Entry.kind == "bonus"))
    set_expiry(n["id"], now + timedelta(days=10))
    set_expiry(s["id"], now + timedelta(days=45))
    set_expiry(bonus_entry, now + timedelta(days=80))
    hold(client, skyline, number, "h1", 30)            # taken from the earliest lot
    publish(client, operator_headers, pending_days=7)
    earn(client, skyline, number, "s2", 40)             # pending for 7 days

    token = member_token(client, member)
    answer = client.get("/v1/me", headers=bearer_of(token))
    assert answer.status_code == 200, answer.get_json()
    me = answer.get_json()
    assert set(me) == ME_KEYS
    assert me["member_number"] == number and me["status"] == "active"
    assert (me["name"], me["email"]) == ("Ada", "ada@example.com")
    assert (me["available"], me["pending"], me["held"]) == (520, 40, 30)

    [release] = me["pending_releases"]
    assert release["points"] == 40
    assert me["awaiting_first_spend"] == 0  # released by the earn from a spend
    assert timedelta(days=6, hours=23) < ts(release["releases_at"]) - now <= timedelta(days=7,
                                                                                      minutes=1)
    [held] = me["holds"]
    assert (held["partner"], held["partner_name"], held["points"]) == \
        ("skyline", "Skyline Fuel", 30)

    expiring = me["expiring"]
    assert expiring["policy"] == "fixed"
    assert [(w["days"], w["points"]) for w in expiring["windows"]] == \
        [(30, 270), (60, 470), (90, 520)]
    assert [d["points"] for d in expiring["dates"]] == [270, 200, 50]
    assert [ts(d["expires_at"]) - now for d in expiring["dates"]] == pytest.approx(
        [timedelta(days=10), timedelta(days=45), timedelta(days=80)], abs=timedelta(seconds=5))

    assert me["by_partner"] == [
        {"partner": "northwind", "name": "Northwind Grocers", "points": 270},
        {"partner": "skyline", "name": "Skyline Fuel", "points": 200},
        {"partner": "coalition", "name": "Coalition", "points": 50},
    ]
    assert sum(row["points"] for row in me["by_partner"]) == me["available"]

    tier = me["tier"]
    # the welcome bonus is not earned at a partner, so it does not qualify
    assert (tier["code"], tier["name"], tier["multiplier"]) == ("blue", "Blue", "1")
    assert tier["qualifying_points"] == 540
    assert tier["next_tier"] == {"code": "silver", "name": "Silver", "threshold": 1000,
                                 "multiplier": "1.5"}
    assert tier["points_to_next_tier"] == 460
    assert ts(tier["window_start"]) == pytest.approx(add_months(now, -12),
                                                     abs=timedelta(seconds=5))


def test_tier_progress_counts_reversals_and_reaches_the_top(client, operator_headers,
                                                            partners):
    northwind, _ = partners
    publish(client, operator_headers)
    member = active_member(client, northwind)
    headers = bearer_of(member_token(client, member))
    big = earn(client, northwind, member.member_number, "e1", 600)
    response = client.post(f"/v1/transactions/{big['id']}/reversals",
                           json={"partner_txn_id": "r1", "points": 100}, headers=northwind)
    assert response.status_code == 201, response.get_json()
    tier = client.get("/v1/me", headers=headers).get_json()["tier"]
    assert (tier["qualifying_points"], tier["points_to_next_tier"]) == (500, 500)

    earn(client, northwind, member.member_number, "e2", 600)
    tier = client.get("/v1/me", headers=headers).get_json()["tier"]
    assert tier["code"] == "silver" and tier["qualifying_points"] == 1100
    assert tier["next_tier"]["code"] == "gold" and tier["points_to_next_tier"] == 3900

    earn(client, northwind, member.member_number, "e3", 4000)
    tier = client.get("/v1/me", headers=headers).get_json()["tier"]
    assert tier["code"] == "gold"
    assert tier["next_tier"] is None and tier["points_to_next_tier"] is None

    # the window rolls: a year and a month on, none of it qualifies any more
    with read() as session:
        later = add_months(utcnow(), 13)
        assert qualifying_points(session, member_id_of(member.member_number), later)[0] == 0


def test_after_a_merge_me_shows_the_qualifying_points_the_daily_job_uses(
        client, operator_headers, partners):
    northwind, _ = partners
    publish(client, operator_headers)  # silver at 1000
    absorbed = active_member(client, northwind, "cust-x")
    survivor = active_member(client, northwind, "cust-s")
    earn(client, northwind, absorbed.member_number, "x1", 700)
    earn(client, northwind, survivor.member_number, "s1", 400)
    merge.merge(absorbed.member_number, survivor.member_number, operator="test")
    assert member_row(survivor.member_number).tier == "blue"
    earn(client, northwind, survivor.member_number, "s2", 1)  # 700 + 400 + 1: silver
    assert member_row(survivor.member_number).tier == "silver"

    tier = client.get("/v1/me", headers=bearer_of(member_token(client, survivor))) \
        .get_json()["tier"]
    assert (tier["code"], tier["qualifying_points"]) == ("silver", 1101)
    assert tier["next_tier"]["code"] == "gold" and tier["points_to_next_tier"] == 3899

    # the daily job counts the same points: the survivor keeps its tier
    summary = daily.daily(utcnow().date())
    assert summary.tier_downgrades == 0 and summary.failures == []
    assert member_row(survivor.member_number).tier == "silver"


def test_inactivity_expiry_shows_every_point_going_at_once(client, operator_headers, partners):
    northwind, skyline = partners
    publish(client, operator_headers, expiry={"policy": "inactivity", "months": 2},
            bonuses={"welcome": 0, "birthday": 0})
    member = active_member(client, northwind)
    earn(client, northwind, member.member_number, "n1", 100)
    earn(client, skyline, member.member_number, "s1", 20)
    expiring = client.get("/v1/me", headers=bearer_of(member_token(client, member))
                          ).get_json()["expiring"]
    assert expiring["policy"] == "inactivity"
    [date] = expiring["dates"]
    assert date["points"] == 120
    assert ts(date["expires_at"]) == pytest.approx(add_months(utcnow(), 2),
                                                   abs=timedelta(seconds=10))
    within_60 = 120 if ts(date["expires_at"]) <= ts(expiring["windows"][1]["until"]) else 0
    assert [w["points"] for w in expiring["windows"]] == [0, within_60, 120]


def test_a_new_member_with_no_rules(client, make_partner):
    _, acme = make_partner("acme")
    member = active_member(client, acme)
    me = client.get("/v1/me", headers=bearer_of(member_token(client, member))).get_json()
    assert (me["available"], me["pending"], me["held"]) == (0, 0, 0)
    assert me["by_partner"] == [] and me["pending_releases"] == [] and me["holds"] == []
    assert me["expiring"] == {"policy": "none", "dates": [], "windows": [
        {"days": d, "points": 0, "until": w["until"]}
        for d, w in zip((30, 60, 90), me["expiring"]["windows"], strict=True)]}
    assert me["tier"]["code"] == "member" and me["tier"]["next_tier"] is None


def test_history_across_partners_newest_first(client, operator_headers, partners):
    northwind, skyline = partners
    publish(client, operator_headers)
    member = active_member(client, northwind)
    friend = active_member(client, skyline, ref="friend")
    number = member.member_number
    earn(client, northwind, number, "n1", spend={"amount": "300", "currency": "GBP"})
    earn(client, skyline, number, "s1", 200)
    response = client.post("/v1/burn", json={"member_number": number, "partner_txn_id": "b1",
                                             "points": 120}, headers=skyline)
    assert response.status_code == 201
    earn(client, skyline, friend.member_number, "f1", 25)
    transfers.transfer(member_id_of(friend.member_number), number, 25)
    headers = bearer_of(member_token(client, member))

    page = client.get("/v1/me/transactions", headers=headers).get_json()
    items = page["items"]
    assert [i["type"] for i in items] == ["transfer", "burn", "earn", "earn", "release",
                                         "bonus"]
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    transfer, burn, second, first, release, bonus = items
    assert (burn["partner"], burn["partner_name"], burn["points"]) == \
        ("skyline", "Skyline Fuel", 120)
    assert burn["change"] == {"available": -120, "pending": 0, "held": 0}
    assert burn["balance"] == {"available": 430, "pending": 0, "held": 0}
    assert (second["partner_name"], first["partner_name"]) == ("Skyline Fuel",
                                                               "Northwind Grocers")
    assert first["change"]["available"] == 300 and first["partner_txn_id"] == "n1"
    # the welcome bonus is pending until the first earn from a spend releases it
    assert bonus["partner"] is None and bonus["change"]["pending"] == 50
    assert release["change"] == {"available": 50, "pending": -50, "held": 0}
    # a transfer received is in the receiver's history, with what it did to the balance
    assert transfer["change"] == {"available": 25, "pending": 0, "held": 0}
    assert transfer["balance"] is None      # the entry's balances are the sender's
    assert page["next_cursor"] is None

    # the sender sees it as money out
    sender = client.get("/v1/me/transactions",
                        headers=bearer_of(member_token(client, friend))).get_json()
    assert sender["items"][0]["type"] == "transfer"
    assert sender["items"][0]["change"]["available"] == -25


def test_history_pages_with_a_cursor(client, operator_headers, partners):
    northwind, _ = partners
    publish(client, operator_headers, bonuses={"welcome": 0, "birthday": 0})
    member = active_member(client, northwind)
    for n in range(5):
        earn(client, northwind, member.member_number, f"e{n}", n + 1)
    headers = bearer_of(member_token(client, member))
    seen, cursor = [], None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/me/transactions", query_string=query, headers=headers)
        assert page.status_code == 200
        body = page.get_json()
        seen += [i["points"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]
    only = client.get("/v1/me/transactions", query_string={"type": "bonus"},
                      headers=headers).get_json()
    assert only["items"] == []
    bad = client.get("/v1/me/transactions", query_string={"cursor": "nonsense!"},
                     headers=headers)
    assert bad.status_code == 422 and "cursor" in bad.get_json()["errors"]
    bad_type = client.get("/v1/me/transactions", query_string={"type": "nope"},
                          headers=headers)
    assert bad_type.status_code == 422


def test_one_member_never_sees_another(client, operator_headers, partners):
    northwind, _ = partners
    publish(client, operator_headers)
    ada = active_member(client, northwind, ref="ada")
    bob = active_member(client, northwind, ref="bob")
    earn(client, northwind, bob.member_number, "b1", 999)
    me = client.get("/v1/me", headers=bearer_of(member_token(client, ada))).get_json()
    assert me["member_number"] == ada.member_number
    assert (me["available"], me["pending"], me["awaiting_first_spend"]) == (0, 50, 50)
    history = client.get("/v1/me/transactions",
                         headers=bearer_of(member_token(client, ada))).get_json()
    assert [i["type"] for i in history["items"]] == ["bonus"]


def test_me_is_documented_with_the_member_scope(client):
    spec = client.get("/openapi.json").get_json()
    for path in ("/v1/me", "/v1/me/transactions"):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [{"oauth2": ["member"]}]
        assert {"401", "403"} <= set(operation["responses"])
    flows = spec["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["authorizationCode"]["authorizationUrl"] == "/oauth/authorize"
    assert flows["authorizationCode"]["scopes"] == {"member": "member"}
    assert "security" not in spec["paths"]["/v1/members/activate"]["post"]


def test_decimal_multiplier_is_a_string(client, operator_headers, partners):
    northwind, _ = partners
    publish(client, operator_headers)
    member = active_member(client, northwind)
    tier = client.get("/v1/me", headers=bearer_of(member_token(client, member))
                      ).get_json()["tier"]
    assert isinstance(tier["multiplier"], str) and Decimal(tier["multiplier"]) == 1
