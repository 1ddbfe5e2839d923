"""Coalition-funded bonuses: the welcome bonus (pending until the member's first earn
from a spend releases it) and the birthday bonus.

* **bonus** of n (coalition-funded): coalition:funded −n, member:available +n; a lot of
  source ``bonus`` with no origin partner and the program's expiry. Note ``welcome`` or
  ``birthday``. A bonus is not the member's activity (``last_activity_at`` stays).
  The welcome bonus goes to member:pending instead, in a pending lot with no release
  date: it cannot be farmed (enrol, burn the bonus at the enrolling partner) because it
  becomes spendable only with the member's first earn from a spend, at any partner
  (:func:`coalition.ledger.earn_burn.earn` releases it).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import extract, or_, select, update
from sqlalchemy.orm import Session

from coalition import clock
from coalition.clock import add_months
from coalition.db import UnitOfWork, Units
from coalition.errors import BalanceLimit
from coalition.ledger import journal
from coalition.ledger.batch import Batch, NewLot, refuse
from coalition.ledger.journal import LedgerInconsistency
from coalition.ledger.models import Lot, Member
from coalition.program.service import Rules, rules_in_force

_m = Member.__table__.c


def release_welcome_bonus(session: Session, member_id: int, now: datetime) -> int:
    """Make the member's welcome bonus spendable (one ``release`` entry), in the unit of
    work of the member's earn from a spend; the bonus waits for it, so that a partner
    cannot enrol members to burn their bonus. Returns the points released."""
    lot = Lot.__table__.c
    # the wallet is locked before the lots are read; a waiting bonus is pending points, so
    # a member with none pending (most members, after their first spend) needs no lot query
    if journal.lock_wallet(session, member_id).pending == 0:
        return 0
    waiting = session.execute(
        select(lot.id, lot.remaining).where(
            lot.member_id == member_id, lot.source == "bonus", lot.state == "pending",
            lot.pending_until.is_(None))).all()
    return journal.release_lots(session, member_id, [tuple(row) for row in waiting], now,
                                note="welcome bonus: first earn from a spend")


def lot_expiry(rules: Rules, now: datetime) -> datetime | None:
    expiry = rules["expiry"]
    return add_months(now, expiry["months"]) if expiry["policy"] == "fixed" else None


def bonus_postings(member_id: int, points: int, account: str = "member:available"
                   ) -> list[tuple[str, int | None, int | None, int]]:
    """A bonus's postings: the coalition funds the member's points."""
    return [("coalition:funded", None, None, -points), (account, member_id, None, points)]


def book_bonus(session: Session, member_id: int, points: int, note: str, now: datetime,
               rules: Rules, occurred_at: datetime | None = None,
               pending: bool = False) -> int:
    """Credit coalition-funded points in the caller's transaction (the wallet change is
    the member's lock), spendable at once or ``pending`` until released. Returns the
    entry id."""
    account = "member:pending" if pending else "member:available"
    balance = journal.change_wallet(session, member_id, available=0 if pending else points,
                                    pending=points if pending else 0)
    if balance is None:
        raise BalanceLimit("The member's balance would exceed the largest allowed.")
    entry_id = journal.book_entry(
        session, kind="bonus", booked_at=now, occurred_at=occurred_at, points=points,
        member_id=member_id, balance=balance, note=note,
        postings=bonus_postings(member_id, points, account),
    )
    journal.create_lot(session, member_id=member_id, origin_partner_id=None, source="bonus",
                       entry_id=entry_id, points=points, earned_at=now,
                       expires_at=lot_expiry(rules, now), pending=pending)
    return entry_id


def book_welcome_bonus(session: Session, member_id: int, rules: Rules) -> int | None:
    """The welcome bonus, in the enrolment's own unit of work (none if the rules give 0):
    pending until the member's first earn from a spend (module doc)."""
    points = rules["bonuses"]["welcome"]
    if not points:
        return None
    return book_bonus(session, member_id, points, "welcome", clock.utcnow(), rules, pending=True)


def birthday_days(as_of: date) -> list[int]:
    """The birth days (of as_of's month) celebrated on ``as_of``: 29 February is
    celebrated on the 28th in years without one."""
    if as_of.month == 2 and as_of.day == 28 and not calendar.isleap(as_of.year):
        return [28, 29]
    return [as_of.day]


def birthday_conditions(as_of: date) -> list[Any]:
    year = as_of.year
    end_of_day = datetime.combine(as_of + timedelta(days=1), time(), UTC)
    return [
        _m.status == "active",
        _m.birth_date.is_not(None),
        extract("month", _m.birth_date) == as_of.month,
        extract("day", _m.birth_date).in_(birthday_days(as_of)),
        or_(_m.birthday_bonus_year.is_(None), _m.birthday_bonus_year < year),
        _m.created_at < end_of_day,  # a rerun for a past day skips later enrolments
    ]


def grant_birthdays(member_ids: list[int], as_of: date, points: int, *,
                    units: Units = UnitOfWork) -> list[int]:
    """The birthday bonus of ``as_of`` for a batch of members, in one unit of work under
    their wallet locks (:mod:`coalition.ledger.batch`); returns the members granted. A
    member whose balance cannot take the bonus is refused alone (its year is not moved)."""
    with units() as uow:
        session = uow.session
        ledger = Batch.lock(session, member_ids)
        # the guard that makes the bonus once a year: only one run can move the year on
        claimed = sorted(session.scalars(
            update(Member.__table__)
            .where(_m.id.in_(ledger.members), *birthday_conditions(as_of))
            .values(birthday_bonus_year=as_of.year)
            .returning(_m.id)))
        now = ledger.now
        rules = rules_in_force(session)
        occurred_at = min(now, datetime.combine(as_of, time(), UTC))
        lot = NewLot(source="bonus", points=points, earned_at=now,
                     expires_at=lot_expiry(rules, now))
        failures = {}
        for member_id in claimed:
            try:
                ledger.book(member_id, kind="bonus", points=points, available=points,
                            occurred_at=occurred_at, note="birthday", lot=lot,
                            postings=bonus_postings(member_id, points))
            except LedgerInconsistency:
                failures[member_id] = "The member's balance would exceed the largest allowed."
        refuse(failures)
        ledger.write()
        uow.commit()
        return claimed
