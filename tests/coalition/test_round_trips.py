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
from coalition.ledger.models import Entry, Lot, Posting, Wallet
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
