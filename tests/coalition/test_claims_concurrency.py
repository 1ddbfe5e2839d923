"""Missing-points claims under real concurrency, on PostgreSQL: an answer is decided once
however many arrive together, a receipt is claimed once, the open-claims cap holds."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from coalition import clock
from coalition.schemas import rfc3339
from tests.coalition.test_concurrency import (  # noqa: F401 - server is a fixture
    Api,
    Reply,
    available,
    enrol,
    run_concurrently,
    scalar,
    server,
    unexpected,
)
from tests.factories.member_records import assert_clean, member_token
from tests.factories.partner_api import publish

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("many_connections")]


def _claim_body(receipt: str) -> dict[str, Any]:
    return {"partner": "acme", "receipt": receipt,
            "spend": {"amount": "42.50", "currency": "GBP"},
            "occurred_at": rfc3339(clock.utcnow() - timedelta(days=1))}


def _open(client: Any, number: str, receipt: str = "R-1") -> int:
    response = client.post("/v1/me/claims", json=_claim_body(receipt),
                           headers=member_token(number))
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


@pytest.fixture
def acme(client: Any, make_partner: Any, operator_headers: dict[str, str]) -> dict[str, str]:
    publish(client, operator_headers)
    return make_partner("acme")[1]


def test_confirmations_and_refusals_at_once_decide_once(server, client, acme):  # noqa: F811
    number = enrol(client, acme, "race-1")
    claim_id = _open(client, number)

    def answer(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, acme) as api:
            api.warm_up()
            barrier.wait()
            if i % 2:
                return api.post(f"/v1/claims/{claim_id}/refuse", {"reason": f"no {i}"})
            return api.post(f"/v1/claims/{claim_id}/confirm", {})

    replies = run_concurrently(16, answer)
    assert not unexpected(replies, {200: {None}, 409: {"claim_answered"}}), replies
    status = scalar("SELECT status FROM claim WHERE id = :i", i=claim_id)
    winners = [r for r in replies if r.status == 200 and not r.replayed]
    assert len(winners) == 1 and winners[0].body["status"] == status
    # every answer the same way as the winner succeeded (a replay), every other was refused
    for reply in replies:
        assert (reply.status == 200) == (reply.body.get("status") == status), reply
    entries = scalar("SELECT COUNT(*) FROM entry WHERE partner_txn_id = :t",
                     t=f"claim-{claim_id}")
    assert entries == (1 if status == "confirmed" else 0)
    assert available(client, acme, number)["available"] == (42 if entries else 0)
    assert scalar("SELECT COUNT(*) FROM notification") == 1
    assert_clean()


def test_many_confirmations_at_once_book_once(server, client, acme):  # noqa: F811
    number = enrol(client, acme, "race-2")
    claim_id = _open(client, number)

    def confirm(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, acme) as api:
            api.warm_up()
            barrier.wait()
            return api.post(f"/v1/claims/{claim_id}/confirm", {})

    replies = run_concurrently(16, confirm)
    assert [r.status for r in replies] == [200] * 16, replies
    assert sum(not r.replayed for r in replies) == 1
    assert all(r.body == replies[0].body for r in replies)
    assert available(client, acme, number)["available"] == 42
    assert scalar("SELECT COUNT(*) FROM entry WHERE kind = 'earn'") == 1
    assert_clean()


def test_one_receipt_claimed_by_many_members_at_once_is_claimed_once(server, client,  # noqa: F811
                                                                     acme):
    members = [enrol(client, acme, f"race-{i}") for i in range(8)]
    tokens = [member_token(number) for number in members]

    def open_claim(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, tokens[i]) as api:
            api.warm_up()
            barrier.wait()
            return api.post("/v1/me/claims", _claim_body("R-same"))

    replies = run_concurrently(8, open_claim)
    assert sorted(r.status for r in replies) == [201] + [409] * 7, replies
    assert not unexpected(replies, {201: {None}, 409: {"already_exists"}})
    assert scalar("SELECT COUNT(*) FROM claim") == 1


def test_the_open_claims_cap_holds_at_once(server, client, acme,  # noqa: F811
                                           operator_headers):
    publish(client, operator_headers, claims={"window_days": 30, "max_open": 3})
    number = enrol(client, acme, "race-cap")
    headers = member_token(number)

    def open_claim(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            return api.post("/v1/me/claims", _claim_body(f"R-{i}"))

    replies = run_concurrently(10, open_claim)
    assert sorted(r.status for r in replies) == [201] * 3 + [409] * 7, replies
    assert not unexpected(replies, {201: {None}, 409: {"claim_limit"}})
    assert scalar("SELECT COUNT(*) FROM claim WHERE status = 'open'") == 3
