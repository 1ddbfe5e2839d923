"""A partner sees and touches only its own transactions and holds (DESIGN.md "API
conventions"). Another partner's entry answers exactly like one that does not exist: 404
``not_found``, never 403 (which would tell that it exists), and nothing changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from coalition.db import UnitOfWork
from coalition.ledger import closure, merge
from coalition.ledger.models import MemberConsent, MemberLink
from tests.conftest import snapshot
from tests.factories.member_records import member_id, member_token
from tests.factories.partner_api import assert_error, burn, earn, enrol, hold, post_ok


@dataclass
class Two:
    acme: dict[str, str]
    bravo: dict[str, str]
    member: str
    # bravo's
    earn: dict[str, Any]
    spend_earn: dict[str, Any]
    burn: dict[str, Any]
    hold: dict[str, Any]
    voided: dict[str, Any]
    captured_hold: dict[str, Any]
    capture: dict[str, Any]
    reversal: dict[str, Any]


@pytest.fixture
def two(client, make_partner) -> Two:
    """One member of both partners; bravo has an earn of each kind, a burn, an open hold,
    a voided hold, a captured hold and a reversal; acme has an earn and a burn of its own."""
    _, acme = make_partner("acme")
    _, bravo = make_partner("bravo")
    member = enrol(client, bravo, "b-1", name="Ada", email="ada@example.com")
    post_ok(client, "/v1/members", acme, {"partner_member_ref": "a-1", "member_number": member},
            status=200)
    b_earn = earn(client, bravo, member, "b-e1", points=500)
    b_spend = earn(client, bravo, member, "b-e2", spend={"amount": "20.00", "currency": "GBP"})
    b_burn = burn(client, bravo, member, "b-b1", points=50)
    b_hold = hold(client, bravo, member, "b-h1", points=40)
    b_voided = hold(client, bravo, member, "b-h2", points=10)
    post_ok(client, f"/v1/holds/{b_voided['id']}/void", bravo, {"partner_txn_id": "b-v2"})
    b_captured = hold(client, bravo, member, "b-h3", points=30)
    b_capture = post_ok(client, f"/v1/holds/{b_captured['id']}/capture", bravo,
                        {"partner_txn_id": "b-c3"})
    b_reversal = post_ok(client, f"/v1/transactions/{b_burn['id']}/reversals", bravo,
                         {"partner_txn_id": "b-r1", "points": 5})
    earn(client, acme, member, "a-e1", points=100)
    burn(client, acme, member, "a-b1", points=10)
    return Two(acme=acme, bravo=bravo, member=member, earn=b_earn, spend_earn=b_spend,
               burn=b_burn, hold=b_hold, voided=b_voided, captured_hold=b_captured,
               capture=b_capture, reversal=b_reversal)


def attempts(two: Two) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Everything acme might try on bravo's entries: (method, path, body)."""
    transactions = [two.earn, two.spend_earn, two.burn, two.capture, two.reversal]
    holds = [two.hold, two.voided, two.captured_hold]
    tried: list[tuple[str, str, dict[str, Any] | None]] = []
    for txn in transactions:
        tried.append(("GET", f"/v1/transactions/{txn['id']}", None))
        tried.append(("POST", f"/v1/transactions/{txn['id']}/reversals",
                      {"partner_txn_id": "steal-1"}))
        tried.append(("POST", f"/v1/transactions/{txn['id']}/reversals",
                      {"partner_txn_id": "steal-2", "points": 1}))
    tried.append(("POST", f"/v1/transactions/{two.spend_earn['id']}/reversals",
                  {"partner_txn_id": "steal-3", "refund": {"amount": "1.00", "currency": "GBP"}}))
    for held in holds:
        tried.append(("GET", f"/v1/holds/{held['id']}", None))
        tried.append(("POST", f"/v1/holds/{held['id']}/capture", {"partner_txn_id": "steal-4"}))
        tried.append(("POST", f"/v1/holds/{held['id']}/capture",
                      {"partner_txn_id": "steal-5", "points": 1}))
        tried.append(("POST", f"/v1/holds/{held['id']}/void", {"partner_txn_id": "steal-6"}))
    return tried


