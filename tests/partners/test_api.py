"""The partner API through the HTTP client (API.md "Partner"): members, earn, burn, holds,
reversals, idempotency and history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from coalition.ledger import numbers
from tests.conftest import snapshot
from tests.factories.partner_api import (
    TRANSACTION_KEYS,
    assert_error,
    balance,
    burn,
    earn,
    enrol,
    hold,
    luhn_ok,
    post_ok,
    publish,
)


@pytest.fixture
def acme(make_partner):
    return make_partner("acme")


@pytest.fixture
def rules(client, operator_headers):
    publish(client, operator_headers)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- members


def test_enrol_creates_a_member_with_a_luhn_number_and_finds_it_again(client, acme):
    _, headers = acme
    created = client.post("/v1/members", json={"partner_member_ref": "cust-1",
                                                "name": "Ada Lovelace",
                                                "email": "ada@example.com",
                                                "birth_date": "1990-12-10"}, headers=headers)
    assert created.status_code == 201
    member = created.get_json()
    number = member["member_number"]
    assert len(number) == 12 and luhn_ok(number) and numbers.is_valid(number)
    assert member["status"] == "active"
    assert member["partner_member_ref"] == "cust-1"
    assert member["name"] == "Ada Lovelace"
    assert member["email"] == "ada@example.com"
    assert member["birth_date"] == "1990-12-10"
    assert member["balance"] == {"available": 0, "pending": 0, "held": 0}

    again = client.post("/v1/members", json={"partner_member_ref": "cust-1"}, headers=headers)
    assert again.status_code == 200
    assert again.get_json()["member_number"] == number

    other = client.post("/v1/members", json={"partner_member_ref": "cust-2"}, headers=headers)
    assert other.status_code == 201
    assert other.get_json()["member_number"] != number
    assert luhn_ok(other.get_json()["member_number"])


def test_many_member_numbers_all_carry_a_valid_check_digit(client, acme):
    _, headers = acme
    found = {enrol(client, headers, f"c{i}") for i in range(10)}
    assert len(found) == 10
    assert all(luhn_ok(n) and len(n) == 12 for n in found)


def test_another_partner_links_an_existing_member_and_sees_none_of_its_personal_data(
        client, make_partner):
    _, acme = make_partner("acme")
    _, bravo = make_partner("bravo")
    number = enrol(client, acme, "a-1", name="Grace Hopper", email="grace@example.com")

    unlinked = client.get(f"/v1/members/{number}", headers=bravo)
    assert unlinked.status_code == 200
    body = unlinked.get_json()
    assert body["member_number"] == number
    assert body["name"] is None and body["email"] is None and body["birth_date"] is None
    assert body["partner_member_ref"] is None

    linked = client.post("/v1/members", json={"partner_member_ref": "b-77",
                                              "member_number": number}, headers=bravo)
    assert linked.status_code == 200
    assert linked.get_json()["member_number"] == number
    assert linked.get_json()["partner_member_ref"] == "b-77"

    # personal data is the member's: linking the number reveals none of it
    assert (linked.get_json()["name"], linked.get_json()["email"]) == (None, None)
    seen = client.get(f"/v1/members/{number}", headers=bravo).get_json()
    assert seen["name"] is None and seen["email"] is None and seen["birth_date"] is None
    assert seen["partner_member_ref"] == "b-77"
    by_ref = client.get("/v1/members", query_string={"partner_member_ref": "b-77"},
                        headers=bravo)
    assert by_ref.status_code == 200
    assert by_ref.get_json()["member_number"] == number

    # linking again with the same reference finds the same member; nothing new is written
    before = snapshot(client.application)
    again = client.post("/v1/members", json={"partner_member_ref": "b-77",
                                             "member_number": number}, headers=bravo)
    assert again.status_code == 200
    assert snapshot(client.application) == before

    # bravo can now earn against its own reference for that member
    txn = post_ok(client, "/v1/earn", bravo, {"partner_member_ref": "b-77",
                                              "partner_txn_id": "t1", "points": 5})
    assert txn["member_number"] == number and txn["partner"] == "bravo"


def test_lookup_by_number_and_by_reference(client, acme):
    _, headers = acme
    number = enrol(client, headers, "ref-9", name="Alan")
    earn(client, headers, number, "t1", points=42)

    by_number = client.get(f"/v1/members/{number}", headers=headers)
    assert by_number.status_code == 200
    member = by_number.get_json()
    assert member["member_number"] == number
    assert member["partner_member_ref"] == "ref-9"
    assert member["name"] == "Alan"
    assert member["balance"] == {"available": 42, "pending": 0, "held": 0}

    by_ref = client.get("/v1/members", query_string={"partner_member_ref": "ref-9"},
                        headers=headers)
    assert by_ref.status_code == 200
    assert by_ref.get_json() == member

    missing = client.get("/v1/members", query_string={"partner_member_ref": "nobody"},
                         headers=headers)
    assert_error(missing, 404, "not_found")


def test_balance_shows_points_grouped_by_expiry_and_the_tier(client, acme, rules):
    _, headers = acme
    number = enrol(client, headers, "c1")
    before = datetime.now(UTC).replace(microsecond=0)
    earn(client, headers, number, "t1", points=30)
    after = datetime.now(UTC)

    body = balance(client, headers, number)
    assert body["member_number"] == number
    assert body["available"] == 30 and body["pending"] == 0 and body["held"] == 0
    assert body["tier"] == "blue"
    assert len(body["expiring"]) == 1
    assert body["expiring"][0]["points"] == 30
    expires = ts(body["expiring"][0]["expires_at"])
    # twelve months after the earn
    assert before.replace(year=before.year + 1) <= expires <= after.replace(
        year=after.year + 1)


def test_without_an_expiry_policy_nothing_is_listed_as_expiring(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=10)
    body = balance(client, headers, number)
    assert body["available"] == 10
    assert body["expiring"] == []


# --------------------------------------------------------------------------- earn


def test_earn_from_spend_is_rate_times_amount_rounded_down(client, make_partner):
    _, headers = make_partner("acme", earn_rate=Decimal("1.5"))
    number = enrol(client, headers, "c1")
    response = client.post("/v1/earn", json={"member_number": number, "partner_txn_id": "till-1",
                                             "spend": {"amount": "10.99", "currency": "GBP"}},
                           headers=headers)
    assert response.status_code == 201
    txn = response.get_json()
    assert "Idempotent-Replayed" not in response.headers
    assert TRANSACTION_KEYS <= set(txn)
    assert txn["type"] == "earn"
    assert txn["partner"] == "acme"
    assert txn["member_number"] == number
    assert txn["partner_txn_id"] == "till-1"
    assert txn["points"] == 16  # 1.5 x 10.99 = 16.485
    assert txn["status"] == "posted"
    assert txn["balance"] == {"available": 16, "pending": 0, "held": 0}
    assert txn["spend"] == {"amount": "10.99", "currency": "GBP"}
    assert isinstance(txn["id"], int)
    booked = ts(txn["booked_at"])
    assert abs(booked - datetime.now(UTC)) < timedelta(minutes=1)
    assert txn["occurred_at"] == txn["booked_at"]
    assert txn["booked_at"].endswith("Z")

    got = client.get(f"/v1/transactions/{txn['id']}", headers=headers)
    assert got.status_code == 200
    assert got.get_json() == txn


def test_earn_by_points_and_by_partner_member_ref(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    first = earn(client, headers, number, "t1", points=250)
    assert first["points"] == 250 and first["balance"]["available"] == 250
    second = post_ok(client, "/v1/earn", headers,
                     {"partner_member_ref": "c1", "partner_txn_id": "t2", "points": 7})
    assert second["member_number"] == number
    assert second["balance"] == {"available": 257, "pending": 0, "held": 0}


def test_the_largest_point_amount_is_accepted(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    txn = earn(client, headers, number, "t1", points=2**53 - 1)
    assert txn["points"] == 2**53 - 1
    assert balance(client, headers, number)["available"] == 2**53 - 1


def test_pending_days_make_earned_points_pending(client, acme, operator_headers):
    publish(client, operator_headers, pending_days=14)
    _, headers = acme
    number = enrol(client, headers, "c1")
    txn = earn(client, headers, number, "t1", points=80)
    assert txn["status"] == "pending"
    assert txn["balance"] == {"available": 0, "pending": 80, "held": 0}
    got = client.get(f"/v1/transactions/{txn['id']}", headers=headers).get_json()
    assert got["status"] == "pending"
    body = balance(client, headers, number)
    assert (body["available"], body["pending"], body["held"]) == (0, 80, 0)
    assert body["expiring"] == []
    # pending points are not spendable
    refused = client.post("/v1/burn", json={"member_number": number, "partner_txn_id": "b1",
                                            "points": 1}, headers=headers)
    assert_error(refused, 409, "insufficient_points")
    # and a pending earn can be reversed (the return window)
    reversal = post_ok(client, f"/v1/transactions/{txn['id']}/reversals", headers,
                       {"partner_txn_id": "r1", "points": 30})
    assert reversal["type"] == "earn_reversal"
    assert reversal["balance"] == {"available": 0, "pending": 50, "held": 0}


def test_tier_multiplier_applies_after_the_earn_that_crosses_the_threshold(client, acme, rules):
    _, headers = acme  # earn_rate 1; silver (from 100 qualifying points) multiplies by 2
    number = enrol(client, headers, "c1")
    assert balance(client, headers, number)["tier"] == "blue"
    earn(client, headers, number, "t1", points=90)
    assert balance(client, headers, number)["tier"] == "blue"

    spend = {"amount": "10.00", "currency": "GBP"}
    crossing = earn(client, headers, number, "t2", spend=spend)
    assert crossing["points"] == 10  # earned at blue x1; this earn reaches 100
    assert balance(client, headers, number)["tier"] == "silver"
    assert client.get(f"/v1/members/{number}", headers=headers).get_json()["tier"] == "silver"

    doubled = earn(client, headers, number, "t3", spend=spend)
    assert doubled["points"] == 20
    assert doubled["balance"]["available"] == 120

    # a points earn is credited as given, without the multiplier
    assert earn(client, headers, number, "t4", points=5)["points"] == 5


def test_occurred_at_is_honoured_and_a_bare_date_means_midnight_utc(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    dated = earn(client, headers, number, "t1", points=1, occurred_at="2025-03-07")
    assert dated["occurred_at"] == "2025-03-07T00:00:00Z"
    assert dated["booked_at"] != dated["occurred_at"]
    offset = earn(client, headers, number, "t2", points=1,
                  occurred_at="2025-03-07T23:30:15+02:00")
    assert offset["occurred_at"] == "2025-03-07T21:30:15Z"
    fraction = burn(client, headers, number, "t3", points=1,
                    occurred_at="2025-03-08T08:00:01.75Z")
    assert fraction["occurred_at"] == "2025-03-08T08:00:01Z"
    # a till clock a little ahead of the server is tolerated
    soon = (datetime.now(UTC) + timedelta(minutes=2)).replace(microsecond=0)
    ahead = earn(client, headers, number, "t4", points=1,
                 occurred_at=soon.isoformat().replace("+00:00", "Z"))
    assert ts(ahead["occurred_at"]) == soon
    listed = client.get("/v1/transactions", headers=headers).get_json()["items"]
    assert {t["partner_txn_id"]: t["occurred_at"] for t in listed}["t1"] == \
        "2025-03-07T00:00:00Z"


# --------------------------------------------------------------------------- burn


def test_burn_spends_points_and_reports_the_balance(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=100)
    txn = burn(client, headers, number, "b1", points=40)
    assert TRANSACTION_KEYS <= set(txn)
    assert txn["type"] == "burn" and txn["points"] == 40 and txn["status"] == "posted"
    assert txn["balance"] == {"available": 60, "pending": 0, "held": 0}
    # the whole balance can be spent, to zero
    assert burn(client, headers, number, "b2", points=60)["balance"]["available"] == 0


def test_burn_consumes_the_earliest_expiring_points_first(client, acme, operator_headers):
    _, headers = acme
    publish(client, operator_headers, expiry={"policy": "fixed", "months": 12})
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "mid", points=100)        # expires in 12 months
    publish(client, operator_headers, expiry={"policy": "fixed", "months": 24})
    earn(client, headers, number, "late", points=100)       # expires in 24 months
    publish(client, operator_headers, expiry={"policy": "fixed", "months": 6})
    earn(client, headers, number, "early", points=100)      # earned last, expires first

    expiring = balance(client, headers, number)["expiring"]
    assert [e["points"] for e in expiring] == [100, 100, 100]
    early, mid, late = (e["expires_at"] for e in expiring)
    assert ts(early) < ts(mid) < ts(late)

    first = burn(client, headers, number, "b1", points=150)
    assert first["balance"]["available"] == 150
    assert balance(client, headers, number)["expiring"] == [
        {"date": mid[:10], "points": 50, "expires_at": mid},
        {"date": late[:10], "points": 100, "expires_at": late}]

    second = burn(client, headers, number, "b2", points=70)
    assert balance(client, headers, number)["expiring"] == [
        {"date": late[:10], "points": 80, "expires_at": late}]

    # reversing the first burn brings its points back with their original expiry dates
    back = post_ok(client, f"/v1/transactions/{first['id']}/reversals", headers,
                   {"partner_txn_id": "r1"})
    assert back["type"] == "burn_reversal" and back["points"] == 150
    assert back["balance"]["available"] == 230
    assert balance(client, headers, number)["expiring"] == [
        {"date": early[:10], "points": 100, "expires_at": early},
        {"date": mid[:10], "points": 50, "expires_at": mid},
        {"date": late[:10], "points": 80, "expires_at": late}]
    # the second burn took 50 from the lot expiring mid and 20 from the late one; a partial
    # reversal gives back the latest-expiring points first (as a partial capture does)
    post_ok(client, f"/v1/transactions/{second['id']}/reversals", headers,
            {"partner_txn_id": "r2", "points": 30})
    assert balance(client, headers, number)["expiring"] == [
        {"date": early[:10], "points": 100, "expires_at": early},
        {"date": mid[:10], "points": 60, "expires_at": mid},
        {"date": late[:10], "points": 100, "expires_at": late}]
    post_ok(client, f"/v1/transactions/{second['id']}/reversals", headers,
            {"partner_txn_id": "r3"})
    assert balance(client, headers, number)["expiring"] == [
        {"date": early[:10], "points": 100, "expires_at": early},
        {"date": mid[:10], "points": 100, "expires_at": mid},
        {"date": late[:10], "points": 100, "expires_at": late}]


# --------------------------------------------------------------------------- holds


def test_hold_then_capture_in_full(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=300)
    authorised = hold(client, headers, number, "h1", points=100)
    assert authorised["status"] == "open"
    assert authorised["points"] == 100 and authorised["captured_points"] == 0
    assert authorised["member_number"] == number and authorised["partner"] == "acme"
    assert authorised["partner_txn_id"] == "h1"
    assert authorised["balance"] == {"available": 200, "pending": 0, "held": 100}
    created = ts(authorised["created_at"])
    assert ts(authorised["expires_at"]) == created + timedelta(seconds=900)  # the default

    got = client.get(f"/v1/holds/{authorised['id']}", headers=headers)
    assert got.status_code == 200
    assert got.get_json()["status"] == "open"

    captured = post_ok(client, f"/v1/holds/{authorised['id']}/capture", headers,
                       {"partner_txn_id": "c1"})
    assert TRANSACTION_KEYS <= set(captured)
    assert captured["type"] == "hold_capture"
    assert captured["points"] == 100
    assert captured["status"] == "posted"
    assert captured["balance"] == {"available": 200, "pending": 0, "held": 0}
    after = client.get(f"/v1/holds/{authorised['id']}", headers=headers).get_json()
    assert after["status"] == "captured" and after["captured_points"] == 100
    assert balance(client, headers, number)["held"] == 0


def test_partial_capture_returns_the_rest(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=300)
    authorised = hold(client, headers, number, "h1", points=100, expires_in=120)
    assert ts(authorised["expires_at"]) == ts(authorised["created_at"]) + timedelta(seconds=120)
    captured = post_ok(client, f"/v1/holds/{authorised['id']}/capture", headers,
                       {"partner_txn_id": "c1", "points": 60})
    assert captured["points"] == 60
    assert captured["balance"] == {"available": 240, "pending": 0, "held": 0}
    got = client.get(f"/v1/holds/{authorised['id']}", headers=headers).get_json()
    assert got["status"] == "captured" and got["captured_points"] == 60
    body = balance(client, headers, number)
    assert (body["available"], body["held"]) == (240, 0)


def test_void_returns_every_held_point(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=300)
    authorised = hold(client, headers, number, "h1", points=120)
    voided = post_ok(client, f"/v1/holds/{authorised['id']}/void", headers,
                     {"partner_txn_id": "v1"})
    assert voided["id"] == authorised["id"]
    assert voided["status"] == "voided"
    assert voided["balance"] == {"available": 300, "pending": 0, "held": 0}
    assert client.get(f"/v1/holds/{authorised['id']}",
                      headers=headers).get_json()["status"] == "voided"
    # a void is not a partner transaction: history shows only the earn
    listed = client.get("/v1/transactions", headers=headers).get_json()["items"]
    assert [t["type"] for t in listed] == ["earn"]


def test_held_points_cannot_be_burnt_twice(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=100)
    hold(client, headers, number, "h1", points=80)
    before = snapshot(client.application)
    refused = client.post("/v1/burn", json={"member_number": number, "partner_txn_id": "b1",
                                            "points": 21}, headers=headers)
    assert_error(refused, 409, "insufficient_points")
    assert snapshot(client.application) == before
    assert burn(client, headers, number, "b2", points=20)["balance"] == {
        "available": 0, "pending": 0, "held": 80}


# --------------------------------------------------------------------------- reversals


def test_earn_reversal_by_points(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    original = earn(client, headers, number, "t1", points=100)
    reversal = post_ok(client, f"/v1/transactions/{original['id']}/reversals", headers,
                       {"partner_txn_id": "r1", "points": 25})
    assert TRANSACTION_KEYS <= set(reversal)
    assert reversal["type"] == "earn_reversal"
    assert reversal["points"] == 25
    assert reversal["reference"] == original["id"]
    assert reversal["member_number"] == number and reversal["partner_txn_id"] == "r1"
    assert reversal["balance"] == {"available": 75, "pending": 0, "held": 0}
    # without points, the rest is reversed
    rest = post_ok(client, f"/v1/transactions/{original['id']}/reversals", headers,
                   {"partner_txn_id": "r2"})
    assert rest["points"] == 75 and rest["balance"]["available"] == 0


def test_earn_reversal_by_refund_is_pro_rata_and_never_exceeds_the_earn(client, make_partner):
    _, headers = make_partner("acme", earn_rate=Decimal("1.5"))
    number = enrol(client, headers, "c1")
    original = earn(client, headers, number, "t1",
                    spend={"amount": "10.99", "currency": "GBP"})
    assert original["points"] == 16
    path = f"/v1/transactions/{original['id']}/reversals"
    first = post_ok(client, path, headers, {"partner_txn_id": "r1",
                                            "refund": {"amount": "5.00", "currency": "GBP"}})
    assert first["points"] == 7  # 16 x 5.00 / 10.99 = 7.28, rounded down
    assert first["spend"]["currency"] == "GBP"
    assert Decimal(first["spend"]["amount"]) == Decimal("5.00")
    second = post_ok(client, path, headers, {"partner_txn_id": "r2",
                                             "refund": {"amount": "5.99", "currency": "GBP"}})
    assert second["points"] == 9  # the last part of a full refund returns the rest
    assert second["balance"]["available"] == 0
    before = snapshot(client.application)
    more = client.post(path, json={"partner_txn_id": "r3",
                                   "refund": {"amount": "0.01", "currency": "GBP"}},
                       headers=headers)
    assert_error(more, 422, "invalid_request")
    assert snapshot(client.application) == before


def test_partial_reversals_add_up_to_the_original_and_no_further(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t0", points=1000)
    original = earn(client, headers, number, "t1", points=100)
    path = f"/v1/transactions/{original['id']}/reversals"
    for index, points in enumerate((30, 45, 25)):
        post_ok(client, path, headers, {"partner_txn_id": f"r{index}", "points": points})
    assert balance(client, headers, number)["available"] == 1000
    before = snapshot(client.application)
    for body in ({"partner_txn_id": "r9", "points": 1}, {"partner_txn_id": "r9"}):
        assert_error(client.post(path, json=body, headers=headers), 422, "invalid_request",
                     {"points"})
    assert snapshot(client.application) == before


def test_burn_reversal_in_parts_then_refused(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=100)
    spent = burn(client, headers, number, "b1", points=60)
    path = f"/v1/transactions/{spent['id']}/reversals"
    one = post_ok(client, path, headers, {"partner_txn_id": "r1", "points": 10})
    assert one["type"] == "burn_reversal" and one["reference"] == spent["id"]
    assert one["balance"]["available"] == 50
    two = post_ok(client, path, headers, {"partner_txn_id": "r2", "points": 50})
    assert two["balance"]["available"] == 100
    before = snapshot(client.application)
    assert_error(client.post(path, json={"partner_txn_id": "r3", "points": 1}, headers=headers),
                 422, "invalid_request", {"points"})
    assert snapshot(client.application) == before


def test_capture_reversal(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=200)
    authorised = hold(client, headers, number, "h1", points=100)
    captured = post_ok(client, f"/v1/holds/{authorised['id']}/capture", headers,
                       {"partner_txn_id": "c1", "points": 80})
    assert captured["balance"]["available"] == 120
    path = f"/v1/transactions/{captured['id']}/reversals"
    part = post_ok(client, path, headers, {"partner_txn_id": "r1", "points": 30})
    assert part["type"] == "burn_reversal"
    assert part["reference"] == captured["id"]
    assert part["points"] == 30
    assert part["balance"] == {"available": 150, "pending": 0, "held": 0}
    rest = post_ok(client, path, headers, {"partner_txn_id": "r2"})
    assert rest["points"] == 50 and rest["balance"]["available"] == 200
    assert_error(client.post(path, json={"partner_txn_id": "r3", "points": 1}, headers=headers),
                 422, "invalid_request")


# --------------------------------------------------------------------------- idempotency


def test_a_retry_returns_the_original_result_marked_as_a_replay(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    body = {"member_number": number, "partner_txn_id": "t1", "points": 10,
            "occurred_at": "2025-01-02"}
    first = client.post("/v1/earn", json=body, headers=headers)
    assert first.status_code == 201
    earn(client, headers, number, "t2", points=5)  # the balance moves on meanwhile
    before = snapshot(client.application)
    replay = client.post("/v1/earn", json=body, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    assert snapshot(client.application) == before

    # the same for a burn, a hold, a capture, a void and a reversal
    spent = client.post("/v1/burn", json={"member_number": number, "partner_txn_id": "b1",
                                          "points": 3}, headers=headers).get_json()["id"]
    h1, h2 = (client.post("/v1/holds", json={"member_number": number, "partner_txn_id": txn,
                                             "points": 2}, headers=headers).get_json()["id"]
              for txn in ("h1", "h2"))
    for path, request in (
        ("/v1/burn", {"member_number": number, "partner_txn_id": "b2", "points": 3}),
        ("/v1/holds", {"member_number": number, "partner_txn_id": "h3", "points": 2}),
        (f"/v1/holds/{h1}/capture", {"partner_txn_id": "c1", "points": 1}),
        (f"/v1/holds/{h2}/void", {"partner_txn_id": "v1"}),
        (f"/v1/transactions/{spent}/reversals", {"partner_txn_id": "r1", "points": 1}),
    ):
        original = client.post(path, json=request, headers=headers)
        assert original.status_code == 201, original.get_json()
        assert "Idempotent-Replayed" not in original.headers
        before = snapshot(client.application)
        again = client.post(path, json=request, headers=headers)
        assert (again.status_code, again.get_json()) == (201, original.get_json()), path
        assert again.headers["Idempotent-Replayed"] == "true"
        assert snapshot(client.application) == before


def test_a_replayed_spend_earn_is_the_original_body(client, acme):
    """The first answer and a replay (read back from the database) agree to the byte,
    whatever the spelling of the amount."""
    _, headers = acme
    for index, amount in enumerate(["10.00", "10.50", "10", "17.1234"]):
        _replayed_spend_earn(client, headers, enrol(client, headers, f"c{index}"), amount)


def _replayed_spend_earn(client, headers, number, amount):
    body = {"member_number": number, "partner_txn_id": f"t-{amount}",
            "spend": {"amount": amount, "currency": "GBP"}}
    first = client.post("/v1/earn", json=body, headers=headers)
    assert first.status_code == 201, first.get_json()
    replay = client.post("/v1/earn", json=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    assert client.get(f"/v1/transactions/{first.get_json()['id']}",
                      headers=headers).get_json() == first.get_json()
    assert Decimal(first.get_json()["spend"]["amount"]) == Decimal(amount)

    refund = {"partner_txn_id": f"r-{amount}", "refund": {"amount": "5.00", "currency": "GBP"}}
    path = f"/v1/transactions/{first.get_json()['id']}/reversals"
    original = client.post(path, json=refund, headers=headers)
    assert original.status_code == 201, original.get_json()
    again = client.post(path, json=refund, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == original.get_json()


def test_a_replay_answers_even_after_the_member_was_closed(client, acme, app):
    from tests.factories.partner_api import set_member_status

    _, headers = acme
    number = enrol(client, headers, "c1")
    body = {"member_number": number, "partner_txn_id": "t1", "points": 10}
    first = client.post("/v1/earn", json=body, headers=headers)
    set_member_status(app, number, "closed")
    replay = client.post("/v1/earn", json=body, headers=headers)
    assert (replay.status_code, replay.get_json()) == (201, first.get_json())
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_a_different_request_with_the_same_id_is_an_idempotency_conflict(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=10)
    before = snapshot(client.application)
    conflict = client.post("/v1/earn", json={"member_number": number, "partner_txn_id": "t1",
                                             "points": 11}, headers=headers)
    assert_error(conflict, 409, "idempotency_conflict", {"partner_txn_id"})
    assert "Idempotent-Replayed" not in conflict.headers
    # the same id for a burn is a different request too
    as_burn = client.post("/v1/burn", json={"member_number": number, "partner_txn_id": "t1",
                                            "points": 10}, headers=headers)
    assert_error(as_burn, 409, "idempotency_conflict")
    as_hold = client.post("/v1/holds", json={"member_number": number, "partner_txn_id": "t1",
                                             "points": 10}, headers=headers)
    assert_error(as_hold, 409, "idempotency_conflict")
    assert snapshot(client.application) == before


def test_an_id_used_by_a_burn_cannot_then_earn(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=10)
    burn(client, headers, number, "x", points=4)
    before = snapshot(client.application)
    refused = client.post("/v1/earn", json={"member_number": number, "partner_txn_id": "x",
                                            "points": 4}, headers=headers)
    assert_error(refused, 409, "idempotency_conflict")
    assert snapshot(client.application) == before


def test_partner_txn_ids_are_per_partner(client, make_partner):
    _, acme = make_partner("acme")
    _, bravo = make_partner("bravo")
    number = enrol(client, acme, "c1")
    a = earn(client, acme, number, "same-id", points=10)
    b = earn(client, bravo, number, "same-id", points=10)
    assert a["id"] != b["id"]
    assert b["balance"]["available"] == 20


# --------------------------------------------------------------------------- history


def test_history_is_newest_first_and_pages_with_a_cursor(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    ids = [earn(client, headers, number, f"t{i}", points=i + 1)["id"] for i in range(7)]
    seen, cursor, sizes = [], None, []
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/transactions", query_string=query, headers=headers)
        assert response.status_code == 200
        page = response.get_json()
        assert set(page) == {"items", "next_cursor"}
        sizes.append(len(page["items"]))
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
    assert sizes == [3, 3, 1]
    assert seen == list(reversed(ids))

    # exactly a page's worth leaves no empty last page
    full = client.get("/v1/transactions", query_string={"limit": 7}, headers=headers).get_json()
    assert [t["id"] for t in full["items"]] == list(reversed(ids))
    assert full["next_cursor"] is None
    default = client.get("/v1/transactions", headers=headers).get_json()
    assert len(default["items"]) == 7 and default["next_cursor"] is None
    item = default["items"][0]
    assert TRANSACTION_KEYS <= set(item) and item["partner_txn_id"] == "t6"


def test_a_page_is_stable_while_new_transactions_arrive(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    ids = [earn(client, headers, number, f"t{i}", points=1)["id"] for i in range(5)]
    page = client.get("/v1/transactions", query_string={"limit": 2},
                      headers=headers).get_json()
    earn(client, headers, number, "late", points=1)
    rest = client.get("/v1/transactions", query_string={"limit": 10, "cursor": page["next_cursor"]},
                      headers=headers).get_json()
    assert [t["id"] for t in page["items"] + rest["items"]] == list(reversed(ids))


def test_history_filters_by_member_and_type(client, acme):
    _, headers = acme
    one = enrol(client, headers, "c1")
    two = enrol(client, headers, "c2")
    earn(client, headers, one, "e1", points=50)
    earn(client, headers, two, "e2", points=50)
    burn(client, headers, one, "b1", points=5)
    burn(client, headers, two, "b2", points=5)

    def listed(**query):
        response = client.get("/v1/transactions", query_string=query, headers=headers)
        assert response.status_code == 200, response.get_json()
        return [t["partner_txn_id"] for t in response.get_json()["items"]]

    assert listed(member_number=one) == ["b1", "e1"]
    assert listed(type="burn") == ["b2", "b1"]
    assert listed(type="earn", member_number=two) == ["e2"]
    assert listed(type="earn_reversal") == []


def test_history_filters_by_booked_time_half_open(client, make_partner, clock):
    start = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
    _, headers = make_partner("acme", valid_from=start)
    number = enrol(client, headers, "c1")
    for hour in range(4):
        clock.set(start + timedelta(hours=hour))
        earn(client, headers, number, f"t{hour}", points=1)

    def listed(**query):
        response = client.get("/v1/transactions", query_string=query, headers=headers)
        assert response.status_code == 200, response.get_json()
        return [t["partner_txn_id"] for t in response.get_json()["items"]]

    # [10:00, 12:00) holds the earns at 10:00 and 11:00, not the one at 12:00
    assert listed(booked_from="2026-01-10T10:00:00Z", booked_to="2026-01-10T12:00:00Z") == [
        "t2", "t1"]
    assert listed(booked_from="2026-01-10T11:00:00Z") == ["t3", "t2"]
    assert listed(booked_to="2026-01-10T10:00:00Z") == ["t0"]
    # a bare date is midnight UTC, and offsets are honoured
    assert listed(booked_from="2026-01-10", booked_to="2026-01-11") == ["t3", "t2", "t1", "t0"]
    assert listed(booked_to="2026-01-10") == []
    assert listed(booked_from="2026-01-10T12:00:00+02:00") == ["t3", "t2", "t1"]
    # the filters combine with paging
    page = client.get("/v1/transactions", query_string={"limit": 1,
                                                        "booked_to": "2026-01-10T12:00:00Z"},
                      headers=headers).get_json()
    assert [t["partner_txn_id"] for t in page["items"]] == ["t2"]
    rest = listed(booked_to="2026-01-10T12:00:00Z", cursor=page["next_cursor"])
    assert rest == ["t1", "t0"]


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_bad_cursor_is_refused(client, acme):
    _, headers = acme
    number = enrol(client, headers, "c1")
    earn(client, headers, number, "t1", points=1)
    for cursor in ("garbage!", "ZZZZ", "%%%", _b64("eabc"), _b64("x12"), _b64("e"),
                   _b64("e-1"), _b64("e" + "9" * 40)):
        response = client.get("/v1/transactions", query_string={"cursor": cursor},
                              headers=headers)
        assert_error(response, 422, "invalid_request", {"cursor"})
