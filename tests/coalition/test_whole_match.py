"""A pattern checks the whole value. Python's ``$`` also matches before a trailing newline,
so ``^…$`` through ``re.match`` (marshmallow's ``Regexp``) let ``"k-1\\n"`` pass: a member's
``Idempotency-Key``, a partner's ``partner_txn_id``, a partner code or a tier code with a
trailing newline is refused at the edge with the one error shape and changes nothing."""

from __future__ import annotations

import copy

import pytest
from marshmallow import ValidationError, validate

from coalition.schemas import WholeMatch
from tests.conftest import snapshot
from tests.factories.ledger import PRICED_FROM
from tests.factories.member_records import member_token
from tests.factories.partner_api import RULES, assert_error, earn, enrol, publish


def test_a_trailing_newline_does_not_match_the_whole_pattern():
    pattern = r"^[\x21-\x7e]{1,50}$"
    assert validate.Regexp(pattern)("k-1\n") == "k-1\n"  # the trap
    assert WholeMatch(pattern)("k-1") == "k-1"
    for value in ("k-1\n", "k-1\r\n", "\nk-1", "k 1", ""):
        with pytest.raises(ValidationError):
            WholeMatch(pattern)(value)


@pytest.fixture
def members(app, client, operator_headers, make_partner):
    publish(client, operator_headers)
    _, acme_h = make_partner("acme", valid_from=PRICED_FROM)
    make_partner("redcross", kind="charity")
    alice, bob = enrol(client, acme_h, "alice"), enrol(client, acme_h, "bob")
    earn(client, acme_h, alice, "e1", 100)
    return acme_h, alice, bob


@pytest.mark.parametrize("key", ["k-1\n", "k-1\r\n"])
def test_an_idempotency_key_with_a_trailing_newline_is_refused(app, client, members, key):
    _, alice, bob = members
    alice_h = member_token(alice)
    before = snapshot(app)
    # set in the WSGI environ: the test client's own headers refuse a newline
    transfer = client.post("/v1/me/transfers", json={"to_member_number": bob, "points": 10},
                           headers=alice_h, environ_overrides={"HTTP_IDEMPOTENCY_KEY": key})
    assert_error(transfer, 422, "invalid_request", {"Idempotency-Key"})
    donation = client.post("/v1/me/donations", json={"partner": "redcross", "points": 10},
                           headers=alice_h, environ_overrides={"HTTP_IDEMPOTENCY_KEY": key})
    assert_error(donation, 422, "invalid_request", {"Idempotency-Key"})
    assert snapshot(app) == before
    # the same key without the newline books
    done = client.post("/v1/me/transfers", json={"to_member_number": bob, "points": 10},
                       headers={**alice_h, "Idempotency-Key": key.rstrip()})
    assert done.status_code == 201, done.get_json()


def test_a_partner_txn_id_with_a_trailing_newline_is_refused(app, client, members):
    acme_h, alice, _ = members
    before = snapshot(app)
    for path in ("/v1/earn", "/v1/burn"):
        response = client.post(path, json={"member_number": alice, "partner_txn_id": "t1\n",
                                           "points": 10}, headers=acme_h)
        assert_error(response, 422, "invalid_request", {"partner_txn_id"})
    assert snapshot(app) == before


def test_codes_with_a_trailing_newline_are_refused(app, client, operator_headers):
    before = snapshot(app)
    partner = client.post("/v1/admin/partners", headers=operator_headers, json={
        "code": "northwind\n", "name": "Northwind Grocers", "kind": "merchant",
        "currency": "GBP", "earn_rate": "1", "issue_price": "0.0100",
        "redeem_rate": "0.008", "valid_from": "2026-01-01"})
    assert_error(partner, 422, "invalid_request", {"code"})
    rules = copy.deepcopy(RULES)
    rules["tiers"][0]["code"] += "\n"
    program = client.put("/v1/admin/program", json=rules, headers=operator_headers)
    body = assert_error(program, 422, "invalid_request")
    assert "tiers" in body["errors"], body
    assert snapshot(app) == before