def test_another_partners_transactions_and_holds_are_not_found(client, two):
    baseline = snapshot(client.application)
    failures = []
    for method, path, body in attempts(two):
        response = client.open(path, method=method, json=body, headers=two.acme)
        try:
            assert_error(response, 404, "not_found")
            assert snapshot(client.application) == baseline, "a table changed"
        except AssertionError as exc:
            failures.append(f"{method} {path} {body}: {str(exc).splitlines()[0]}")
            baseline = snapshot(client.application)
    assert not failures, "\n".join(failures)

    # refused for acme, not broken: bravo can still do all of it, with the same ids
    got = client.get(f"/v1/transactions/{two.earn['id']}", headers=two.bravo)
    assert got.status_code == 200 and got.get_json()["partner_txn_id"] == "b-e1"
    reversal = post_ok(client, f"/v1/transactions/{two.earn['id']}/reversals", two.bravo,
                       {"partner_txn_id": "steal-1", "points": 1})
    assert reversal["partner"] == "bravo" and reversal["points"] == 1
    captured = post_ok(client, f"/v1/holds/{two.hold['id']}/capture", two.bravo,
                       {"partner_txn_id": "steal-4"})
    assert captured["points"] == 40


def test_the_answer_is_the_same_as_for_an_id_that_does_not_exist(client, two):
    """Compare with ids beyond every entry and hold: the same status, code and message
    shape, so nothing tells that bravo's ids exist."""
    for method, path, body in attempts(two):
        theirs = client.open(path, method=method, json=body, headers=two.acme)
        ghost_path = path.replace(f"/{path.split('/')[3]}", "/987654", 1)
        ghost = client.open(ghost_path, method=method, json=body, headers=two.acme)
        assert (theirs.status_code, theirs.get_json()["error"]) == \
            (ghost.status_code, ghost.get_json()["error"]) == (404, "not_found"), path
        assert theirs.get_json()["message"].replace(path.split("/")[3], "ID") == \
            ghost.get_json()["message"].replace("987654", "ID"), path


def test_a_failed_attempt_leaves_the_partner_txn_id_free(client, two):
    response = client.post(f"/v1/holds/{two.hold['id']}/capture",
                           json={"partner_txn_id": "mine-1"}, headers=two.acme)
    assert_error(response, 404, "not_found")
    # acme's own hold can now use that id, and bravo's hold is still open
    own = hold(client, two.acme, two.member, "a-h1", points=5)
    captured = post_ok(client, f"/v1/holds/{own['id']}/capture", two.acme,
                       {"partner_txn_id": "mine-1"})
    assert captured["type"] == "hold_capture" and captured["partner"] == "acme"
    still = client.get(f"/v1/holds/{two.hold['id']}", headers=two.bravo).get_json()
    assert still["status"] == "open" and still["captured_points"] == 0


def test_the_same_partner_txn_id_as_another_partner_is_not_a_replay(client, two):
    """acme reusing bravo's ids gets its own new transactions, never bravo's result."""
    for path, body in (
        ("/v1/earn", {"member_number": two.member, "partner_txn_id": "b-e1", "points": 500}),
        ("/v1/burn", {"member_number": two.member, "partner_txn_id": "b-b1", "points": 50}),
    ):
        response = client.post(path, json=body, headers=two.acme)
        assert response.status_code == 201, response.get_json()
        assert "Idempotent-Replayed" not in response.headers
        assert response.get_json()["partner"] == "acme"
        assert response.get_json()["id"] not in (two.earn["id"], two.burn["id"])


def test_history_lists_only_the_callers_own_entries(client, two):
    def everything(headers, **query):
        items, cursor = [], None
        while True:
            params = {"limit": 2, **query, **({"cursor": cursor} if cursor else {})}
            response = client.get("/v1/transactions", query_string=params, headers=headers)
            assert response.status_code == 200, response.get_json()
            page = response.get_json()
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    mine = everything(two.acme)
    assert [t["partner_txn_id"] for t in mine] == ["a-b1", "a-e1"]
    assert {t["partner"] for t in mine} == {"acme"}
    # filters never widen the view: the shared member, and every type
    assert [t["partner_txn_id"] for t in everything(two.acme, member_number=two.member)] == \
        ["a-b1", "a-e1"]
    for kind in ("earn_reversal", "burn_reversal", "hold_capture"):
        assert everything(two.acme, type=kind) == []

    theirs = everything(two.bravo)
    assert {t["partner"] for t in theirs} == {"bravo"}
    assert {t["partner_txn_id"] for t in theirs} == {"b-e1", "b-e2", "b-b1", "b-c3", "b-r1"}
    assert not {t["id"] for t in mine} & {t["id"] for t in theirs}


