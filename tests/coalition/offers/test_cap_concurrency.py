"""A promotion's cap under 64 concurrent earns on PostgreSQL: never passed; the earns that
come last get what is left, then nothing, and their base points always book."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text

from coalition.db import read
from tests.coalition.test_concurrency import (
    Api,
    Reply,
    assert_ledger_consistent,
    run_concurrently,
    server,  # noqa: F401 - the fixture
    unexpected,
)
from tests.factories.partner_api import enrol, post_ok, publish

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("many_connections")]


def test_64_concurrent_earns_never_pass_the_cap(server, client, make_partner,  # noqa: F811
                                                operator_headers, clock):
    threads, bonus, cap = 64, 7, 300
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    members = [enrol(client, headers, f"m-{i}") for i in range(threads)]
    offer = post_ok(client, "/v1/offers", headers, {
        "name": "Seven more", "rule": "bonus", "bonus_points": bonus, "opt_in": False,
        "valid_from": (clock() - timedelta(days=1)).isoformat(),
        "valid_to": (clock() + timedelta(days=1)).isoformat(), "cap_points": cap})

    def earn(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            return api.post("/v1/earn", {"member_number": members[i], "partner_txn_id": f"e-{i}",
                                         "spend": {"amount": "10", "currency": "GBP"}})

    replies = run_concurrently(threads, earn)

    assert not unexpected(replies, {201: {None}}), unexpected(replies, {201: {None}})
    given = [sum(line["points"] for line in r.body["lines"] if line["kind"] == "promotion")
             for r in replies]
    assert all(r.body["lines"][0] == {"kind": "base", "points": 10} for r in replies)
    # 42 earns of 7 points and one of the 6 left: 300, and the other 21 none
    assert Counter(given) == {bonus: cap // bonus, cap % bonus: 1,
                              0: threads - cap // bonus - 1}
    assert sum(given) == cap
    with server.app.app_context(), read() as session:
        issued = session.execute(text("SELECT issued_points FROM offer WHERE id = :id"),
                                 {"id": offer["id"]}).scalar_one()
        awarded = session.execute(text("SELECT SUM(points) FROM offer_award")).scalar_one()
    assert issued == awarded == cap
    assert_ledger_consistent()


def test_reversals_give_room_back_while_earns_race_for_it(server, client, make_partner,  # noqa: F811
                                                          operator_headers, clock):
    """Five earns fill a cap of 35 with bonuses of 7; then, at once, two reversals of 5
    points of each of those earns of 17 (⌊7 × 10 / 17⌋ = 4 of each award back, 20 in all)
    and ten new earns racing for that room: the cap is never passed, each award's part
    comes back once, and the issued points are the awards less what came back."""
    bonus, cap, first, racing = 7, 35, 5, 10
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    members = [enrol(client, headers, f"m-{i}") for i in range(first + racing)]
    offer = post_ok(client, "/v1/offers", headers, {
        "name": "Seven more", "rule": "bonus", "bonus_points": bonus, "opt_in": False,
        "valid_from": (clock() - timedelta(days=1)).isoformat(),
        "valid_to": (clock() + timedelta(days=1)).isoformat(), "cap_points": cap})
    earns = [post_ok(client, "/v1/earn", headers, {
        "member_number": members[i], "partner_txn_id": f"e-{i}",
        "spend": {"amount": "10", "currency": "GBP"}}) for i in range(first)]
    assert [e["points"] for e in earns] == [17] * first

    def act(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            if i < 2 * first:
                return api.post(f"/v1/transactions/{earns[i // 2]['id']}/reversals",
                                {"partner_txn_id": f"r-{i}", "points": 5})
            n = first + i - 2 * first
            return api.post("/v1/earn", {"member_number": members[n],
                                         "partner_txn_id": f"e-{n}",
                                         "spend": {"amount": "10", "currency": "GBP"}})

    replies = run_concurrently(2 * first + racing, act)

    assert not unexpected(replies, {201: {None}}), unexpected(replies, {201: {None}})
    new = sum(line["points"] for r in replies[2 * first:] for line in r.body["lines"]
              if line["kind"] == "promotion")
    back = first * (bonus * 10 // 17)
    assert new <= back
    with server.app.app_context(), read() as session:
        issued = session.execute(text("SELECT issued_points FROM offer WHERE id = :id"),
                                 {"id": offer["id"]}).scalar_one()
        awarded = session.execute(text("SELECT SUM(points) FROM offer_award")).scalar_one()
    assert awarded == cap + new
    assert issued == cap - back + new <= cap
    assert_ledger_consistent()
