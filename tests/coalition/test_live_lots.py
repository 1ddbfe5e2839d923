"""Costs that do not grow with a member's history: a burn reads the member's live lots
from the partial index ``ix_lot_live`` and stops once the points are covered, and the
balance read lists the first expiry dates without reading every live lot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql

from coalition.clock import add_months
from coalition.db import UnitOfWork, db, read
from coalition.ledger import journal, members
from coalition.ledger.expiring import DATES, by_date
from coalition.ledger.journal import _LIVE_LOTS
from coalition.ledger.members import _BALANCE_READ
from coalition.ledger.models import Lot, Member
from tests.factories.ledger import (
    book_burn,
    book_earn,
    make_member,
    make_partner,
    set_rules,
)

START = datetime(2026, 1, 5, 9, tzinfo=UTC)


def _live(member_id: int) -> list[tuple[int, int]]:
    lot = Lot.__table__.c
    with read() as session:
        return [tuple(row) for row in session.execute(
            select(lot.id, lot.remaining).where(lot.member_id == member_id)
            .order_by(lot.id))]


def test_a_burn_takes_earliest_expiry_first_across_pages_of_lots(app):
    """More lots than a first page: the burn reads on and takes exactly what it needs."""
    set_rules(policy="fixed", months=12)
    partner = make_partner("acme")
    member = make_member()
    # earned newest first, so id order and expiry order disagree
    for n in range(40):
        book_earn(member, partner, 1 + n % 3, START + timedelta(days=40 - n))
    before = _live(member)
    by_expiry = sorted(before, key=lambda lot: lot[0], reverse=True)  # oldest earn last id
    wanted = sum(r for _, r in by_expiry[:journal.FIRST_PAGE + 5]) - 1
    book_burn(member, partner, wanted, START + timedelta(days=60))
    after = dict(_live(member))
    left = wanted
    for lot_id, remaining in by_expiry:
        taken = min(remaining, left)
        left -= taken
        assert after[lot_id] == remaining - taken, lot_id
    assert left == 0


def test_a_burn_of_every_point_empties_every_lot(app):
    set_rules()
    partner = make_partner("acme")
    member = make_member()
    for n in range(journal.FIRST_PAGE):  # exactly one full page
        book_earn(member, partner, 2, START + timedelta(minutes=n))
    book_burn(member, partner, 2 * journal.FIRST_PAGE, START + timedelta(days=1))
    assert {remaining for _, remaining in _live(member)} == {0}


def test_the_balance_lists_the_first_dates_whole_past_a_page_of_moments(app):
    """Many moments on each date, more than a page: every listed date is complete."""
    set_rules(policy="fixed", months=1)
    partner = make_partner("acme")
    member = make_member()
    moments: list[tuple[datetime, int]] = []
    for n in range(150):  # 15 dates, ten distinct moments on each
        at = START + timedelta(days=n // 10, minutes=n)
        points = 1 + n % 7
        book_earn(member, partner, points, at)
        moments.append((add_months(at, 1), points))
    with read() as session:
        number = session.scalar(select(Member.member_number).where(Member.id == member))
    answer = members.balance(partner, {"member_number": number})
    assert answer["expiring"] == by_date(sorted(moments))
    assert len(answer["expiring"]) == 12
    assert sum(row["points"] for row in answer["expiring"]) == sum(
        p for at, p in moments if at.date() <= answer["expiring"][-1]["date"])


# --------------------------------------------------------------------------- the plans


def _history(member_id: int, partner_id: int, spent: int, live: int) -> None:
    """``spent`` emptied lots and ``live`` live ones for the member, written set-based
    (the plans are the point here, not the wallet)."""
    entry_id = book_earn(member_id, partner_id, 1, START)
    with UnitOfWork() as uow:
        uow.session.execute(text(
            "INSERT INTO lot (member_id, origin_partner_id, source, entry_id, points, "
            "remaining, state, earned_at, expires_at) "
            "SELECT :member, :partner, 'earn', :entry, 5, "
            "CASE WHEN n <= :spent THEN 0 ELSE 5 END, "
            "CASE WHEN n % 3 = 0 AND n <= :spent THEN 'expired' ELSE 'live' END, "
            ":start, :start + make_interval(hours => n) "
            "FROM generate_series(1, :total) AS n"),
            {"member": member_id, "partner": partner_id, "entry": entry_id, "spent": spent,
             "total": spent + live, "start": START})
        uow.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE lot"))


def _plan(statement: Any, params: dict[str, Any], generic: bool = False) -> dict[str, Any]:
    """The plan run for ``params``; with ``generic``, the plan of the statement prepared
    and planned without its parameters' values (the one psycopg's prepared statements
    come to keep)."""
    if not generic:
        compiled = statement.compile(dialect=db.engine.dialect)
        with db.engine.connect() as conn:
            row = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled),
                                       compiled.construct_params(params)).scalar_one()
        return (json.loads(row) if isinstance(row, str) else row)[0]["Plan"]
    compiled = statement.compile(dialect=postgresql.psycopg.dialect(paramstyle="numeric_dollar"))
    bound = compiled.construct_params(params)
    values = ", ".join(str(value) if isinstance(value, int) else f"'{value}'"
                       for value in (bound[name] for name in compiled.positiontup or ()))
    with db.engine.connect() as conn:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql(f"PREPARE generic AS {compiled}")
        try:
            row = conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE generic({values})").scalar_one()
        finally:
            conn.exec_driver_sql("DEALLOCATE generic")
            conn.rollback()
    return (json.loads(row) if isinstance(row, str) else row)[0]["Plan"]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def _lot_reads(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in _nodes(plan) if node.get("Relation Name") == "lot"]


@pytest.mark.postgres
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("exclude", [False, True])
def test_the_burn_plan_reads_a_page_of_live_lots_from_the_partial_index(app, exclude,
                                                                        generic):
    set_rules(policy="fixed", months=12)
    partner = make_partner("acme")
    member, other = make_member(), make_member()
    _history(member, partner, spent=30_000, live=20_000)
    _history(other, partner, spent=10, live=10)
    params = {"member_id": member, "page": journal.FIRST_PAGE}
    if exclude:
        params["exclude"] = 1
    plan = _plan(_LIVE_LOTS[exclude].statement, params, generic)
    reads = _lot_reads(plan)
    assert [node["Index Name"] for node in reads] == ["ix_lot_live"], plan
    assert not [node for node in _nodes(plan) if node["Node Type"] == "Sort"], plan
    # the scan stops once the page is read: the member's other 49 984 lots are not touched
    assert reads[0]["Actual Rows"] <= journal.FIRST_PAGE + 1, reads


@pytest.mark.postgres
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_the_balance_plan_reads_the_first_dates_lots_from_the_partial_index(app, generic):
    set_rules(policy="fixed", months=12)
    partner = make_partner("acme")
    member, other = make_member(), make_member()
    _history(member, partner, spent=30_000, live=20_000)
    _history(other, partner, spent=10, live=10)
    with read() as session:
        number = session.scalar(select(Member.member_number).where(Member.id == member))
    # the partner's balance read: the member, its wallet and its first dates, one statement
    plan = _plan(_BALANCE_READ[False].statement, {"number": number, "dates": DATES}, generic)
    reads = _lot_reads(plan)
    assert reads and {node["Index Name"] for node in reads} == {"ix_lot_live"}, plan
    assert not [node for node in _nodes(plan) if node["Node Type"] == "Sort"], plan
    # the live lots expire an hour apart: a probe a date and the 24 lots of each of the
    # first dates are read, not the member's 20 000 live lots
    lots = sum(node["Actual Rows"] * node["Actual Loops"] for node in reads)
    assert lots <= (DATES + 1) * 25, reads
