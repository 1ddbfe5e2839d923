"""The catalog under real concurrency, on PostgreSQL only (the harness of
tests/coalition/test_concurrency.py: a threaded server, one HTTP connection per thread,
racing steps released together by a barrier)."""

from __future__ import annotations

import threading

import pytest

from tests.coalition import test_concurrency
from tests.coalition.test_concurrency import (
    Api,
    Reply,
    assert_ledger_consistent,
    enrol,
    post,
    run_concurrently,
    scalar,
    unexpected,
)
from tests.factories.ledger import PRICED_FROM
from tests.factories.member_records import member_token
from tests.factories.partner_api import publish

#: the harness's own app and threaded server, with a pool for ~80 transactions at once
server = test_concurrency.server

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("many_connections")]


def test_64_concurrent_redemptions_of_the_last_10_units_sell_exactly_10(
        server, client, make_partner, operator_headers):
    publish(client, operator_headers)
    _, headers = make_partner("acme", valid_from=PRICED_FROM)
    reward = post(client, headers, "/v1/rewards",
                  {"name": "Spa day", "kind": "service", "points": 100, "stock": 15})
    numbers = []
    for i in range(64):
        number = enrol(client, headers, f"m-{i}")
        post(client, headers, "/v1/earn",
             {"member_number": number, "partner_txn_id": f"seed-{i}", "points": 150})
        numbers.append(number)
    # five units sold before the race: ten left
    for number in numbers[:5]:
        response = client.post("/v1/me/redemptions", json={"reward_id": reward["id"]},
                               headers=member_token(number))
        assert response.status_code == 201, response.get_json()
    tokens = [member_token(number) for number in numbers]

    def redeem(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, tokens[i]) as api:
            api.warm_up()
            barrier.wait()
            return api.post("/v1/me/redemptions", {"reward_id": reward["id"]})

    replies = run_concurrently(64, redeem)
    allowed = {201: {None}, 409: {"out_of_stock", "insufficient_points"}}
    assert not unexpected(replies, allowed), unexpected(replies, allowed)
    won = [i for i, r in enumerate(replies) if r.status == 201]
    assert len(won) == 10
    # the first five members have 50 points left: they cannot pay again
    assert all(replies[i].error == "insufficient_points" for i in range(5))
    assert sum(r.error == "out_of_stock" for r in replies) == 64 - 10 - 5
    assert scalar("SELECT sold FROM reward WHERE id = :r", r=reward["id"]) == 15
    assert scalar("SELECT COUNT(*) FROM voucher") == 15
    assert scalar("SELECT COUNT(*) FROM entry WHERE kind = 'burn'") == 15
    assert len({replies[i].body["voucher_code"] for i in won}) == 10
    assert_ledger_consistent()


def test_two_tills_redeeming_one_voucher_at_once_exactly_one_succeeds(
        server, client, make_partner, operator_headers):
    publish(client, operator_headers)
    _, headers = make_partner("acme", valid_from=PRICED_FROM)
    reward = post(client, headers, "/v1/rewards",
                  {"name": "Coffee", "kind": "voucher", "points": 10})
    number = enrol(client, headers, "coffee-lover")
    post(client, headers, "/v1/earn",
         {"member_number": number, "partner_txn_id": "seed", "points": 1000})
    codes = []
    for _ in range(16):
        response = client.post("/v1/me/redemptions", json={"reward_id": reward["id"]},
                               headers=member_token(number))
        assert response.status_code == 201, response.get_json()
        codes.append(response.get_json()["voucher_code"])

    def use(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            return api.post(f"/v1/vouchers/{codes[i // 2]}/redeem", {})

    replies = run_concurrently(32, use)
    allowed = {200: {None}, 409: {"voucher_used"}}
    assert not unexpected(replies, allowed), unexpected(replies, allowed)
    for pair in range(16):
        assert sorted(r.status for r in replies[2 * pair:2 * pair + 2]) == [200, 409]
    assert scalar("SELECT COUNT(*) FROM voucher WHERE status = 'used'") == 16
    assert_ledger_consistent()
