"""Bad input to the partner API: every refusal is its own 4xx with a stable machine code in
the one error shape, and the ledger does not change (DESIGN.md "API conventions")."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coalition.ledger import numbers
from coalition.oauth.models import PARTNER_SCOPES
from tests.conftest import bearer, fetch_token, snapshot
from tests.factories.partner_api import (
    assert_error,
    bad_check_digit,
    burn,
    earn,
    enrol,
    hold,
    post_ok,
    publish,
    set_member_status,
)
from tests.factories.tokens import partner_headers

#: a member number with a valid check digit that no member has (numbers are drawn at random
#: from 9 x 10^10, so a clash with the few members of a test is negligible)
NOBODY = "12345678901" + numbers.luhn_digit("12345678901")


@dataclass
class World:
    """Partner acme (and bravo); acme's member ``c1`` has 70 points available and 20 in an
    open hold, after an earn by points, an earn from a spend, a burn, a captured hold and a
    voided hold; tokens for a read-only and a burn-only client of acme and for an operator."""

    headers: dict[str, str]
    member: str
    earn: dict[str, Any]
    spend_earn: dict[str, Any]
    burn: dict[str, Any]
    hold: dict[str, Any]
    voided: dict[str, Any]
    captured_hold: dict[str, Any]
    capture: dict[str, Any]
    read_only: dict[str, str]
    burn_only: dict[str, str]
    operator: dict[str, str]

    def fill(self, text: str) -> str:
        return text.format(member=self.member, bad=bad_check_digit(self.member),
                           earn=self.earn["id"], spend_earn=self.spend_earn["id"],
                           burn=self.burn["id"], hold=self.hold["id"],
                           voided=self.voided["id"], captured_hold=self.captured_hold["id"],
                           capture=self.capture["id"], nobody=NOBODY)

    def fill_body(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.fill(value)
        if isinstance(value, dict):
            return {k: self.fill_body(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill_body(v) for v in value]
        return value


@pytest.fixture
def world(client, make_partner, operator_headers) -> World:
    from partners.service import issue_partner_client

    # one tier (no multiplier); holds last at most 3600 seconds
    publish(client, operator_headers,
            tiers=[{"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"}])
    _, headers = make_partner("acme")
    make_partner("bravo")
    member = enrol(client, headers, "c1", name="Ada")
    enrol(client, headers, "c2")
    first = earn(client, headers, member, "e1", points=100)
    spend_earn = earn(client, headers, member, "e2", spend={"amount": "30.00", "currency": "GBP"})
    spent = burn(client, headers, member, "b1", points=30)
    to_capture = hold(client, headers, member, "h0", points=10)
    capture = post_ok(client, f"/v1/holds/{to_capture['id']}/capture", headers,
                      {"partner_txn_id": "c0"})
    voided = hold(client, headers, member, "h1", points=5)
    post_ok(client, f"/v1/holds/{voided['id']}/void", headers, {"partner_txn_id": "v1"})
    held = hold(client, headers, member, "h2", points=20)
    assert held["balance"] == {"available": 70, "pending": 0, "held": 20}

    def token(scopes):
        issued = issue_partner_client("acme", scopes)
        return bearer(fetch_token(client, issued.client_id, issued.client_secret))

    return World(headers=headers, member=member, earn=first, spend_earn=spend_earn,
                 burn=spent, hold=held, voided=voided, captured_hold=to_capture,
                 capture=capture, read_only=token(["members:read"]),
                 burn_only=token(["points:burn"]), operator=operator_headers)


def refused(client, world: World, method: str, path: str, status: int, error: str,
            fields: set[str] | None = None, *, who: str = "headers", **kwargs: Any):
    """Send the request; assert its error, and that not one row anywhere changed."""
    before = snapshot(client.application)
    headers = {**(getattr(world, who) if who else {}), **kwargs.pop("headers", {})}
    response = client.open(world.fill(path), method=method, headers=headers, **kwargs)
    body = assert_error(response, status, error, fields)
    assert snapshot(client.application) == before
    return body


Case = tuple[str, str, Any, int, str, set[str] | None]


def all_refused(client, world: World, cases: list[Case], method: str = "POST",
                who: str = "headers") -> None:
    """Send every case (name, path, body, status, error, fields); each must get its error
    and leave every table as it was. All mismatches are reported together."""
    baseline = snapshot(client.application)
    failures = []
    for name, path, body, status, error, fields in cases:
        response = client.open(world.fill(path), method=method, headers=getattr(world, who),
                               json=world.fill_body(body) if body is not None else None)
        try:
            assert_error(response, status, error, fields)
            assert snapshot(client.application) == baseline, "a table changed"
        except AssertionError as exc:
            failures.append(f"{name}: {str(exc).splitlines()[0]}")
            baseline = snapshot(client.application)
    assert not failures, "\n".join(failures)


def txn(**fields: Any) -> dict[str, Any]:
    return {"member_number": "{member}", "partner_txn_id": "new-1", **fields}


FUTURE = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

#: bad bodies by group: (name, path, body, status, error, fields with errors)
BODY_CASES: dict[str, list[Case]] = {
    "member": [
        ("earn-unknown-member", "/v1/earn", txn(points=5, member_number="{nobody}"),
         404, "not_found", None),
        ("earn-unknown-ref", "/v1/earn",
         {"partner_member_ref": "nobody", "partner_txn_id": "new-1", "points": 5},
         404, "not_found", None),
        ("earn-bad-check-digit", "/v1/earn", txn(points=5, member_number="{bad}"),
         422, "invalid_request", {"member_number"}),
        ("earn-number-too-short", "/v1/earn", txn(points=5, member_number="12345"),
         422, "invalid_request", {"member_number"}),
        ("earn-number-as-int", "/v1/earn", txn(points=5, member_number=123456789015),
         422, "invalid_request", {"member_number"}),
        ("earn-both-identities", "/v1/earn", txn(points=5, partner_member_ref="c1"),
         422, "invalid_request", {"member_number"}),
        ("earn-no-identity", "/v1/earn", {"partner_txn_id": "new-1", "points": 5},
         422, "invalid_request", {"member_number"}),
        ("burn-unknown-member", "/v1/burn", txn(points=5, member_number="{nobody}"),
         404, "not_found", None),
        ("hold-unknown-member", "/v1/holds", txn(points=5, member_number="{nobody}"),
         404, "not_found", None),
    ],
    "points": [
        ("earn-points-zero", "/v1/earn", txn(points=0), 422, "invalid_request", {"points"}),
        ("earn-points-negative", "/v1/earn", txn(points=-1), 422, "invalid_request", {"points"}),
        ("earn-points-fraction", "/v1/earn", txn(points=1.5), 422, "invalid_request", {"points"}),
        ("earn-points-float-integral", "/v1/earn", txn(points=10.0),
         422, "invalid_request", {"points"}),
        ("earn-points-string", "/v1/earn", txn(points="10"), 422, "invalid_request", {"points"}),
        ("earn-points-true", "/v1/earn", txn(points=True), 422, "invalid_request", {"points"}),
        ("earn-points-null", "/v1/earn", txn(points=None), 422, "invalid_request", {"points"}),
        ("earn-points-2**53", "/v1/earn", txn(points=2**53), 422, "invalid_request", {"points"}),
        ("earn-points-2**64", "/v1/earn", txn(points=2**64), 422, "invalid_request", {"points"}),
        ("burn-points-zero", "/v1/burn", txn(points=0), 422, "invalid_request", {"points"}),
        ("burn-points-negative", "/v1/burn", txn(points=-5), 422, "invalid_request", {"points"}),
        ("burn-points-string", "/v1/burn", txn(points="5"), 422, "invalid_request", {"points"}),
        ("burn-points-2**53", "/v1/burn", txn(points=2**53), 422, "invalid_request", {"points"}),
        ("burn-points-missing", "/v1/burn", txn(), 422, "invalid_request", {"points"}),
        ("hold-points-fraction", "/v1/holds", txn(points=2.5), 422, "invalid_request", {"points"}),
        ("hold-points-true", "/v1/holds", txn(points=True), 422, "invalid_request", {"points"}),
        ("earn-would-overflow-balance", "/v1/earn", txn(points=2**53 - 1),
         409, "balance_limit", None),
    ],
    "spend": [
        ("spend-wrong-currency", "/v1/earn", txn(spend={"amount": "10.00", "currency": "EUR"}),
         422, "invalid_request", {"spend"}),
        ("spend-unknown-currency", "/v1/earn", txn(spend={"amount": "10.00", "currency": "XYZ"}),
         422, "invalid_request", {"spend"}),
        ("spend-lowercase-currency", "/v1/earn", txn(spend={"amount": "10.00", "currency": "gbp"}),
         422, "invalid_request", {"spend"}),
        ("spend-as-number", "/v1/earn", txn(spend={"amount": 10.5, "currency": "GBP"}),
         422, "invalid_request", {"spend"}),
        ("spend-exponent", "/v1/earn", txn(spend={"amount": "1e3", "currency": "GBP"}),
         422, "invalid_request", {"spend"}),
        ("spend-zero", "/v1/earn", txn(spend={"amount": "0", "currency": "GBP"}),
         422, "invalid_request", {"spend"}),
        ("spend-negative", "/v1/earn", txn(spend={"amount": "-10.00", "currency": "GBP"}),
         422, "invalid_request", {"spend"}),
        ("spend-too-small-to-earn", "/v1/earn", txn(spend={"amount": "0.99", "currency": "GBP"}),
         422, "invalid_request", {"spend"}),
        ("spend-no-currency", "/v1/earn", txn(spend={"amount": "10.00"}),
         422, "invalid_request", {"spend"}),
        ("spend-not-an-object", "/v1/earn", txn(spend="10.00 GBP"),
         422, "invalid_request", {"spend"}),
        ("spend-and-points", "/v1/earn",
         txn(points=5, spend={"amount": "10.00", "currency": "GBP"}),
         422, "invalid_request", {"points"}),
        ("neither-spend-nor-points", "/v1/earn", txn(), 422, "invalid_request", {"points"}),
    ],
    "shape": [
        ("earn-unknown-field", "/v1/earn", txn(points=5, bonus=True),
         422, "invalid_request", {"bonus"}),
        ("burn-unknown-field", "/v1/burn", txn(points=5, memo="x"),
         422, "invalid_request", {"memo"}),
        ("earn-missing-txn-id", "/v1/earn", {"member_number": "{member}", "points": 5},
         422, "invalid_request", {"partner_txn_id"}),
        ("burn-missing-txn-id", "/v1/burn", {"member_number": "{member}", "points": 5},
         422, "invalid_request", {"partner_txn_id"}),
        ("txn-id-too-long", "/v1/earn", txn(points=5, partner_txn_id="x" * 65),
         422, "invalid_request", {"partner_txn_id"}),
        ("txn-id-with-space", "/v1/earn", txn(points=5, partner_txn_id="till 1"),
         422, "invalid_request", {"partner_txn_id"}),
        ("txn-id-empty", "/v1/earn", txn(points=5, partner_txn_id=""),
         422, "invalid_request", {"partner_txn_id"}),
        ("txn-id-not-ascii", "/v1/earn", txn(points=5, partner_txn_id="café"),
         422, "invalid_request", {"partner_txn_id"}),
        ("txn-id-number", "/v1/earn", txn(points=5, partner_txn_id=12),
         422, "invalid_request", {"partner_txn_id"}),
        ("body-is-a-list", "/v1/earn", [txn(points=5)], 422, "invalid_request", None),
        ("body-is-empty-object", "/v1/earn", {}, 422, "invalid_request", None),
    ],
    "time": [
        ("occurred-far-future", "/v1/earn", txn(points=5, occurred_at=FUTURE),
         422, "invalid_request", {"occurred_at"}),
        ("occurred-naive", "/v1/earn", txn(points=5, occurred_at="2025-01-02T10:00:00"),
         422, "invalid_request", {"occurred_at"}),
        ("occurred-garbage", "/v1/earn", txn(points=5, occurred_at="yesterday"),
         422, "invalid_request", {"occurred_at"}),
        ("occurred-impossible-date", "/v1/earn", txn(points=5, occurred_at="2025-02-30"),
         422, "invalid_request", {"occurred_at"}),
        ("occurred-epoch-number", "/v1/earn", txn(points=5, occurred_at=1735689600),
         422, "invalid_request", {"occurred_at"}),
        ("burn-occurred-far-future", "/v1/burn", txn(points=5, occurred_at=FUTURE),
         422, "invalid_request", {"occurred_at"}),
    ],
    "balances": [
        ("burn-above-balance", "/v1/burn", txn(points=71), 409, "insufficient_points", None),
        ("hold-above-balance", "/v1/holds", txn(points=71), 409, "insufficient_points", None),
        ("hold-expires-above-max", "/v1/holds", txn(points=5, expires_in=3601),
         422, "invalid_request", {"expires_in"}),
        ("hold-expires-zero", "/v1/holds", txn(points=5, expires_in=0),
         422, "invalid_request", {"expires_in"}),
        ("hold-expires-string", "/v1/holds", txn(points=5, expires_in="60"),
         422, "invalid_request", {"expires_in"}),
    ],
    "capture-void": [
        ("capture-above-hold", "/v1/holds/{hold}/capture",
         {"partner_txn_id": "new-1", "points": 21},
         422, "invalid_request", {"points"}),
        ("capture-zero", "/v1/holds/{hold}/capture", {"partner_txn_id": "new-1", "points": 0},
         422, "invalid_request", {"points"}),
        ("capture-voided", "/v1/holds/{voided}/capture", {"partner_txn_id": "new-1"},
         409, "hold_not_open", None),
        ("capture-captured", "/v1/holds/{captured_hold}/capture", {"partner_txn_id": "new-1"},
         409, "hold_not_open", None),
        ("capture-unknown-hold", "/v1/holds/999999/capture", {"partner_txn_id": "new-1"},
         404, "not_found", None),
        ("capture-missing-txn-id", "/v1/holds/{hold}/capture", {"points": 5},
         422, "invalid_request", {"partner_txn_id"}),
        ("capture-unknown-field", "/v1/holds/{hold}/capture",
         {"partner_txn_id": "new-1", "member_number": "{member}"},
         422, "invalid_request", {"member_number"}),
        ("void-voided", "/v1/holds/{voided}/void", {"partner_txn_id": "new-1"},
         409, "hold_not_open", None),
        ("void-captured", "/v1/holds/{captured_hold}/void", {"partner_txn_id": "new-1"},
         409, "hold_not_open", None),
        ("void-unknown-hold", "/v1/holds/999999/void", {"partner_txn_id": "new-1"},
         404, "not_found", None),
        ("void-with-points", "/v1/holds/{hold}/void", {"partner_txn_id": "new-1", "points": 5},
         422, "invalid_request", {"points"}),
    ],
    "reversals": [
        ("reverse-earn-too-much", "/v1/transactions/{earn}/reversals",
         {"partner_txn_id": "new-1", "points": 101}, 422, "invalid_request", {"points"}),
        ("reverse-burn-too-much", "/v1/transactions/{burn}/reversals",
         {"partner_txn_id": "new-1", "points": 31}, 422, "invalid_request", {"points"}),
        ("reverse-capture-too-much", "/v1/transactions/{capture}/reversals",
         {"partner_txn_id": "new-1", "points": 11}, 422, "invalid_request", {"points"}),
        ("reverse-points-zero", "/v1/transactions/{earn}/reversals",
         {"partner_txn_id": "new-1", "points": 0}, 422, "invalid_request", {"points"}),
        ("reverse-points-and-refund", "/v1/transactions/{spend_earn}/reversals",
         {"partner_txn_id": "new-1", "points": 1, "refund": {"amount": "1.00", "currency": "GBP"}},
         422, "invalid_request", {"points"}),
        ("refund-above-spend", "/v1/transactions/{spend_earn}/reversals",
         {"partner_txn_id": "new-1", "refund": {"amount": "30.01", "currency": "GBP"}},
         422, "invalid_request", {"refund"}),
        ("refund-wrong-currency", "/v1/transactions/{spend_earn}/reversals",
         {"partner_txn_id": "new-1", "refund": {"amount": "1.00", "currency": "EUR"}},
         422, "invalid_request", {"refund"}),
        ("refund-of-points-earn", "/v1/transactions/{earn}/reversals",
         {"partner_txn_id": "new-1", "refund": {"amount": "1.00", "currency": "GBP"}},
         422, "invalid_request", {"refund"}),
        ("refund-of-burn", "/v1/transactions/{burn}/reversals",
         {"partner_txn_id": "new-1", "refund": {"amount": "1.00", "currency": "GBP"}},
         422, "invalid_request", {"refund"}),
        ("reverse-unknown-transaction", "/v1/transactions/999999/reversals",
         {"partner_txn_id": "new-1"}, 404, "not_found", None),
        ("reverse-missing-txn-id", "/v1/transactions/{earn}/reversals", {"points": 1},
         422, "invalid_request", {"partner_txn_id"}),
    ],
    "idempotency": [
        ("earn-reused-id", "/v1/earn", txn(points=5, partner_txn_id="e1"),
         409, "idempotency_conflict", {"partner_txn_id"}),
        ("burn-reuses-earn-id", "/v1/burn", txn(points=100, partner_txn_id="e1"),
         409, "idempotency_conflict", {"partner_txn_id"}),
        ("hold-reuses-burn-id", "/v1/holds", txn(points=30, partner_txn_id="b1"),
         409, "idempotency_conflict", {"partner_txn_id"}),
        ("capture-reuses-void-id", "/v1/holds/{hold}/capture", {"partner_txn_id": "v1"},
         409, "idempotency_conflict", {"partner_txn_id"}),
        ("reversal-reuses-earn-id", "/v1/transactions/{earn}/reversals",
         {"partner_txn_id": "e1", "points": 1}, 409, "idempotency_conflict", {"partner_txn_id"}),
    ],
    "ids": [
        ("capture-id-huge", f"/v1/holds/{'9' * 30}/capture", {"partner_txn_id": "new-1"},
         404, "not_found", None),
        ("void-id-2**63", f"/v1/holds/{2**63}/void", {"partner_txn_id": "new-1"},
         404, "not_found", None),
        ("reverse-id-huge", f"/v1/transactions/{'9' * 30}/reversals",
         {"partner_txn_id": "new-1"}, 404, "not_found", None),
    ],
    "enrol": [
        ("enrol-unknown-number", "/v1/members",
         {"partner_member_ref": "new-ref", "member_number": "{nobody}"}, 404, "not_found", None),
        ("enrol-bad-check-digit", "/v1/members",
         {"partner_member_ref": "new-ref", "member_number": "{bad}"},
         422, "invalid_request", {"member_number"}),
        ("enrol-ref-of-another-member", "/v1/members",
         {"partner_member_ref": "c2", "member_number": "{member}"}, 409, "already_exists",
         {"partner_member_ref"}),
        ("enrol-missing-ref", "/v1/members", {"name": "Ada"},
         422, "invalid_request", {"partner_member_ref"}),
        ("enrol-empty-ref", "/v1/members", {"partner_member_ref": ""},
         422, "invalid_request", {"partner_member_ref"}),
        ("enrol-bad-email", "/v1/members", {"partner_member_ref": "new-ref", "email": "not-mail"},
         422, "invalid_request", {"email"}),
        ("enrol-bad-birth-date", "/v1/members",
         {"partner_member_ref": "new-ref", "birth_date": "10/12/1990"},
         422, "invalid_request", {"birth_date"}),
        ("enrol-unknown-field", "/v1/members", {"partner_member_ref": "new-ref", "tier": "gold"},
         422, "invalid_request", {"tier"}),
    ],
}


def test_bad_request_bodies_are_refused_and_change_nothing(client, world):
    # one world for every case: each is refused and leaves every table as it was, so the
    # next case sees the same ledger (all_refused names every case that is not)
    all_refused(client, world, [case for group in BODY_CASES.values() for case in group])


def test_the_largest_points_are_allowed_but_not_one_more(client, world):
    refused(client, world, "POST", "/v1/earn", 422, "invalid_request", {"points"},
            json=world.fill_body(txn(points=2**53)))
    number = enrol(client, world.headers, "empty")
    assert earn(client, world.headers, number, "max", points=2**53 - 1)["points"] == 2**53 - 1


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


GET_CASES: list[Case] = [
    ("member-unknown", "/v1/members/{nobody}", None, 404, "not_found", None),
    ("member-bad-check-digit", "/v1/members/{bad}", None,
     422, "invalid_request", {"member_number"}),
    ("member-not-digits", "/v1/members/abc", None, 422, "invalid_request", {"member_number"}),
    ("balance-unknown", "/v1/members/{nobody}/balance", None, 404, "not_found", None),
    ("balance-bad-check-digit", "/v1/members/{bad}/balance", None,
     422, "invalid_request", {"member_number"}),
    ("lookup-unknown-ref", "/v1/members?partner_member_ref=nobody", None,
     404, "not_found", None),
    ("lookup-without-ref", "/v1/members", None, 422, "invalid_request", {"partner_member_ref"}),
    ("hold-unknown", "/v1/holds/999999", None, 404, "not_found", None),
    ("transaction-unknown", "/v1/transactions/999999", None, 404, "not_found", None),
    ("history-bad-type", "/v1/transactions?type=hold", None, 422, "invalid_request", {"type"}),
    ("history-limit-zero", "/v1/transactions?limit=0", None, 422, "invalid_request", {"limit"}),
    ("history-limit-too-big", "/v1/transactions?limit=501", None,
     422, "invalid_request", {"limit"}),
    ("history-limit-not-int", "/v1/transactions?limit=ten", None,
     422, "invalid_request", {"limit"}),
    ("history-bad-member", "/v1/transactions?member_number={bad}", None,
     422, "invalid_request", {"member_number"}),
    ("history-bad-booked-from", "/v1/transactions?booked_from=monday", None,
     422, "invalid_request", {"booked_from"}),
    ("history-naive-booked-to", "/v1/transactions?booked_to=2025-01-01T00:00:00", None,
     422, "invalid_request", {"booked_to"}),
    ("history-bad-cursor", "/v1/transactions?cursor=not-a-cursor", None,
     422, "invalid_request", {"cursor"}),
    # ids beyond 64 bits name nothing (they used to overflow the database driver: 500)
    ("transaction-id-2**63", f"/v1/transactions/{2**63}", None, 404, "not_found", None),
    ("transaction-id-huge", f"/v1/transactions/{'9' * 30}", None, 404, "not_found", None),
    ("hold-id-huge", f"/v1/holds/{'9' * 30}", None, 404, "not_found", None),
    ("history-cursor-beyond-64-bit", f"/v1/transactions?cursor={_cursor('e' + '9' * 30)}", None,
     422, "invalid_request", {"cursor"}),
    ("history-cursor-negative", f"/v1/transactions?cursor={_cursor('e-5')}", None,
     422, "invalid_request", {"cursor"}),
]


def test_bad_reads_are_refused(client, world):
    all_refused(client, world, GET_CASES, method="GET")


# --------------------------------------------------------------------------- closed members


def test_a_closed_member_is_refused_everywhere(client, world, app):
    set_member_status(app, world.member, "closed")
    all_refused(client, world, [
        ("earn", "/v1/earn", txn(points=5), 409, "member_closed", None),
        ("earn-by-ref", "/v1/earn",
         {"partner_member_ref": "c1", "partner_txn_id": "new-1", "points": 5},
         409, "member_closed", None),
        ("earn-spend", "/v1/earn", txn(spend={"amount": "5.00", "currency": "GBP"}),
         409, "member_closed", None),
        ("burn", "/v1/burn", txn(points=5), 409, "member_closed", None),
        ("hold", "/v1/holds", txn(points=5), 409, "member_closed", None),
        ("capture", "/v1/holds/{hold}/capture", {"partner_txn_id": "new-1"},
         409, "member_closed", None),
        ("reverse-earn", "/v1/transactions/{earn}/reversals",
         {"partner_txn_id": "new-1", "points": 1}, 409, "member_closed", None),
        ("reverse-burn", "/v1/transactions/{burn}/reversals",
         {"partner_txn_id": "new-1", "points": 1}, 409, "member_closed", None),
        ("reverse-capture", "/v1/transactions/{capture}/reversals",
         {"partner_txn_id": "new-1", "points": 1}, 409, "member_closed", None),
        ("link", "/v1/members", {"partner_member_ref": "other-ref", "member_number": "{member}"},
         409, "member_closed", None),
    ])


# --------------------------------------------------------------------------- transport, auth


def test_malformed_json_is_a_400(client, world):
    for raw in ('{"member_number": "x", "points": 5', "{'points': 5}", "nul", "[1,",
                b"\xff\xfe"):
        refused(client, world, "POST", "/v1/earn", 400, "invalid_request",
                data=raw, content_type="application/json")
    # no body at all is every required field missing
    refused(client, world, "POST", "/v1/burn", 422, "invalid_request",
            data="", content_type="application/json")


def test_a_body_that_is_not_json_is_a_415(client, world):
    body = json.dumps(world.fill_body(txn(points=5)))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/csv",
                         "application/xml"):
        refused(client, world, "POST", "/v1/earn", 415, "unsupported_media_type",
                data=body, content_type=content_type)
    refused(client, world, "POST", "/v1/burn", 415, "unsupported_media_type",
            data={"points": "5"})
    # a JSON body with a charset is fine
    response = client.post("/v1/earn", data=body, headers={
        **world.headers, "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 201, response.get_json()


def test_no_token_or_a_bad_token_is_a_401_before_the_body_is_read(client, world):
    body = refused(client, world, "POST", "/v1/earn", 401, "unauthorized", who="",
                   json=world.fill_body(txn(points=5)))
    assert "token" in body["message"].lower()
    refused(client, world, "POST", "/v1/earn", 401, "unauthorized", who="",
            json={"points": "not even valid"})
    refused(client, world, "GET", "/v1/transactions", 401, "unauthorized", who="")
    response = client.post("/v1/burn", json=world.fill_body(txn(points=5)))
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    refused(client, world, "POST", "/v1/earn", 401, "unauthorized", who="",
            headers={"Authorization": "Bearer not-a-token"}, json=world.fill_body(txn(points=5)))
    refused(client, world, "POST", "/v1/earn", 401, "unauthorized", who="",
            headers={"Authorization": "Basic Zm9vOmJhcg=="}, json=world.fill_body(txn(points=5)))


SCOPED: list[tuple[str, str, Any]] = [
    ("POST", "/v1/earn", txn(points=5)),
    ("POST", "/v1/burn", txn(points=5)),
    ("POST", "/v1/holds", txn(points=5)),
    ("POST", "/v1/holds/{hold}/capture", {"partner_txn_id": "new-1"}),
    ("POST", "/v1/holds/{hold}/void", {"partner_txn_id": "new-1"}),
    ("POST", "/v1/transactions/{earn}/reversals", {"partner_txn_id": "new-1"}),
    ("POST", "/v1/members", {"partner_member_ref": "new-ref"}),
    ("GET", "/v1/transactions", None),
    ("GET", "/v1/transactions/{earn}", None),
    ("GET", "/v1/holds/{hold}", None),
]


def test_a_token_without_the_scope_is_a_403(client, world):
    """A client with only members:read may look members up, and do nothing else."""
    for method, path, body in SCOPED:
        all_refused(client, world, [(path, path, body, 403, "insufficient_scope", None)],
                    method=method, who="read_only")
    assert client.get(world.fill("/v1/members/{member}"),
                      headers=world.read_only).status_code == 200


def test_reversing_an_earn_needs_the_earn_scope(client, world):
    refused(client, world, "POST", "/v1/transactions/{earn}/reversals", 403,
            "insufficient_scope", who="burn_only", json={"partner_txn_id": "new-1"})
    # the burn scope is enough to reverse a burn
    response = client.post(world.fill("/v1/transactions/{burn}/reversals"),
                           json={"partner_txn_id": "new-1", "points": 1},
                           headers=world.burn_only)
    assert response.status_code == 201


def test_an_operator_token_is_refused_on_partner_endpoints(client, world):
    # The operator token lacks the partner scopes (insufficient_scope) and is of the wrong
    # client kind (forbidden); which of the two is reported depends on the order of checks.
    baseline = snapshot(client.application)
    for method, path, body in [*SCOPED, ("GET", "/v1/members/{member}", None),
                               ("GET", "/v1/members/{member}/balance", None)]:
        response = client.open(world.fill(path), method=method, headers=world.operator,
                               json=world.fill_body(body) if body is not None else None)
        assert_error(response, 403, response.get_json()["error"])
        assert response.get_json()["error"] in ("insufficient_scope", "forbidden"), path
    assert snapshot(client.application) == baseline


# --------------------------------------------------------------------------- refusals by state


def test_an_expired_hold_cannot_be_captured(client, world, clock):
    clock.advance(seconds=901)  # the hold was for 900 seconds, and so was acme's token
    now = partner_headers(client, "acme", PARTNER_SCOPES)  # acme's token of the new time
    refused(client, world, "POST", "/v1/holds/{hold}/capture", 409, "hold_not_open",
            json={"partner_txn_id": "new-1"}, headers=now)


def test_an_earn_reversal_after_the_points_were_spent(client, make_partner, operator_headers):
    publish(client, operator_headers, earn_reversal_after_spend="refuse")
    _, headers = make_partner("acme")
    number = enrol(client, headers, "c1")
    earned = earn(client, headers, number, "e1", points=100)
    earn(client, headers, number, "e2", points=100)
    burn(client, headers, number, "b1", points=150)  # takes e1's lot, then 50 of e2's
    before = snapshot(client.application)
    response = client.post(f"/v1/transactions/{earned['id']}/reversals",
                           json={"partner_txn_id": "r1", "points": 10}, headers=headers)
    assert_error(response, 409, "insufficient_points")
    assert snapshot(client.application) == before


def test_an_earn_reversal_the_member_cannot_cover(client, make_partner):
    # the default rule takes spent points from the member's other lots, if there are any
    _, headers = make_partner("acme")
    number = enrol(client, headers, "c1")
    earned = earn(client, headers, number, "e1", points=100)
    earn(client, headers, number, "e2", points=20)
    burn(client, headers, number, "b1", points=110)
    before = snapshot(client.application)
    response = client.post(f"/v1/transactions/{earned['id']}/reversals",
                           json={"partner_txn_id": "r1", "points": 11}, headers=headers)
    assert_error(response, 409, "insufficient_points")
    assert snapshot(client.application) == before
    ok = post_ok(client, f"/v1/transactions/{earned['id']}/reversals", headers,
                 {"partner_txn_id": "r1", "points": 10})
    assert ok["balance"]["available"] == 0


@pytest.mark.parametrize("text", ["e١", "e٥٠", "e²", "e 5"])
def test_a_cursor_of_other_digits_is_refused(client, make_partner, operator_headers, text):
    """``int()`` reads Arabic-Indic digits; a cursor is ASCII digits or nothing."""
    _, headers = make_partner("acme")
    cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    answer = client.get("/v1/transactions", query_string={"cursor": cursor}, headers=headers)
    assert answer.status_code == 422 and answer.get_json()["errors"] == {
        "cursor": ["Not a valid cursor."]}
    audit = base64.urlsafe_b64encode(("a" + text[1:]).encode()).decode().rstrip("=")
    answer = client.get("/v1/admin/audit", query_string={"cursor": audit},
                        headers=operator_headers)
    assert answer.status_code == 422, answer.get_json()
