"""Merges in the analytics: counted in the month they happened, and a member merged later
is itself in the tiers of the months before.

    2001-01-05  ann and bob enrol at grocer; ann earns 600 (gold from 500), bob 100
    2001-02-10  ann is merged into bob: bob's qualifying points are 700 from then
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update

from coalition.db import UnitOfWork, read
from coalition.ledger import merge
from coalition.ledger.check import check_ledger
from coalition.ledger.models import Member
from tests.factories.partner_api import earn, enrol


def publish(client, headers) -> None:
    response = client.put("/v1/admin/program", headers=headers, json={
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"},
                  {"code": "gold", "name": "Gold", "threshold": 500, "multiplier": "1"}]})
    assert response.status_code == 200, response.get_json()


def book(client, clock, make_partner, operator_headers) -> tuple[str, str]:
    _, grocer = make_partner("grocer", valid_from=datetime(2000, 12, 1, tzinfo=UTC))
    clock.set(datetime(2001, 1, 5, 12, tzinfo=UTC))
    publish(client, operator_headers)
    ann, bob = enrol(client, grocer, "ann"), enrol(client, grocer, "bob")
    earn(client, grocer, ann, "g-ann", points=600)
    earn(client, grocer, bob, "g-bob", points=100)
    clock.set(datetime(2001, 2, 10, 12, tzinfo=UTC))
    merge.merge(ann, bob, operator="ops")
    clock.set(datetime(2001, 3, 2, tzinfo=UTC))
    return ann, bob


def tiers(doc) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for row in doc["tiers"]:
        found.setdefault(row["month"], {})[row["tier"]] = row["members"]
    return found


def test_a_merge_counts_in_its_month_and_the_member_is_itself_before(
        app, client, clock, make_partner, operator_headers):
    ann, _ = book(client, clock, make_partner, operator_headers)
    assert check_ledger().ok
    with read() as session:
        assert session.scalar(select(Member.merged_at).where(Member.member_number == ann)
                              ) == datetime(2001, 2, 10, 12, tzinfo=UTC)

    doc = client.get("/v1/analytics?from=2001-01&to=2001-02",
                     headers=operator_headers).get_json()
    assert [(t["month"], t["merged"]) for t in doc["totals"]] == [("2001-01", 0),
                                                                    ("2001-02", 1)]
    assert [(r["month"], r["partner"], r["merged"]) for r in doc["months"]
            if r["merged"]] == [("2001-02", "grocer", 1)]
    # January: ann (600) gold, bob (100) member; February: bob alone, with ann's 600
    assert tiers(doc) == {"2001-01": {"member": 1, "gold": 1},
                          "2001-02": {"member": 0, "gold": 1}}


def test_a_merge_from_before_its_moment_was_kept_counts_in_no_month(
        app, client, clock, make_partner, operator_headers):
    ann, _ = book(client, clock, make_partner, operator_headers)
    with UnitOfWork() as uow:  # as the migration leaves the merges made before it
        uow.session.execute(update(Member).where(Member.member_number == ann)
                            .values(merged_at=None))
        uow.commit()
    doc = client.get("/v1/analytics?from=2001-01&to=2001-02",
                     headers=operator_headers).get_json()
    assert [t["merged"] for t in doc["totals"]] == [0, 0]
    # merged at an unknown moment: taken as merged all along, its points bob's
    assert tiers(doc) == {"2001-01": {"member": 0, "gold": 1},
                          "2001-02": {"member": 0, "gold": 1}}
