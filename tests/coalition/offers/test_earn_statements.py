"""What promotions cost the earn on PostgreSQL: nothing when none applies (the promotions
are read once per version; the earn stays the four statements of
tests/coalition/test_round_trips.py), and a promotion that applies adds its cap's guarded
UPDATE and the award's INSERT. The ledger check notices a promotion whose issued points
disagree with its awards."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from coalition.db import db
from coalition.ledger.check import check_ledger
from tests.factories.ledger import execute
from tests.factories.partner_api import earn, enrol, post_ok, publish


def _statements(client, headers, body) -> tuple[list[str], dict]:
    seen: list[str] = []

    def note(conn, cursor, statement, *args) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        response = client.post("/v1/earn", json=body, headers=headers)
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    assert response.status_code == 201, response.get_json()
    return seen, response.get_json()


@pytest.mark.postgres
def test_promotions_cost_the_earn_only_where_they_apply(client, make_partner,
                                                         operator_headers, clock):
    # one tier: no upgrade to look for (tests/coalition/test_round_trips.py)
    publish(client, operator_headers, tiers=[{"code": "member", "name": "Member",
                                              "threshold": 0, "multiplier": "1"}])
    _, acme = make_partner("acme")
    _, bolt = make_partner("bolt")
    window = {"valid_from": (clock() - timedelta(days=1)).isoformat(),
              "valid_to": (clock() + timedelta(days=1)).isoformat()}
    post_ok(client, "/v1/offers", bolt, {"name": "Bolt double", "rule": "multiplier",
                                         "multiplier": "2", "opt_in": False,
                                         "cap_points": 1000, **window})
    number = enrol(client, acme, "c1")
    enrol(client, bolt, "c1b", member_number=number)
    spend = {"spend": {"amount": "10", "currency": "GBP"}}
    # the first earn after a publication reads the promotions once
    earn(client, acme, number, "t-0", **spend)

    plain, answer = _statements(client, acme, {"member_number": number,
                                               "partner_txn_id": "t-1", **spend})
    assert len(plain) == 4, "\n".join(s[:90] for s in plain)
    assert answer["lines"] == [{"kind": "base", "points": 10}]

    promoted, answer = _statements(client, bolt, {"member_number": number,
                                                  "partner_txn_id": "t-2", **spend})
    assert answer["points"] == 20
    assert len(promoted) == 6, promoted
    assert promoted[2].startswith("UPDATE offer SET issued_points"), promoted[2]
    assert promoted[4].startswith("INSERT INTO offer_award"), promoted[4]


def test_the_check_notices_issued_points_without_awards(app, client, make_partner,
                                                        operator_headers, clock):
    publish(client, operator_headers)
    _, acme = make_partner("acme")
    offer = post_ok(client, "/v1/offers", acme, {
        "name": "Bonus", "rule": "bonus", "bonus_points": 5, "opt_in": False,
        "cap_points": 100, "valid_from": (clock() - timedelta(days=1)).isoformat(),
        "valid_to": (clock() + timedelta(days=1)).isoformat()})
    earn(client, acme, enrol(client, acme, "c1"), "t-1",
         spend={"amount": "10", "currency": "GBP"})
    assert check_ledger().ok
    execute("UPDATE offer SET issued_points = 7 WHERE id = :id", id=offer["id"])
    [result] = [c for c in check_ledger().checks if c.name == "promotion_caps"]
    assert [(v["problem"], v["issued_points"], v["awarded"]) for v in result.violations] == [
        ("issued points != the points of its awards", 7, 5)]


def test_postings_stay_append_only_after_the_new_account(app, client, make_partner,
                                                        operator_headers):
    """0019 widens the posting account check (on SQLite, in the stored schema): the
    journal's append-only guard is untouched."""
    publish(client, operator_headers)
    _, acme = make_partner("acme")
    earn(client, acme, enrol(client, acme, "c1"), "t-1", points=5)
    for sql in ("UPDATE posting SET points = points", "DELETE FROM posting"):
        with pytest.raises(DBAPIError, match="append-only"):
            execute(sql)
