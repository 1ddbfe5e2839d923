"""On PostgreSQL an earn is three statements of the ledger: the token check (in
autocommit), the booking's first read, and the booking itself (wallet, entry, postings and
lot in one statement), between one BEGIN and one COMMIT; partner operations add one read
before the COMMIT (the partner's funding and webhook listeners, :mod:`partners.transactions`),
which for a prepaid partner also takes the earn's points from a slot of its funding: a
prepaid earn is as many statements as a post-paid one; and it books exactly what it says."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from coalition.db import db, read
from coalition.ledger.models import Entry, Hold, Lot, LotMovement, Posting, Wallet
from partners.models import FundingSlot

RULES = {"pending_days": 0, "expiry": {"policy": "none"},
         "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]}


@pytest.mark.postgres
@pytest.mark.parametrize("funding", [None, {"points": 1000, "price": "10.00",
                                            "currency": "GBP", "low_threshold_points": 10}])
@pytest.mark.parametrize("body", [{"points": 25}, {"spend": {"amount": "25.40",
                                                             "currency": "GBP"}}])
def test_an_earn_is_three_statements_and_the_partner_report(client, make_partner,
                                                           operator_headers, body, funding):
    assert client.put("/v1/admin/program", json=RULES,
                      headers=operator_headers).status_code == 200
    _, headers = make_partner("acme")
    if funding is not None:  # prepaid
        assert client.post("/v1/admin/partners/acme/funding", json=funding,
                           headers=operator_headers).status_code in (200, 201)
    number = client.post("/v1/members", json={"partner_member_ref": "c1"},
                         headers=headers).get_json()["member_number"]
    # a first earn from a spend releases the welcome bonus, if any: the figures below are
    # those of the member's every later earn
    assert client.post("/v1/earn", json={"member_number": number, "partner_txn_id": "t-0",
                                         "points": 1}, headers=headers).status_code == 201
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        response = client.post("/v1/earn", json={"member_number": number,
                                                 "partner_txn_id": "t-1", **body},
                               headers=headers)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert response.status_code == 201, response.get_json()
    assert len(statements) == 4, statements
    assert "oauth_token" in statements[0]
    assert statements[2].startswith("WITH w AS (UPDATE wallet"), statements[2]
    assert "partner_funding" in statements[3] and "webhook_endpoint" in statements[3]
    if funding is not None:
        assert "UPDATE funding_slot" in statements[3]  # the points taken in the same read
        with read() as session:
            left = session.scalar(select(func.sum(FundingSlot.remaining)))
        assert left == 1000 - 1 - 25
    answer = response.get_json()
    assert answer["points"] == 25 and answer["balance"]["available"] == 26
    with read() as session:
        entry = session.scalar(select(Entry).where(Entry.partner_txn_id == "t-1"))
        postings = session.execute(select(Posting.account, Posting.points)
                                   .where(Posting.entry_id == entry.id)
                                   .order_by(Posting.account)).all()
        lot = session.execute(select(Lot.points, Lot.remaining, Lot.state)
                              .where(Lot.entry_id == entry.id)).one()
        wallet = session.get(Wallet, entry.member_id)
        lots = session.scalar(select(func.sum(Lot.remaining))
                              .where(Lot.member_id == entry.member_id, Lot.state == "live"))
    assert entry.available_after == 26 and entry.points == 25
    assert [tuple(p) for p in postings] == [("member:available", 25), ("partner:issued", -25)]
    assert tuple(lot) == (25, 25, "live")
    assert wallet.available == lots == 26


def _statements_of(client, path: str, body: dict, headers: dict) -> tuple[list[str], dict]:
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        response = client.post(path, json=body, headers=headers)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert response.status_code == 201, response.get_json()
    return statements, response.get_json()


@pytest.fixture
def member(client, make_partner, operator_headers):
    """A member with 1000 points in 4 lots at acme, and acme's headers."""
    assert client.put("/v1/admin/program", json=RULES,
                      headers=operator_headers).status_code == 200
    _, headers = make_partner("acme")
    number = client.post("/v1/members", json={"partner_member_ref": "c1"},
                         headers=headers).get_json()["member_number"]
    for i in range(4):
        assert client.post("/v1/earn", json={"member_number": number, "partner_txn_id": f"e{i}",
                                             "points": 250}, headers=headers).status_code == 201
    return number, headers


