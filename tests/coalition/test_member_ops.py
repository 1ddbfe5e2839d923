"""Member operations on the ledger: transfers, donations, the welcome bonus, merges and
closures, through the member and operator APIs and the services behind them.

Every test ends with ``check_ledger()`` green, and every refused request is shown to have
changed nothing (``snapshot``).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from coalition.clock import add_months
from coalition.db import UnitOfWork, db
from coalition.errors import IdempotencyConflict
from coalition.ledger import closure, lookup, merge, numbers, transfers
from coalition.ledger.models import Entry, Hold, Member, Wallet
from partners.service import partner_id
from tests.conftest import snapshot
from tests.factories.clock import held_at
from tests.factories.ledger import PRICED_FROM, book_earn
from tests.factories.member_records import (
    assert_clean,
    entries_of,
    link_data,
    links_of,
    lots_of,
    member_id,
    member_row,
    member_token,
    personal_data,
    postings_of,
)
from tests.factories.partner_api import assert_error, balance, earn, enrol, hold, publish

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def acme(make_partner):
    return make_partner("acme", valid_from=PRICED_FROM)


@pytest.fixture
def bravo(make_partner):
    return make_partner("bravo", valid_from=PRICED_FROM)


@pytest.fixture
def charity(make_partner):
    return make_partner("redcross", kind="charity")


@pytest.fixture
def rules(client, operator_headers):
    publish(client, operator_headers)


def wallet(number: str) -> tuple[int, int, int]:
    with UnitOfWork(readonly=True) as uow:
        w = uow.session.get_one(Wallet, member_id(number))
        return w.available, w.pending, w.held


def transfer(client, headers, to: str, points: int, key: str | None = None):
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/me/transfers", json={"to_member_number": to, "points": points},
                       headers={**headers, **extra})


def donate(client, headers, partner: str, points: int, key: str | None = None):
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/me/donations", json={"partner": partner, "points": points},
                       headers={**headers, **extra})


def unused_number() -> str:
    while True:
        number = numbers.new_number()
        with UnitOfWork(readonly=True) as uow:
            if uow.session.scalar(select(Member.id).where(Member.member_number == number)) \
                    is None:
                return number


# --------------------------------------------------------------------------- transfers


def test_transfer_moves_points_and_mirrors_the_lots_with_origin_and_expiry(
        app, client, rules, acme, bravo):
    _, acme_h = acme
    alice = enrol(client, acme_h, "alice")
    bob = enrol(client, acme_h, "bob")
    a, b = member_id(alice), member_id(bob)
    acme_id, bravo_id = partner_id("acme"), partner_id("bravo")
    # lots with known expiries: acme's earliest, then bravo's
    now = datetime.now(UTC)
    first = book_earn(a, acme_id, 100, now - timedelta(days=60))
    book_earn(a, bravo_id, 50, now - timedelta(days=30))
    alice_lots = lots_of(a)

    response = transfer(client, member_token(alice), bob, 120)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["type"] == "transfer"
    assert body["to_member_number"] == bob
    assert body["points"] == 120
    assert body["balance"] == {"available": 30, "pending": 0, "held": 0}
    assert response.headers.get("Idempotent-Replayed") is None

    assert wallet(alice) == (30, 0, 0)
    assert wallet(bob) == (120, 0, 0)
    (entry,) = entries_of(a, "transfer")
    assert entry.id == body["id"]
    assert entry.partner_id is None and entry.member_id == a and entry.points == 120
    assert entry.note == f"to {bob}"
    assert postings_of(entry.id) == sorted([("member:available", a, None, -120),
                                           ("member:available", b, None, 120)])
    # alice's lots: acme's taken in full (earliest expiry), 20 of bravo's
    assert [(lot["origin_partner_id"], lot["remaining"]) for lot in lots_of(a)] == \
        [(acme_id, 0), (bravo_id, 30)]
    # bob's lots mirror each consumed part: origin and expiry kept, earned now
    received = lots_of(b)
    assert [(lot["origin_partner_id"], lot["source"], lot["points"], lot["remaining"],
             lot["state"], lot["expires_at"], lot["entry_id"]) for lot in received] == [
        (acme_id, "transfer", 100, 100, "live", alice_lots[0]["expires_at"], entry.id),
        (bravo_id, "transfer", 20, 20, "live", alice_lots[1]["expires_at"], entry.id),
    ]
    assert alice_lots[0]["expires_at"] == add_months(now - timedelta(days=60), 12)
    for lot in received:
        assert abs(lot["earned_at"] - entry.booked_at) < timedelta(seconds=1)
    assert first  # the earn entry stays alice's
    assert_clean()


def test_a_received_transfer_shows_neither_the_senders_number_nor_its_key(
        app, client, rules, acme):
    _, acme_h = acme
    alice = enrol(client, acme_h, "alice", name="Alice Smith")
    bob = enrol(client, acme_h, "bob", name="Bob")
    earn(client, acme_h, alice, "e1", 100)
    alice_h, bob_h = member_token(alice), member_token(bob)
    assert transfer(client, alice_h, bob, 10, key="alice-secret-1").status_code == 201
    named = client.post("/v1/me/transfers", json={"to_member_number": bob, "points": 20,
                                                  "share_name": True},
                        headers={**alice_h, "Idempotency-Key": "alice-secret-2"})
    assert named.status_code == 201, named.get_json()

    def history(headers):
        response = client.get("/v1/me/transactions", headers=headers)
        assert response.status_code == 200
        return response

    received = history(bob_h)
    assert alice not in received.get_data(as_text=True)
    assert "alice-secret" not in received.get_data(as_text=True)
    transfers = [t for t in received.get_json()["items"] if t["type"] == "transfer"]
    assert [(t["points"], t["partner_txn_id"], t["note"], t["change"]["available"])
            for t in transfers] == [(20, None, "from Alice", 20), (10, None, "from a member", 10)]
    # the sender still sees its own keys and whom it sent to
    sent = [t for t in history(alice_h).get_json()["items"] if t["type"] == "transfer"]
    assert [(t["partner_txn_id"], t["note"]) for t in sent] == [
        (f"{alice} alice-secret-2", f"to {bob}"), (f"{alice} alice-secret-1", f"to {bob}")]
    # a retry of the named transfer with share_name left out is another request
    before = snapshot(app)
    assert_error(transfer(client, alice_h, bob, 20, key="alice-secret-2"), 409,
                 "idempotency_conflict")
    assert snapshot(app) == before
    # once the sender's account is closed its name is gone from the receiver's view too
    closure.close(member_id(alice))
    transfers = [t for t in history(bob_h).get_json()["items"] if t["type"] == "transfer"]
    assert [t["note"] for t in transfers] == ["from a member", "from a member"]
    assert_clean()


def test_transfer_limits_per_transfer_and_per_day(app, client, operator_headers, acme):
    publish(client, operator_headers, transfers={"enabled": True, "min_points": 10,
                                                 "max_points": 100, "max_points_per_day": 150})
    _, acme_h = acme
    alice, bob = enrol(client, acme_h, "alice"), enrol(client, acme_h, "bob")
    earn(client, acme_h, alice, "e1", 1000)
    alice_h = member_token(alice)

    before = snapshot(app)
    for points, rule in ((9, "At least 10"), (101, "At most 100")):
        body = assert_error(transfer(client, alice_h, bob, points), 409, "transfer_limit",
                            {"points"})
        assert rule in body["errors"]["points"][0]
    assert snapshot(app) == before

    # a transfer booked yesterday (UTC) does not count against today's allowance
    yesterday = datetime.combine(datetime.now(UTC).date(), datetime.min.time(),
                                 UTC) - timedelta(seconds=1)
    with held_at(yesterday):
        assert transfer(client, alice_h, bob, 100).status_code == 201

    assert transfer(client, alice_h, bob, 100).status_code == 201
    assert transfer(client, alice_h, bob, 50).status_code == 201
    before = snapshot(app)
    body = assert_error(transfer(client, alice_h, bob, 10), 409, "transfer_limit", {"points"})
    assert "150 already transferred today" in body["errors"]["points"][0]
    assert snapshot(app) == before
    assert wallet(alice) == (750, 0, 0) and wallet(bob) == (250, 0, 0)

    publish(client, operator_headers, transfers={"enabled": False})
    bob_h = member_token(bob)
    before = snapshot(app)
    assert_error(transfer(client, bob_h, alice, 10), 409, "transfer_limit")
    assert snapshot(app) == before
    assert_clean()


def test_transfer_refusals_change_nothing(app, client, operator_headers, rules, acme):
    _, acme_h = acme
    alice, bob = enrol(client, acme_h, "alice"), enrol(client, acme_h, "bob")
    carol, dave = enrol(client, acme_h, "carol"), enrol(client, acme_h, "dave")
    earn(client, acme_h, alice, "e1", 100)
    alice_h = member_token(alice)
    closure.close(member_id(carol))
    merge.merge(dave, bob, operator="test")

    before = snapshot(app)
    assert_error(transfer(client, alice_h, alice, 10), 422, "invalid_request",
                 {"to_member_number"})
    assert_error(transfer(client, alice_h, carol, 10), 409, "member_closed",
                 {"to_member_number"})
    merged = assert_error(transfer(client, alice_h, dave, 10), 409, "member_merged",
                          {"to_member_number"})
    assert merged["errors"]["to_member_number"] == [f"Use {bob}."]
    assert_error(transfer(client, alice_h, unused_number(), 10), 404, "not_found",
                 {"to_member_number"})
    bad = alice[:-1] + str((int(alice[-1]) + 1) % 10)
    assert_error(transfer(client, alice_h, bad, 10), 422, "invalid_request",
                 {"to_member_number"})
    assert_error(transfer(client, alice_h, bob, 101), 409, "insufficient_points")
    for points in (0, -5, 1.5, "10", True):
        response = client.post("/v1/me/transfers", json={"to_member_number": bob,
                                                         "points": points}, headers=alice_h)
        assert_error(response, 422, "invalid_request", {"points"})
    assert_error(client.post("/v1/me/transfers", json={"to_member_number": bob,
                                                       "points": 5, "extra": 1},
                             headers=alice_h), 422, "invalid_request", {"extra"})
    assert_error(transfer(client, alice_h, bob, 10, key="has space"), 422,
                 "invalid_request", {"Idempotency-Key"})
    assert_error(transfer(client, alice_h, bob, 10, key="k" * 51), 422,
                 "invalid_request", {"Idempotency-Key"})
    # the wrong kind of token, or none
    assert_error(transfer(client, acme_h, bob, 10), 403, "insufficient_scope")
    assert_error(transfer(client, operator_headers, bob, 10), 403, "insufficient_scope")
    assert_error(client.post("/v1/me/transfers", json={"to_member_number": bob,
                                                       "points": 10}), 401, "unauthorized")
    assert snapshot(app) == before
    assert_clean()


def test_transfer_idempotency_key(app, client, rules, acme):
    _, acme_h = acme
    alice, bob, carol = (enrol(client, acme_h, r) for r in ("alice", "bob", "carol"))
    earn(client, acme_h, alice, "e1", 100)
    earn(client, acme_h, carol, "e2", 100)
    alice_h = member_token(alice)

    first = transfer(client, alice_h, bob, 30, key="k-1")
    assert first.status_code == 201
    before = snapshot(app)
    again = transfer(client, alice_h, bob, 30, key="k-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert snapshot(app) == before
    assert_error(transfer(client, alice_h, bob, 31, key="k-1"), 409, "idempotency_conflict",
                 {"Idempotency-Key"})
    assert_error(donate(client, alice_h, "acme", 30, key="k-1"), 409, "idempotency_conflict")
    assert snapshot(app) == before
    # the key is the member's own: another member may use the same one
    assert transfer(client, member_token(carol), bob, 30, key="k-1").status_code == 201
    # a new key (or none) is a new transfer
    assert transfer(client, alice_h, bob, 30, key="k-2").status_code == 201
    assert transfer(client, alice_h, bob, 5).status_code == 201
    assert wallet(alice) == (35, 0, 0) and wallet(bob) == (95, 0, 0)
    (keyed, *_) = entries_of(member_id(alice), "transfer")
    assert keyed.partner_txn_id == f"{alice} k-1"
    assert_clean()


def test_concurrent_duplicates_make_one_transfer(app, client, rules, acme):
    _, acme_h = acme
    alice, bob = enrol(client, acme_h, "alice"), enrol(client, acme_h, "bob")
    earn(client, acme_h, alice, "e1", 1000)
    a = member_id(alice)
    results, errors = [], []
    barrier = threading.Barrier(6)

    def run() -> None:
        with app.app_context():
            barrier.wait()
            try:
                results.append(transfers.transfer(a, bob, 40, request_id="same"))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.replayed for r in results) == [False] + [True] * 5
    assert len({r.body["id"] for r in results}) == 1
    assert len(entries_of(a, "transfer")) == 1
    assert wallet(alice) == (960, 0, 0) and wallet(bob) == (40, 0, 0)
    assert_clean()


def test_concurrent_transfers_both_ways_never_deadlock_for_good(app, client, rules, acme):
    _, acme_h = acme
    alice, bob = enrol(client, acme_h, "alice"), enrol(client, acme_h, "bob")
    earn(client, acme_h, alice, "e1", 500)
    earn(client, acme_h, bob, "e2", 500)
    ids = {alice: member_id(alice), bob: member_id(bob)}
    errors = []

    def run(sender: str, receiver: str) -> None:
        with app.app_context():
            for _ in range(10):
                try:
                    transfers.transfer(ids[sender], receiver, 7)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)

    threads = [threading.Thread(target=run, args=pair)
               for pair in ((alice, bob), (bob, alice)) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert wallet(alice) == (500, 0, 0) and wallet(bob) == (500, 0, 0)
    assert_clean()


# --------------------------------------------------------------------------- donations


def test_donation_is_a_redemption_at_the_charity(app, client, rules, acme, charity):
    _, acme_h = acme
    alice = enrol(client, acme_h, "alice")
    earn(client, acme_h, alice, "e1", 100)
    a, red = member_id(alice), partner_id("redcross")

    response = donate(client, member_token(alice), "redcross", 40, key="d-1")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["type"], body["partner"], body["points"]) == ("donation", "redcross", 40)
    assert body["balance"] == {"available": 60, "pending": 0, "held": 0}
    (entry,) = entries_of(a, "donation")
    assert entry.partner_id == red and entry.partner_txn_id == f"{alice} d-1"
    assert postings_of(entry.id) == sorted([("member:available", a, None, -40),
                                           ("partner:redeemed", None, red, 40)])
    assert [(lot["remaining"]) for lot in lots_of(a)] == [60]
    replay = donate(client, member_token(alice), "redcross", 40, key="d-1")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == body
    assert wallet(alice) == (60, 0, 0)
    assert_clean()


def test_donation_only_to_an_active_charity(app, client, rules, acme, charity, make_partner):
    _, acme_h = acme
    make_partner("oxfam", kind="charity")
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE partner SET status = 'suspended' WHERE code = 'oxfam'"))
    alice = enrol(client, acme_h, "alice")
    earn(client, acme_h, alice, "e1", 100)
    alice_h = member_token(alice)
    before = snapshot(app)
    for code in ("acme", "oxfam", "nobody"):
        assert_error(donate(client, alice_h, code, 10), 422, "invalid_request", {"partner"})
    assert_error(donate(client, alice_h, "redcross", 101), 409, "insufficient_points")
    assert snapshot(app) == before
    assert_clean()


# --------------------------------------------------------------------------- welcome bonus


def test_welcome_bonus_on_enrolment(app, client, operator_headers, acme):
    publish(client, operator_headers, bonuses={"welcome": 50, "birthday": 0})
    _, acme_h = acme
    response = client.post("/v1/members", json={"partner_member_ref": "alice"},
                           headers=acme_h)
    assert response.status_code == 201
    body = response.get_json()
    # pending until the member's first earn from a spend
    assert body["balance"] == {"available": 0, "pending": 50, "held": 0}
    a = member_id(body["member_number"])
    (entry,) = entries_of(a, "bonus")
    assert (entry.note, entry.points, entry.partner_id) == ("welcome", 50, None)
    assert postings_of(entry.id) == sorted([("coalition:funded", None, None, -50),
                                           ("member:pending", a, None, 50)])
    (lot,) = lots_of(a)
    assert (lot["source"], lot["origin_partner_id"], lot["points"], lot["state"]) == \
        ("bonus", None, 50, "pending")
    assert lot["expires_at"] == add_months(entry.booked_at, 12)
    # finding or linking the member again is no new enrolment: no second bonus
    enrol(client, acme_h, "alice")
    assert len(entries_of(a, "bonus")) == 1
    # a bonus is not the member's activity
    with UnitOfWork(readonly=True) as uow:
        assert uow.session.get_one(Wallet, a).last_activity_at is None

    publish(client, operator_headers, bonuses={"welcome": 0, "birthday": 0})
    bob = enrol(client, acme_h, "bob")
    assert entries_of(member_id(bob), "bonus") == []
    assert wallet(bob) == (0, 0, 0)
    assert_clean()


def test_a_partner_cannot_burn_a_welcome_bonus_it_merely_enrolled(
        app, client, operator_headers, acme, bravo):
    publish(client, operator_headers, bonuses={"welcome": 50, "birthday": 0})
    (_, acme_h), (_, bravo_h) = acme, bravo
    alice = enrol(client, acme_h, "alice")
    a = member_id(alice)
    assert wallet(alice) == (0, 50, 0)

    def burn(points: int, txn: str):
        return client.post("/v1/burn", json={"member_number": alice, "partner_txn_id": txn,
                                             "points": points}, headers=acme_h)

    before = snapshot(app)
    assert_error(burn(50, "farm1"), 409, "insufficient_points")
    assert_error(client.post("/v1/holds", json={"member_number": alice,
                                                "partner_txn_id": "farm2", "points": 50},
                             headers=acme_h), 409, "insufficient_points")
    assert snapshot(app) == before
    # an earn of points without a spend does not release it either
    earn(client, acme_h, alice, "p1", 10)
    assert wallet(alice) == (10, 50, 0)
    assert_error(burn(11, "farm3"), 409, "insufficient_points")
    assert entries_of(a, "release") == []
    # the first earn from a spend (at any partner) makes it spendable, in the same booking
    answer = earn(client, bravo_h, alice, "s1", spend={"amount": "20.00", "currency": "GBP"})
    assert answer["balance"] == {"available": 80, "pending": 0, "held": 0}
    (release,) = entries_of(a, "release")
    assert postings_of(release.id) == sorted([("member:pending", a, None, -50),
                                             ("member:available", a, None, 50)])
    assert [(lot["source"], lot["state"], lot["remaining"]) for lot in lots_of(a)] == [
        ("bonus", "live", 50), ("earn", "live", 10), ("earn", "live", 20)]
    # a second one releases nothing more; a replay of the first books nothing
    earn(client, bravo_h, alice, "s2", spend={"amount": "5.00", "currency": "GBP"})
    replay = client.post("/v1/earn", json={"member_number": alice, "partner_txn_id": "s1",
                                           "spend": {"amount": "20.00", "currency": "GBP"}},
                         headers=bravo_h)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert len(entries_of(a, "release")) == 1 and wallet(alice) == (85, 0, 0)
    assert burn(85, "b1").status_code == 201
    assert_clean()


@pytest.mark.postgres
def test_concurrent_first_spends_release_the_welcome_bonus_once(
        app, client, operator_headers, acme, bravo):
    publish(client, operator_headers, bonuses={"welcome": 50, "birthday": 0})
    (_, acme_h), (_, bravo_h) = acme, bravo
    alice = enrol(client, acme_h, "alice")
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def run(n: int) -> None:
        with app.app_context(), app.test_client() as own:
            barrier.wait()
            answer = own.post("/v1/earn", json={
                "member_number": alice, "partner_txn_id": f"s{n}",
                "spend": {"amount": "10.00", "currency": "GBP"}},
                headers=acme_h if n % 2 else bravo_h)
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 6
    assert len(entries_of(member_id(alice), "release")) == 1
    assert wallet(alice) == (110, 0, 0)
    assert_clean()


# --------------------------------------------------------------------------- merge


def test_merge_moves_balances_lots_links_and_history(app, client, operator_headers, acme,
                                                     bravo):
    publish(client, operator_headers)  # blue, silver at 100
    (_, acme_h), (_, bravo_h) = acme, bravo
    x = enrol(client, acme_h, "x-at-acme", name="Ann", email="ann@example.com",
              birth_date="1990-05-01")
    enrol(client, bravo_h, "x-at-bravo", member_number=x)
    s = enrol(client, bravo_h, "s-at-bravo")
    earn(client, acme_h, x, "x1", 60)
    earn(client, acme_h, x, "x2", 50)  # 110: silver
    hold(client, acme_h, x, "xh", 30)
    earn(client, bravo_h, s, "s1", 20)
    publish(client, operator_headers, pending_days=14)
    earn(client, acme_h, x, "x3", 15)  # pending
    xi, si = member_id(x), member_id(s)
    assert member_row(x).tier == "silver" and member_row(s).tier == "blue"
    x_lots = {lot["id"] for lot in lots_of(xi)}
    x_entries = [e.id for e in entries_of(xi, "earn")]

    response = client.post("/v1/admin/members/merge", json={"absorbed": x, "survivor": s},
                           headers=operator_headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["absorbed"] == {"member_number": x, "status": "merged", "merged_into": s}
    assert body["survivor"] == {"member_number": s, "status": "active", "tier": "silver",
                                "balance": {"available": 130, "pending": 15, "held": 0}}
    assert body["moved"] == {"available": 110, "pending": 15, "lots": 3, "links": 2,
                             "holds_voided": 1}
    assert body["already_merged"] is False

    assert wallet(x) == (0, 0, 0) and wallet(s) == (130, 15, 0)
    with UnitOfWork(readonly=True) as uow:
        assert uow.session.scalars(select(Hold.status)).all() == ["voided"]
        merge_entry = uow.session.get_one(Entry, body["entry_id"])
    assert (merge_entry.kind, merge_entry.member_id, merge_entry.points) == ("merge", si, 125)
    assert postings_of(merge_entry.id) == sorted([
        ("member:available", xi, None, -110), ("member:available", si, None, 110),
        ("member:pending", xi, None, -15), ("member:pending", si, None, 15)])
    assert x_lots <= {lot["id"] for lot in lots_of(si)} and lots_of(xi) == []
    acme_id, bravo_id = partner_id("acme"), partner_id("bravo")
    assert links_of(si) == sorted([(acme_id, "x-at-acme"), (bravo_id, "x-at-bravo"),
                                   (bravo_id, "s-at-bravo")])
    # history: x's entries stay x's; the survivor's history includes them
    assert [e.id for e in entries_of(xi, "earn")] == x_entries
    assert lookup.member_ids_of(si) == sorted([xi, si])
    with UnitOfWork(readonly=True) as uow:
        history = set(uow.session.scalars(select(Entry.id).where(
            lookup.member_entries(lookup.member_ids_of(si, uow.session)))))
    assert set(x_entries) <= history and merge_entry.id in history
    # the survivor gains the personal data it lacked
    survivor = member_row(s)
    assert (survivor.name, survivor.email, str(survivor.birth_date)) == \
        ("Ann", "ann@example.com", "1990-05-01")

    # the absorbed number answers with a pointer to the survivor
    shown = client.get(f"/v1/members/{x}", headers=acme_h).get_json()
    assert (shown["status"], shown["merged_into"]) == ("merged", s)
    assert client.get(f"/v1/members/{s}", headers=acme_h).get_json()["merged_into"] is None
    x_headers = member_token(x)
    before = snapshot(app)
    refused = assert_error(client.post("/v1/earn", json={
        "member_number": x, "partner_txn_id": "x9", "points": 5}, headers=acme_h),
        409, "member_merged")
    assert refused["errors"] == {"member_number": [f"Use {s}."]}
    assert_error(transfer(client, x_headers, s, 5), 409, "member_merged")
    assert snapshot(app) == before
    # a partner's reference for x now names the survivor
    found = client.get("/v1/members", query_string={"partner_member_ref": "x-at-acme"},
                       headers=acme_h).get_json()
    assert found["member_number"] == s
    assert balance(client, acme_h, s)["available"] == 130
    assert_clean()

    # a partner reverses x's earn after the merge: the survivor gives the points back
    x1 = entries_of(xi, "earn")[0].id
    reversal = client.post(f"/v1/transactions/{x1}/reversals",
                           json={"partner_txn_id": "r1", "points": 10}, headers=acme_h)
    assert reversal.status_code == 201, reversal.get_json()
    assert reversal.get_json()["member_number"] == s
    assert wallet(s) == (120, 15, 0)
    assert_clean()

    # merging again answers with the merge as it stands, and changes nothing
    before = snapshot(app)
    again = client.post("/v1/admin/members/merge", json={"absorbed": x, "survivor": s},
                        headers=operator_headers)
    assert again.status_code == 200
    assert again.get_json()["already_merged"] is True
    assert again.get_json()["moved"]["available"] == 0
    assert snapshot(app) == before


def test_merge_moves_personal_data_and_erases_it_from_the_absorbed_row(
        app, client, rules, acme, bravo):
    (_, acme_h), (_, bravo_h) = acme, bravo
    x = enrol(client, acme_h, "x", name="Ann Smith", email="ann@example.com",
              birth_date="1990-05-01")
    s = enrol(client, bravo_h, "s", email="ann.s@example.org")
    other = enrol(client, acme_h, "o", name="Olga", email="olga@example.com",
                  birth_date="1980-01-02")
    before = personal_data()
    merge.merge(x, s, operator="test")
    after = personal_data()
    # the links move with what each partner supplied on them
    assert link_data() == {
        "x": (s, "Ann Smith", "ann@example.com", "1990-05-01"),
        "s": (s, None, "ann.s@example.org", None),
        "o": (other, "Olga", "olga@example.com", "1980-01-02")}
    # the survivor keeps its own e-mail and gains the name and birth date it lacked
    assert after[s] == ("Ann Smith", "ann.s@example.org", "1990-05-01", False, True)
    # the absorbed row keeps none of it (its sign-in code stays: merged, it is refused)
    assert after[x] == (None, None, None, False, True)
    # no other row changed
    assert {n: v for n, v in after.items() if n not in (x, s)} == \
        {n: v for n, v in before.items() if n not in (x, s)}
    assert after[other] == ("Olga", "olga@example.com", "1980-01-02", False, True)
    assert_clean()


def test_close_erases_personal_data_on_every_row_of_the_member(app, client, rules, acme):
    _, acme_h = acme
    y = enrol(client, acme_h, "y", name="Yan", email="yan@example.com",
              birth_date="1970-07-07")
    x = enrol(client, acme_h, "x", name="Xia", email="xia@example.com")
    s = enrol(client, acme_h, "s", name="Sam")
    other = enrol(client, acme_h, "o", name="Olga", email="olga@example.com")
    merge.merge(y, x, operator="test")
    merge.merge(x, s, operator="test")
    # a row merged before merges erased personal data still holds it
    with UnitOfWork() as uow:
        uow.session.execute(text("UPDATE member SET name = 'Yan', email = 'yan@example.com' "
                                 "WHERE member_number = :n"), {"n": y})
        uow.commit()
    before = personal_data()
    closure.close(member_id(s))
    after = personal_data()
    assert link_data() == {"o": (other, "Olga", "olga@example.com", None)}
    for number in (y, x, s):
        assert after[number] == (None, None, None, False, False), number
    assert after[other] == before[other] == ("Olga", "olga@example.com", None, False, True)
    assert_clean()


def test_merged_points_count_for_the_survivors_tier(app, client, operator_headers, acme):
    publish(client, operator_headers)  # silver at 100
    _, acme_h = acme
    x, s = enrol(client, acme_h, "x"), enrol(client, acme_h, "s")
    earn(client, acme_h, x, "x1", 80)
    earn(client, acme_h, s, "s1", 19)
    merge.merge(x, s, operator="test")
    assert member_row(s).tier == "blue"
    earn(client, acme_h, s, "s2", 1)  # 80 + 19 + 1 qualifying points
    assert member_row(s).tier == "silver"
    assert_clean()


def test_merge_of_a_member_with_nothing_and_chains(app, client, rules, acme):
    _, acme_h = acme
    y, x, s = (enrol(client, acme_h, r) for r in ("y", "x", "s"))
    earn(client, acme_h, y, "y1", 10)
    first = merge.merge(y, x, operator="test")
    assert first["entry_id"] is not None
    empty = merge.merge(enrol(client, acme_h, "empty"), s, operator="test")
    assert empty["entry_id"] is None  # nothing to move: no entry without postings
    merge.merge(x, s, operator="test")
    # y was merged into x, which was merged into s: y points straight at s
    assert member_row(y).merged_into_id == member_id(s)
    shown = client.get(f"/v1/members/{y}", headers=acme_h).get_json()
    assert shown["merged_into"] == s
    assert set(lookup.member_ids_of(member_id(s))) == {
        member_id(n) for n in (y, x, s)} | {member_id(empty["absorbed"]["member_number"])}
    assert wallet(s) == (10, 0, 0)
    assert_clean()


def test_merge_refusals_change_nothing(app, client, operator_headers, rules, acme):
    _, acme_h = acme
    x, s, c = (enrol(client, acme_h, r) for r in ("x", "s", "c"))
    earn(client, acme_h, x, "x1", 10)
    closure.close(member_id(c))
    before = snapshot(app)

    def merge(absorbed: str, survivor: str, headers=operator_headers):
        return client.post("/v1/admin/members/merge",
                           json={"absorbed": absorbed, "survivor": survivor}, headers=headers)

    assert_error(merge(x, x), 422, "invalid_request", {"survivor"})
    assert_error(merge(x, c), 409, "member_closed", {"survivor"})
    assert_error(merge(c, s), 409, "member_closed", {"absorbed"})
    assert_error(merge(x, unused_number()), 404, "not_found", {"survivor"})
    assert_error(merge(x, "123"), 422, "invalid_request", {"survivor"})
    assert_error(merge(x, s, headers=acme_h), 403, "insufficient_scope")
    assert snapshot(app) == before
    assert_clean()


def test_merge_cli(app, client, rules, acme):
    _, acme_h = acme
    x, s = enrol(client, acme_h, "x"), enrol(client, acme_h, "s")
    earn(client, acme_h, x, "x1", 10)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["member", "merge", x, s, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["absorbed"] == {"member_number": x, "status": "merged", "merged_into": s}
    assert data["survivor"]["balance"] == {"available": 10, "pending": 0, "held": 0}
    assert "by cli:" in entries_of(member_id(s), "merge")[0].note
    text_result = runner.invoke(args=["member", "merge", x, s])
    assert text_result.exit_code == 0 and "already merged" in text_result.output
    refused = runner.invoke(args=["member", "merge", s, s])
    assert refused.exit_code != 0 and "invalid_request" in refused.output
    bad = runner.invoke(args=["member", "merge", "123", s])
    assert bad.exit_code != 0 and "not a valid member number" in bad.output
    assert_clean()


# --------------------------------------------------------------------------- closure


def test_close_forfeits_points_and_erases_personal_data(app, client, operator_headers,
                                                         acme):
    publish(client, operator_headers)
    _, acme_h = acme
    alice = enrol(client, acme_h, "alice", name="Alice", email="alice@example.com",
                  birth_date="1991-02-03")
    earn(client, acme_h, alice, "e1", 70)
    hold(client, acme_h, alice, "h1", 20)
    publish(client, operator_headers, pending_days=14)
    earn(client, acme_h, alice, "e2", 25)
    a = member_id(alice)
    headers = member_token(alice)
    other = member_token(alice)  # every token of the member stops working

    response = client.post("/v1/me/close", headers=headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["member_number"] == alice and body["status"] == "closed"
    assert body["forfeited"] == {"available": 70, "pending": 25}
    assert body["holds_voided"] == 1

    assert wallet(alice) == (0, 0, 0)
    (entry,) = entries_of(a, "forfeiture")
    assert entry.points == 95
    assert postings_of(entry.id) == sorted([
        ("member:available", a, None, -70), ("coalition:forfeited", None, None, 70),
        ("member:pending", a, None, -25), ("coalition:forfeited", None, None, 25)])
    assert [(lot["remaining"], lot["state"]) for lot in lots_of(a)] == \
        [(0, "forfeited"), (0, "forfeited")]
    with UnitOfWork(readonly=True) as uow:
        assert uow.session.scalars(select(Hold.status)).all() == ["voided"]
    row = member_row(alice)
    assert (row.status, row.name, row.email, row.birth_date, row.password_hash,
            row.activation_code_hash) == ("closed", None, None, None, None, None)
    assert row.closed_at is not None and row.member_number == alice
    assert links_of(a) == []
    assert_clean()

    # the tokens stop working; the number is refused everywhere, and is not reused
    assert_error(client.post("/v1/me/close", headers=headers), 401, "unauthorized")
    assert_error(transfer(client, other, alice, 1), 401, "unauthorized")
    before = snapshot(app)
    assert_error(client.post("/v1/earn", json={"member_number": alice, "partner_txn_id": "e3",
                                               "points": 5}, headers=acme_h),
                 409, "member_closed")
    assert_error(client.post("/v1/members", json={"partner_member_ref": "again",
                                                  "member_number": alice}, headers=acme_h),
                 409, "member_closed")
    assert snapshot(app) == before
    shown = client.get(f"/v1/members/{alice}", headers=acme_h).get_json()
    assert (shown["status"], shown["name"], shown["email"]) == ("closed", None, None)
    # the partner's old reference is free: enrolling it makes a new member, a new number
    fresh = enrol(client, acme_h, "alice")
    assert fresh != alice
    assert_clean()


def test_closed_number_is_never_reused(app, client, rules, acme, monkeypatch):
    _, acme_h = acme
    alice = enrol(client, acme_h, "alice")
    closure.close(member_id(alice))
    drawn = iter([alice, alice])
    real = numbers.new_number
    monkeypatch.setattr(numbers, "new_number", lambda: next(drawn, None) or real())
    bob = enrol(client, acme_h, "bob")
    assert bob != alice
    assert member_row(alice).status == "closed"
    with UnitOfWork(readonly=True) as uow:
        assert uow.session.scalar(select(Member.id).where(Member.member_number == alice)) \
            == member_id(alice)


def test_close_refusals_change_nothing(app, client, rules, acme):
    _, acme_h = acme
    alice, bob = enrol(client, acme_h, "alice"), enrol(client, acme_h, "bob")
    merge.merge(alice, bob, operator="test")
    headers = member_token(alice)
    before = snapshot(app)
    body = assert_error(client.post("/v1/me/close", headers=headers), 409, "member_merged")
    assert bob in body["message"]
    assert_error(client.post("/v1/me/close", headers=acme_h), 403, "insufficient_scope")
    assert snapshot(app) == before
    closure.close(member_id(bob))
    before = snapshot(app)
    with pytest.raises(Exception) as refused:
        closure.close(member_id(bob))
    assert getattr(refused.value, "code", None) == "member_closed"
    assert snapshot(app) == before


def test_a_member_with_nothing_closes_without_an_entry(app, client, rules, acme):
    _, acme_h = acme
    alice = enrol(client, acme_h, "alice")
    result = closure.close(member_id(alice))
    assert result["forfeited"] == {"available": 0, "pending": 0}
    assert entries_of(member_id(alice), "forfeiture") == []
    assert_clean()


def test_replaying_a_transfer_key_after_conflicting_use(app, client, rules, acme):
    """The service answers the key's owner only: a key is looked up under the sender."""
    _, acme_h = acme
    alice, bob = enrol(client, acme_h, "alice"), enrol(client, acme_h, "bob")
    earn(client, acme_h, alice, "e1", 50)
    transfers.transfer(member_id(alice), bob, 10, request_id="x")
    with pytest.raises(IdempotencyConflict):
        transfers.transfer(member_id(alice), bob, 11, request_id="x")
    assert transfers.transfer(member_id(alice), bob, 10, request_id="x").replayed
