"""The ledger's use cases run in the unit of work they are handed: a job or a test gives
its own, and each use case is one transaction that commits once (or not at all)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from coalition.db import UnitOfWork, read
from coalition.errors import InsufficientPoints
from coalition.ledger import closure, earn_burn, members, reversals
from coalition.ledger.models import Member
from tests.conftest import snapshot
from tests.factories.ledger import make_partner, set_rules, wallet


class Counted(UnitOfWork):
    """A unit of work that counts the units opened and the commits made."""

    opened = 0
    commits = 0

    def __enter__(self) -> Counted:
        type(self).opened += 1
        return super().__enter__()

    def commit(self) -> None:
        type(self).commits += 1
        super().commit()


def id_of(member: dict) -> int:
    with read() as session:
        return session.scalar(select(Member.id)
                              .where(Member.member_number == member["member_number"]))


@pytest.fixture
def counted():
    Counted.opened = Counted.commits = 0
    return Counted


def test_each_use_case_commits_once_in_the_unit_of_work_it_is_given(app, counted):
    set_rules()
    acme = make_partner("acme")
    member, _ = members.enrol(acme, "c-1")
    who = {"member_number": member["member_number"]}

    earned = earn_burn.earn(acme, {"partner_txn_id": "e1", "points": 100, **who},
                            units=counted).body
    assert (counted.opened, counted.commits) == (1, 1)
    earn_burn.burn(acme, {"partner_txn_id": "b1", "points": 30, **who}, units=counted)
    assert (counted.opened, counted.commits) == (2, 2)
    reversals.reverse(acme, earned["id"], {"partner_txn_id": "r1", "points": 10},
                      units=counted)
    assert (counted.opened, counted.commits) == (3, 3)
    assert wallet(id_of(member)) == (60, 0, 0)
    closure.close(id_of(member), units=counted)
    assert (counted.opened, counted.commits) == (4, 4)
    assert wallet(id_of(member)) == (0, 0, 0)


def test_a_refusal_commits_nothing_in_the_unit_of_work_it_is_given(app, counted):
    set_rules()
    acme = make_partner("acme")
    member, _ = members.enrol(acme, "c-1")
    who = {"member_number": member["member_number"]}
    before = snapshot(app)
    with pytest.raises(InsufficientPoints):
        earn_burn.burn(acme, {"partner_txn_id": "b1", "points": 1, **who}, units=counted)
    assert counted.opened >= 1 and counted.commits == 0
    assert snapshot(app) == before


def test_a_reversal_of_a_kind_the_caller_may_not_reverse_is_refused(app):
    set_rules()
    acme = make_partner("acme")
    member, _ = members.enrol(acme, "c-1")
    who = {"member_number": member["member_number"]}
    earned = earn_burn.earn(acme, {"partner_txn_id": "e1", "points": 100, **who}).body
    before = snapshot(app)
    with pytest.raises(reversals.ReversalNotPermitted) as refused:
        reversals.reverse(acme, earned["id"], {"partner_txn_id": "r1", "points": 10},
                          may_reverse={"burn"})
    assert (refused.value.kind, refused.value.needs) == ("earn", "earn")
    assert snapshot(app) == before
