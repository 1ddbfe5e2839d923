"""The daily job (``coalition daily``): birthday bonuses once a year, and tier downgrades
from the qualifying points of the rolling 12 months."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from coalition.clock import add_months
from coalition.db import UnitOfWork, utcnow
from coalition.ledger import journal, merge
from coalition.ledger.daily import DailySummary, daily
from coalition.ledger.models import Lot, Member
from coalition.program.schemas import ProgramRulesSchema
from coalition.program.service import publish_rules
from tests.conftest import snapshot
from tests.factories.ledger import (
    book_earn,
    execute,
    make_member,
    make_partner,
    txn,
    wallet,
)
from tests.factories.member_records import assert_clean, entries_of, lots_of, postings_of

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
TIERS = [{"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
         {"code": "silver", "name": "Silver", "threshold": 100, "multiplier": "1"},
         {"code": "gold", "name": "Gold", "threshold": 500, "multiplier": "2"}]


def rules(birthday: int = 25, **changes: Any) -> None:
    values = {"tiers": TIERS, "expiry": {"policy": "fixed", "months": 12},
              "bonuses": {"welcome": 0, "birthday": birthday}, **changes}
    publish_rules(ProgramRulesSchema().load(values), "tests")


def member(born: str | None = None, tier: str = "blue", status: str = "active") -> int:
    member_id = make_member(created_at=LONG_AGO)
    execute("UPDATE member SET birth_date = :b, tier = :t, status = :s WHERE id = :m",
            b=date.fromisoformat(born) if born else None, t=tier, s=status, m=member_id)
    return member_id


def row(member_id: int) -> Member:
    with UnitOfWork(readonly=True) as uow:
        return uow.session.get_one(Member, member_id)


def granted(summary: DailySummary) -> tuple[int, int]:
    return summary.birthday_members, summary.birthday_points


# --------------------------------------------------------------------------- birthdays


def test_birthday_bonus_once_a_year(app):
    rules(birthday=25)
    ann = member("1990-03-15")
    ben = member("1985-03-16")
    closed = member("1990-03-15", status="closed")
    nobody = member(None)

    summary = daily(date(2025, 3, 15))
    assert granted(summary) == (1, 25) and summary.failures == []
    assert wallet(ann) == (25, 0, 0)
    (entry,) = entries_of(ann, "bonus")
    assert (entry.note, entry.points, entry.partner_id) == ("birthday", 25, None)
    assert entry.occurred_at == datetime(2025, 3, 15, tzinfo=UTC)
    assert abs(entry.booked_at - utcnow()) < timedelta(minutes=1)
    assert postings_of(entry.id) == sorted([("coalition:funded", None, None, -25),
                                           ("member:available", ann, None, 25)])
    (lot,) = lots_of(ann)
    assert (lot["source"], lot["origin_partner_id"], lot["points"], lot["state"]) == \
        ("bonus", None, 25, "live")
    assert lot["expires_at"] == add_months(entry.booked_at, 12)
    assert row(ann).birthday_bonus_year == 2025

    before = snapshot(app)
    assert granted(daily(date(2025, 3, 15))) == (0, 0)  # the same day again
    assert snapshot(app) == before

    assert granted(daily(date(2025, 3, 16))) == (1, 25)  # ben's birthday, not ann's again
    assert wallet(ann) == (25, 0, 0) and wallet(ben) == (25, 0, 0)
    before = snapshot(app)
    assert granted(daily(date(2024, 3, 15))) == (0, 0)  # a rerun for an earlier year
    assert snapshot(app) == before

    assert granted(daily(date(2026, 3, 15))) == (1, 25)  # the next year: again
    assert wallet(ann) == (50, 0, 0)
    assert row(ann).birthday_bonus_year == 2026
    assert wallet(closed) == (0, 0, 0) and wallet(nobody) == (0, 0, 0)
    assert_clean()


def test_29_february_is_celebrated_on_28_february_in_other_years(app):
    rules(birthday=10)
    leapling = member("2000-02-29")
    other_leapling = member("1996-02-29")
    twenty_eighth = member("1999-02-28")

    assert granted(daily(date(2025, 2, 28))) == (3, 30)  # 2025 has no 29 February
    assert wallet(leapling) == (10, 0, 0) and wallet(twenty_eighth) == (10, 0, 0)
    assert granted(daily(date(2025, 3, 1))) == (0, 0)

    # in a leap year the 28th is only the 28th, and the 29th is the leaplings' day
    assert granted(daily(date(2028, 2, 28))) == (1, 10)
    assert wallet(leapling) == (10, 0, 0)
    assert granted(daily(date(2028, 2, 29))) == (2, 20)
    assert granted(daily(date(2028, 2, 29))) == (0, 0)
    assert wallet(leapling) == (20, 0, 0) and wallet(other_leapling) == (20, 0, 0)
    assert wallet(twenty_eighth) == (20, 0, 0)
    assert_clean()


def test_no_birthday_bonus_when_the_program_gives_none(app):
    rules(birthday=0)
    ann = member("1990-03-15")
    before = snapshot(app)
    assert granted(daily(date(2025, 3, 15))) == (0, 0)
    assert snapshot(app) == before
    assert row(ann).birthday_bonus_year is None


def test_a_rerun_for_a_past_day_skips_members_enrolled_later(app):
    rules(birthday=25)
    ann = member("1990-03-15")
    execute("UPDATE member SET created_at = :c WHERE id = :m",
            c=datetime(2025, 3, 16, 9, tzinfo=UTC), m=ann)
    assert granted(daily(date(2025, 3, 15))) == (0, 0)
    execute("UPDATE member SET created_at = :c WHERE id = :m",
            c=datetime(2025, 3, 15, 23, 59, tzinfo=UTC), m=ann)
    assert granted(daily(date(2025, 3, 15))) == (1, 25)


def test_two_runs_at_once_grant_one_bonus(app):
    rules(birthday=25)
    members = [member("1990-03-15") for _ in range(5)]
    results, errors = [], []
    barrier = threading.Barrier(3)

    def run() -> None:
        with app.app_context():
            barrier.wait()
            try:
                results.append(daily(date(2025, 3, 15)))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.birthday_members for r in results) == 5
    assert all(wallet(m) == (25, 0, 0) for m in members)
    assert_clean()


# --------------------------------------------------------------------------- tiers


def book_earn_reversal(member_id: int, partner_id: int, earn_id: int, points: int,
                       at: datetime) -> None:
    with UnitOfWork() as uow:
        s = uow.session
        balance = journal.change_wallet(s, member_id, available=-points, activity_at=at)
        assert balance is not None
        lot = s.scalars(select(Lot).where(Lot.entry_id == earn_id)).one()
        takes = [journal.Take(lot.id, partner_id, -points)]
        journal.apply_takes(s, takes)
        journal.book_entry(
            s, kind="earn_reversal", booked_at=at, points=points, partner_id=partner_id,
            member_id=member_id, partner_txn_id=txn(), reference_id=earn_id,
            balance=balance, takes=takes,
            postings=[("partner:issued", None, partner_id, points),
                      ("member:available", member_id, None, -points)])
        uow.commit()


def test_tier_downgrade_from_the_rolling_12_months(app):
    rules(birthday=0, expiry={"policy": "none", "months": None})
    acme = make_partner("acme")
    ann = member(tier="gold")
    book_earn(ann, acme, 400, datetime(2024, 1, 10, 12, tzinfo=UTC))
    book_earn(ann, acme, 150, datetime(2024, 6, 10, 12, tzinfo=UTC))
    keeps = member(tier="gold")  # 600 within any window below
    book_earn(keeps, acme, 600, datetime(2024, 12, 1, tzinfo=UTC))
    low = member(tier="blue")  # qualifies for gold, but upgrades are the earn's
    book_earn(low, acme, 900, datetime(2024, 12, 1, tzinfo=UTC))
    gone = member(tier="gold", status="closed")
    renamed = member(tier="platinum")  # a tier the program no longer has
    book_earn(renamed, acme, 120, datetime(2024, 12, 1, tzinfo=UTC))

    summary = daily(date(2024, 12, 1))  # 550 over the last 12 months: still gold
    assert (summary.tier_downgrades, summary.downgrades) == (1, {"platinum>silver": 1})
    assert row(ann).tier == "gold"

    summary = daily(date(2025, 1, 11))  # the 400 of 10 January 2024 left the window
    assert (summary.tier_downgrades, summary.downgrades) == (1, {"gold>silver": 1})
    assert summary.tier_members_checked == 3  # active members above blue
    assert [row(m).tier for m in (ann, keeps, low, gone, renamed)] == \
        ["silver", "gold", "blue", "gold", "silver"]
    before = snapshot(app)
    assert daily(date(2025, 1, 11)).tier_downgrades == 0  # idempotent
    assert snapshot(app) == before

    summary = daily(date(2025, 6, 11))  # nothing left in the window
    assert summary.downgrades == {"silver>blue": 1}
    assert row(ann).tier == "blue"
    assert_clean()


def test_earn_reversals_do_not_qualify(app):
    rules(birthday=0)
    acme = make_partner("acme")
    ann = member(tier="silver")
    earn_id = book_earn(ann, acme, 150, datetime(2024, 6, 10, tzinfo=UTC))
    book_earn_reversal(ann, acme, earn_id, 60, datetime(2024, 7, 1, tzinfo=UTC))
    assert daily(date(2024, 7, 2)).downgrades == {"silver>blue": 1}  # 150 − 60 = 90
    assert row(ann).tier == "blue"
    assert_clean()


def test_a_merged_members_points_qualify_for_the_survivor(app):
    rules(birthday=0)
    acme = make_partner("acme")
    survivor = member(tier="gold")
    absorbed = member(tier="gold")
    book_earn(absorbed, acme, 450, datetime(2024, 6, 1, tzinfo=UTC))
    book_earn(survivor, acme, 60, datetime(2024, 6, 1, tzinfo=UTC))
    merge.merge(row(absorbed).member_number, row(survivor).member_number, "test")
    assert daily(date(2024, 7, 1)).tier_downgrades == 0  # 450 + 60
    assert row(survivor).tier == "gold"
    assert daily(date(2025, 6, 2)).downgrades == {"gold>blue": 1}
    assert_clean()


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=list(args))


def test_daily_cli(cli):
    rules(birthday=25)
    ann = member("1990-03-15", tier="silver")
    result = cli("daily", "--as-of", "2025-03-15", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["as_of"] == "2025-03-15"
    assert (data["birthday_members"], data["birthday_points"]) == (1, 25)
    assert (data["tier_downgrades"], data["downgrades"]) == (1, {"silver>blue": 1})
    assert row(ann).tier == "blue"

    text = cli("daily", "--as-of", "2025-03-15")
    assert text.exit_code == 0 and "birthday bonuses: 0 members" in text.output
    assert "vouchers expired unused: 0 refunded (0 points), 0 forfeited" in text.output

    tomorrow = (utcnow().date() + timedelta(days=1)).isoformat()
    future = cli("daily", "--as-of", tomorrow)
    assert future.exit_code == 2 and "future" in future.output
    bad = cli("daily", "--as-of", "15/03/2025")
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
    assert cli("daily").exit_code == 0  # today
