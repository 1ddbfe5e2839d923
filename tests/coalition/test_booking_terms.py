"""What a booking reads of the program and the partner's contract (the rules' version,
the earn rate in force) comes with its first statement, and the rules are parsed once per
worker and version: a new version or a new rate card is seen by the very next request,
on whichever worker it lands (two apps on one database stand in for two workers)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flask.testing import FlaskClient

from coalition.clock import add_months
from coalition.db import db
from tests.conftest import make_test_app
from tests.factories.clock import HandClock, clock_of


def _rules(multiplier: str, **more):
    return {"pending_days": 0, "expiry": {"policy": "none"},
            "tiers": [{"code": "member", "name": "Member", "threshold": 0,
                       "multiplier": multiplier}], **more}


def _earn(client, headers, number: str, txn: str, amount: str = "10.00") -> dict:
    response = client.post("/v1/earn", json={
        "member_number": number, "partner_txn_id": txn,
        "spend": {"amount": amount, "currency": "GBP"}}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _publish(client, headers, rules: dict) -> None:
    assert client.put("/v1/admin/program", json=rules, headers=headers).status_code == 200


def _member_of(client, make_partner, **partner) -> tuple[dict, str]:
    """acme (priced from ``valid_from`` when given) and a member it enrolled: acme's
    headers and the member's number."""
    _, headers = make_partner("acme", **partner)
    number = client.post("/v1/members", json={"partner_member_ref": "c1"},
                         headers=headers).get_json()["member_number"]
    return headers, number


def test_a_new_rules_version_is_seen_by_the_next_earn(client, make_partner,
                                                      operator_headers):
    _publish(client, operator_headers, _rules("1"))
    headers, number = _member_of(client, make_partner)
    assert _earn(client, headers, number, "t-1")["points"] == 10
    _publish(client, operator_headers, _rules("2"))
    assert _earn(client, headers, number, "t-2")["points"] == 20
    # and the expiry of the next version, in the lot's answer
    _publish(client, operator_headers, _rules("3", expiry={"policy": "fixed", "months": 6}))
    third = _earn(client, headers, number, "t-3")
    assert third["points"] == 30
    balance = client.get(f"/v1/members/{number}/balance", headers=headers).get_json()
    booked = datetime.fromisoformat(third["booked_at"])
    assert [row["points"] for row in balance["expiring"]] == [30]
    assert balance["expiring"][0]["date"] == add_months(booked, 6).date().isoformat()


def test_a_new_rate_card_is_seen_by_the_next_earn(client, make_partner, operator_headers,
                                                   clock):
    headers, number = _member_of(client, make_partner,
                                 valid_from=datetime.now(UTC) - timedelta(days=1))
    assert _earn(client, headers, number, "t-1")["points"] == 10
    # the clock held still: the next earn is before the card's start however slow it is
    starts = clock.set(clock()).replace(microsecond=0) + timedelta(seconds=1)
    card = client.post("/v1/admin/partners/acme/rates", headers=operator_headers,
                       json={"valid_from": starts.isoformat(), "earn_rate": "4"})
    assert card.status_code == 201, card.get_json()
    # before the card starts, the old rate; from its start, the new one
    assert _earn(client, headers, number, "t-2")["points"] == 10
    clock.set(starts)
    assert _earn(client, headers, number, "t-3")["points"] == 40
    assert Decimal(card.get_json()["earn_rate"]) == 4


@pytest.fixture
def other_worker(app, database_url: str, clock: HandClock) -> Iterator[FlaskClient]:
    """A second app on the same database, with its own pool: another worker, on the
    test's clock."""
    other = make_test_app(database_url)
    with clock_of(other, clock):
        yield other.test_client()
    with other.app_context():
        db.engine.dispose()


def test_a_change_made_on_one_worker_is_seen_by_the_next_earn_on_another(
        client, other_worker, make_partner, operator_headers, clock):
    _publish(client, operator_headers, _rules("1"))
    headers, number = _member_of(client, make_partner,
                                 valid_from=datetime.now(UTC) - timedelta(days=1))
    # the other worker has booked under the first version and the first rate card
    assert _earn(other_worker, headers, number, "t-1")["points"] == 10
    _publish(client, operator_headers, _rules("2"))
    assert _earn(other_worker, headers, number, "t-2")["points"] == 20
    starts = clock.set(clock()).replace(microsecond=0) + timedelta(seconds=1)
    card = client.post("/v1/admin/partners/acme/rates", headers=operator_headers,
                       json={"valid_from": starts.isoformat(), "earn_rate": "4"})
    assert card.status_code == 201, card.get_json()
    clock.set(starts)
    assert _earn(other_worker, headers, number, "t-3")["points"] == 80
    # and back on the first worker, the same terms
    assert _earn(client, headers, number, "t-4")["points"] == 80