def _the_booking_shape(statements: list[str], reported: bool = True) -> None:
    """Token check, the first read, the booking's one statement and, for what a partner's
    report covers, the partner report (on main: a capture was 11 statements in full, 12
    in part; a void 13)."""
    assert len(statements) == 3 + reported, statements
    assert "oauth_token" in statements[0]
    assert statements[1].startswith("SELECT"), statements[1]
    assert statements[2].startswith("WITH w AS (UPDATE wallet"), statements[2]
    if reported:
        assert "partner_funding" in statements[3]


@pytest.mark.postgres
@pytest.mark.parametrize("points", [300, 1000])
def test_a_burn_changes_its_lots_in_its_entry_statement(client, member, points):
    """The token check, the first read, the wallet, the lots it takes, and the entry with
    its postings, lot movements and the lots' change: five (the lots' change was a
    statement of its own)."""
    number, headers = member
    statements, answer = _statements_of(client, "/v1/burn", {
        "member_number": number, "partner_txn_id": "b1", "points": points}, headers)
    assert "oauth_token" in statements[0]
    assert statements[2].startswith("UPDATE wallet"), statements[2]
    assert statements[3].startswith("SELECT lot.id"), statements[3]
    assert statements[4].startswith("WITH e AS (INSERT INTO entry")
    assert "UPDATE lot" in statements[4]
    # and the partner's report, a burn being a redemption at the partner
    assert len(statements) == 6 and "partner_funding" in statements[5], (
        "\n".join(statement[:80] for statement in statements))
    assert answer["balance"] == {"available": 1000 - points, "pending": 0, "held": 0}
    with read() as session:
        entry = session.get_one(Entry, answer["id"])
        moved = session.scalar(select(func.sum(LotMovement.points))
                               .where(LotMovement.entry_id == entry.id))
        remaining = session.scalars(select(Lot.remaining)
                                    .where(Lot.member_id == entry.member_id)
                                    .order_by(Lot.id)).all()
        wallet = session.get_one(Wallet, entry.member_id)
    assert moved == -points
    assert sum(remaining) == wallet.available == 1000 - points
    # four lots of 250, the earliest expiry first (none here: in id order)
    assert remaining == [max(0, min(250, 250 * (i + 1) - points)) for i in range(4)]


@pytest.mark.postgres
def test_an_authorisation_reads_once_before_its_wallet_change(client, member):
    """The token check, one first read (the partner_txn_id, the member, the rules'
    version), then the wallet, the lots it takes, and the entry with its postings, lot
    movements, the lots' change and the hold: five (the probe, the member and the rules
    were three statements of their own, the lots' change another, and the hold was written
    by the ORM: nine; then by a statement of its own: six)."""
    number, headers = member
    statements, answer = _statements_of(client, "/v1/holds", {
        "member_number": number, "partner_txn_id": "h1", "points": 400}, headers)
    assert "oauth_token" in statements[0]
    first = statements[1]
    assert first.startswith("SELECT") and "member" in first and "program_rules" in first
    assert "partner_txn_id" in first, first
    assert statements[2].startswith("UPDATE wallet"), statements[2]
    assert statements[3].startswith("SELECT lot.id")
    assert statements[4].startswith("WITH e AS (INSERT INTO entry")
    assert "UPDATE lot" in statements[4] and "INSERT INTO hold" in statements[4]
    assert len(statements) == 5, "\n".join(statement[:80] for statement in statements)
    assert answer["status"] == "open" and answer["points"] == 400
    assert answer["balance"] == {"available": 600, "pending": 0, "held": 400}
    with read() as session:
        hold = session.get(Hold, answer["id"])
        assert (hold.status, hold.points, hold.captured) == ("open", 400, 0)
        assert (hold.expires_at.replace(microsecond=0).isoformat()
                == answer["expires_at"].replace("Z", "+00:00"))
        moved = session.scalar(select(func.sum(LotMovement.points))
                               .where(LotMovement.entry_id == hold.entry_id))
        wallet = session.get(Wallet, hold.member_id)
    assert moved == -400 and (wallet.available, wallet.held) == (600, 400)