def test_a_cursor_from_one_partner_does_not_reveal_the_others_entries(client, two):
    page = client.get("/v1/transactions", query_string={"limit": 1},
                      headers=two.bravo).get_json()
    assert page["next_cursor"]
    seen = client.get("/v1/transactions", query_string={"cursor": page["next_cursor"]},
                      headers=two.acme)
    assert seen.status_code == 200
    assert {t["partner"] for t in seen.get_json()["items"]} <= {"acme"}


# --------------------------------------------------------------------------- personal data


def _personal(client, headers, number: str) -> tuple[Any, Any, Any]:
    body = client.get(f"/v1/members/{number}", headers=headers).get_json()
    return body["name"], body["email"], body["birth_date"]


def test_a_partner_sees_what_it_supplied_or_what_the_member_shares(client, make_partner):
    _, acme = make_partner("acme")
    _, bravo = make_partner("bravo")
    _, carol = make_partner("carol")
    member = enrol(client, bravo, "b-1", name="Ada Lovelace", email="ada@example.com",
                   birth_date="1815-12-10")
    # acme links the number and supplies a name of its own; carol links it with nothing
    linked = post_ok(client, "/v1/members", acme, {
        "partner_member_ref": "a-1", "member_number": member, "name": "A. Lovelace",
        "email": "ada@acme.example"}, status=200)
    assert (linked["name"], linked["email"], linked["birth_date"]) == \
        ("A. Lovelace", "ada@acme.example", None)
    post_ok(client, "/v1/members", carol, {"partner_member_ref": "c-1",
                                           "member_number": member}, status=200)
    assert _personal(client, bravo, member) == ("Ada Lovelace", "ada@example.com",
                                                "1815-12-10")
    assert _personal(client, acme, member) == ("A. Lovelace", "ada@acme.example", None)
    assert _personal(client, carol, member) == (None, None, None)
    # linking changed nothing of the member's own profile
    me = member_token(member)
    own = client.get("/v1/me", headers=me).get_json()
    assert (own["name"], own["email"]) == ("Ada Lovelace", "ada@example.com")

    # the member shares her details with carol, then withdraws
    listed = client.get("/v1/me/consents", headers=me).get_json()["items"]
    assert [(c["partner"], c["share"]) for c in listed] == [
        ("acme", False), ("bravo", False), ("carol", False)]
    given = client.put("/v1/me/consents/carol", json={"share": True}, headers=me)
    assert given.status_code == 200, given.get_json()
    assert (given.get_json()["partner"], given.get_json()["share"]) == ("carol", True)
    assert _personal(client, carol, member) == ("Ada Lovelace", "ada@example.com",
                                                "1815-12-10")
    assert _personal(client, acme, member) == ("A. Lovelace", "ada@acme.example", None)
    again = client.put("/v1/me/consents/carol", json={"share": True}, headers=me)
    assert again.status_code == 200 and again.get_json()["share"] is True
    # refusals change nothing
    before = snapshot(client.application)
    assert_error(client.put("/v1/me/consents/nosuch", json={"share": True}, headers=me),
                 404, "not_found")
    for body in ({"share": "yes"}, {"share": 1}, {}, {"share": True, "extra": 1}):
        assert_error(client.put("/v1/me/consents/carol", json=body, headers=me),
                     422, "invalid_request")
    assert_error(client.put("/v1/me/consents/carol", json={"share": False}, headers=acme),
                 403, "insufficient_scope")
    assert snapshot(client.application) == before
    withdrawn = client.put("/v1/me/consents/carol", json={"share": False}, headers=me)
    assert withdrawn.status_code == 200 and withdrawn.get_json()["share"] is False
    assert _personal(client, carol, member) == (None, None, None)


def test_consents_follow_a_merge_and_end_with_a_closure(client, make_partner):
    _, acme = make_partner("acme")
    _, bravo = make_partner("bravo")
    x = enrol(client, acme, "x", name="Ann", email="ann@example.com")
    s = enrol(client, bravo, "s")
    assert client.put("/v1/me/consents/bravo", json={"share": True},
                      headers=member_token(x)).status_code == 200
    merge.merge(x, s, operator="test")
    # the survivor took Ann's data, and bravo, which she shared it with, sees it
    assert _personal(client, bravo, s) == ("Ann", "ann@example.com", None)
    assert _personal(client, acme, s) == ("Ann", "ann@example.com", None)  # acme's own
    assert _personal(client, acme, x) == (None, None, None)
    closure.close(member_id(s))
    with UnitOfWork(readonly=True) as uow:
        assert uow.session.query(MemberConsent).count() == 0
        assert uow.session.query(MemberLink).count() == 0
    assert _personal(client, bravo, s) == (None, None, None)