@pytest.mark.postgres
@pytest.mark.parametrize("captured", [None, 320])
def test_a_capture_is_a_first_read_and_one_booking_statement(client, member, captured):
    number, headers = member
    held = client.post("/v1/holds", json={"member_number": number, "partner_txn_id": "h1",
                                          "points": 400}, headers=headers).get_json()
    body = {"partner_txn_id": "c1", **({"points": captured} if captured else {})}
    statements, answer = _statements_of(client, f"/v1/holds/{held['id']}/capture", body,
                                        headers)
    _the_booking_shape(statements)
    assert answer["points"] == (captured or 400)
    assert answer["balance"] == {"available": 600 + 400 - (captured or 400), "pending": 0,
                                 "held": 0}
    _ledger_agrees(held["id"], "captured", captured or 400)


@pytest.mark.postgres
def test_a_void_is_a_first_read_and_one_booking_statement(client, member):
    number, headers = member
    held = client.post("/v1/holds", json={"member_number": number, "partner_txn_id": "h1",
                                          "points": 400}, headers=headers).get_json()
    statements, answer = _statements_of(client, f"/v1/holds/{held['id']}/void",
                                        {"partner_txn_id": "v1"}, headers)
    _the_booking_shape(statements, reported=False)
    assert answer["status"] == "voided" and answer["balance_at"] == "void"
    assert answer["balance"] == {"available": 1000, "pending": 0, "held": 0}
    _ledger_agrees(held["id"], "voided", 0)


def _ledger_agrees(hold_id: int, status: str, captured: int) -> None:
    with read() as session:
        hold = session.get(Hold, hold_id)
        assert (hold.status, hold.captured) == (status, captured)
        assert hold.closed_by_entry_id is not None
        entry = session.get(Entry, hold.closed_by_entry_id)
        moved = session.scalar(select(func.sum(LotMovement.points))
                               .where(LotMovement.entry_id == entry.id))
        assert (moved or 0) == hold.points - captured
        wallet = session.get(Wallet, hold.member_id)
        lots = session.scalar(select(func.sum(Lot.remaining))
                              .where(Lot.member_id == hold.member_id, Lot.state == "live"))
        assert wallet.available == lots == entry.available_after
        assert wallet.held == entry.held_after == 0


@pytest.mark.postgres
@pytest.mark.parametrize("original", ["earn", "burn"])
def test_a_reversal_is_a_first_read_and_one_booking_statement(client, member, original):
    """On main: 14 statements each."""
    number, headers = member
    body = {"member_number": number, "partner_txn_id": "o1", "points": 300}
    done = client.post(f"/v1/{original}", json=body, headers=headers).get_json()
    statements, answer = _statements_of(client, f"/v1/transactions/{done['id']}/reversals",
                                        {"partner_txn_id": "r1", "points": 100}, headers)
    _the_booking_shape(statements)
    assert answer["points"] == 100 and answer["type"] == f"{original}_reversal"
    available = 1000 + (200 if original == "earn" else -200)
    assert answer["balance"] == {"available": available, "pending": 0, "held": 0}
    with read() as session:
        entry = session.get(Entry, answer["id"])
        moved = session.scalar(select(func.sum(LotMovement.points))
                               .where(LotMovement.entry_id == entry.id))
        wallet = session.get(Wallet, entry.member_id)
        lots = session.scalar(select(func.sum(Lot.remaining))
                              .where(Lot.member_id == entry.member_id, Lot.state == "live"))
    assert moved == (-100 if original == "earn" else 100)
    assert wallet.available == lots == entry.available_after == available


@pytest.mark.postgres
def test_a_balance_read_is_one_statement_after_the_token(client, member):
    """The member with its wallet and its first expiry dates, in autocommit: one statement
    sees one moment (three statements after the token once, then two in a transaction)."""
    number, headers = member
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        response = client.get(f"/v1/members/{number}/balance", headers=headers)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert response.status_code == 200, response.get_json()
    assert len(statements) == 2, statements
    assert "oauth_token" in statements[0] and "wallet" in statements[1]
    assert "lot" in statements[1] and "RECURSIVE" in statements[1]
    answer = response.get_json()
    assert (answer["member_number"], answer["available"]) == (number, 1000)
