"""Booking points for tests with the journal primitives, the way the ledger services do.

Each helper is one unit of work that changes the member's wallet first, then its lots,
then writes the entry, following the conventions of :mod:`coalition.ledger.journal`.
``at`` stands in for the server clock (``booked_at``), so a test can build a history in
the past and run the expiry job over it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, literal_column, select, text

from coalition.clock import add_months
from coalition.db import UnitOfWork, db
from coalition.ledger import journal
from coalition.ledger.models import Entry, Hold, Lot, LotMovement, Member, Wallet
from coalition.program.schemas import ProgramRulesSchema
from coalition.program.service import load_rules, publish_rules
from tests.factories.partners import new_partner

_numbers = itertools.count(100000000000)
_txns = itertools.count(1)


def txn() -> str:
    return f"t-{next(_txns)}"


#: the partners' first rate card: before any history the tests build
PRICED_FROM = datetime(2000, 1, 1, tzinfo=UTC)


def make_partner(code: str) -> int:
    """A partner priced since :data:`PRICED_FROM`: its id."""
    from partners.service import partner_id

    new_partner(code, valid_from=PRICED_FROM)
    return partner_id(code)


def make_member(created_at: datetime | None = None) -> int:
    with UnitOfWork() as uow:
        values: dict[str, Any] = {"member_number": str(next(_numbers)), "status": "active",
                                  "tier": "member"}
        if created_at is not None:
            values["created_at"] = created_at
        member_id = uow.session.execute(
            insert(Member.__table__).values(**values).returning(literal_column("id"))
        ).scalar_one()
        uow.session.execute(insert(Wallet.__table__).values(
            member_id=member_id, available=0, pending=0, held=0, version=0))
        uow.commit()
        return member_id


def set_rules(*, pending_days: int = 0, policy: str = "none", months: int | None = None) -> None:
    values = ProgramRulesSchema().load({
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}],
        "pending_days": pending_days,
        "expiry": {"policy": policy, "months": months},
    })
    publish_rules(values, "tests")


def book_earn(member_id: int, partner_id: int, points: int, at: datetime) -> int:
    """An earn at ``partner_id``: pending or available by the program's pending days,
    expiring ``months`` after ``at`` under the fixed policy. Returns the entry id."""
    with UnitOfWork() as uow:
        s = uow.session
        rules = load_rules(s)
        pending_until = at + timedelta(days=rules["pending_days"]) if rules["pending_days"] \
            else None
        expiry = rules["expiry"]
        expires_at = add_months(at, expiry["months"]) if expiry["policy"] == "fixed" else None
        if pending_until:
            balance = journal.change_wallet(s, member_id, pending=points, activity_at=at)
            account = "member:pending"
        else:
            balance = journal.change_wallet(s, member_id, available=points, activity_at=at)
            account = "member:available"
        assert balance is not None
        entry_id = journal.book_entry(
            s, kind="earn", booked_at=at, points=points, partner_id=partner_id,
            member_id=member_id, partner_txn_id=txn(), balance=balance,
            postings=[("partner:issued", None, partner_id, -points),
                      (account, member_id, None, points)])
        journal.create_lot(s, member_id=member_id, origin_partner_id=partner_id,
                           source="earn", entry_id=entry_id, points=points, earned_at=at,
                           expires_at=expires_at, pending_until=pending_until)
        uow.commit()
        return entry_id


def book_bonus(member_id: int, points: int, at: datetime) -> int:
    """Coalition-funded points (not member activity)."""
    with UnitOfWork() as uow:
        s = uow.session
        expiry = load_rules(s)["expiry"]
        expires_at = add_months(at, expiry["months"]) if expiry["policy"] == "fixed" else None
        balance = journal.change_wallet(s, member_id, available=points)
        assert balance is not None
        entry_id = journal.book_entry(
            s, kind="bonus", booked_at=at, points=points, member_id=member_id,
            balance=balance,
            postings=[("coalition:funded", None, None, -points),
                      ("member:available", member_id, None, points)])
        journal.create_lot(s, member_id=member_id, origin_partner_id=None, source="bonus",
                           entry_id=entry_id, points=points, earned_at=at,
                           expires_at=expires_at)
        uow.commit()
        return entry_id


def book_burn(member_id: int, partner_id: int, points: int, at: datetime) -> int:
    with UnitOfWork() as uow:
        s = uow.session
        balance = journal.change_wallet(s, member_id, available=-points, activity_at=at)
        assert balance is not None, "insufficient points"
        takes = journal.take_from_live_lots(s, member_id, points)
        entry_id = journal.book_entry(
            s, kind="burn", booked_at=at, points=points, partner_id=partner_id,
            member_id=member_id, partner_txn_id=txn(), balance=balance, takes=takes,
            postings=[("member:available", member_id, None, -points),
                      ("partner:redeemed", None, partner_id, points)])
        uow.commit()
        return entry_id


def book_hold(member_id: int, partner_id: int, points: int, at: datetime,
              expires_at: datetime) -> tuple[int, int]:
    """Returns (hold id, hold entry id)."""
    with UnitOfWork() as uow:
        s = uow.session
        balance = journal.change_wallet(s, member_id, available=-points, held=points,
                                        activity_at=at)
        assert balance is not None, "insufficient points"
        takes = journal.take_from_live_lots(s, member_id, points)
        entry_id = journal.book_entry(
            s, kind="hold", booked_at=at, points=points, partner_id=partner_id,
            member_id=member_id, partner_txn_id=txn(), balance=balance, takes=takes,
            postings=[("member:available", member_id, None, -points),
                      ("member:held", member_id, None, points)])
        hold_id = s.execute(insert(Hold.__table__).values(
            entry_id=entry_id, member_id=member_id, partner_id=partner_id, points=points,
            captured=0, status="open", expires_at=expires_at,
        ).returning(literal_column("id"))).scalar_one()
        uow.commit()
        return hold_id, entry_id


def book_capture(hold_id: int, captured: int, at: datetime) -> int:
    """Capture ``captured`` of an open hold; the rest returns to the hold's lots."""
    with UnitOfWork() as uow:
        s = uow.session
        hold = s.get_one(Hold, hold_id)
        journal.lock_wallet(s, hold.member_id)
        s.refresh(hold)
        assert hold.status == "open"
        back = hold.points - captured
        balance = journal.change_wallet(s, hold.member_id, held=-hold.points, available=back,
                                        activity_at=at)
        assert balance is not None
        reserved = s.execute(
            select(LotMovement.lot_id, Lot.origin_partner_id, -LotMovement.points)
            .join(Lot, Lot.id == LotMovement.lot_id)
            .where(LotMovement.entry_id == hold.entry_id)
            .order_by(Lot.expires_at.desc().nulls_first(), Lot.id.desc())).all()
        takes, left = [], back
        for lot_id, origin, points in reserved:
            if left == 0:
                break
            takes.append(journal.Take(lot_id, origin, min(points, left)))
            left -= min(points, left)
        journal.apply_takes(s, takes)
        entry_id = journal.book_entry(
            s, kind="hold_capture", booked_at=at, points=captured, partner_id=hold.partner_id,
            member_id=hold.member_id, partner_txn_id=txn(), reference_id=hold.entry_id,
            balance=balance, takes=takes,
            postings=[("member:held", hold.member_id, None, -hold.points),
                      ("partner:redeemed", None, hold.partner_id, captured),
                      ("member:available", hold.member_id, None, back)])
        hold.status, hold.captured, hold.closed_by_entry_id = "captured", captured, entry_id
        uow.commit()
        return entry_id


# --------------------------------------------------------------------------- reading


def wallet(member_id: int) -> tuple[int, int, int]:
    with UnitOfWork(readonly=True) as uow:
        w = uow.session.get_one(Wallet, member_id)
        return w.available, w.pending, w.held


def lots(member_id: int) -> list[tuple[int, int, str]]:
    """(points, remaining, state) of the member's lots, in order of creation."""
    with UnitOfWork(readonly=True) as uow:
        return [tuple(r) for r in uow.session.execute(
            select(Lot.points, Lot.remaining, Lot.state).where(Lot.member_id == member_id)
            .order_by(Lot.id))]


def entries(kind: str, member_id: int | None = None) -> list[Entry]:
    with UnitOfWork(readonly=True) as uow:
        query = select(Entry).where(Entry.kind == kind)
        if member_id is not None:
            query = query.where(Entry.member_id == member_id)
        return list(uow.session.scalars(query.order_by(Entry.id)))


def postings(entry_id: int) -> set[tuple[str, int | None, int | None, int]]:
    from coalition.ledger.models import Posting

    with UnitOfWork(readonly=True) as uow:
        return {tuple(r) for r in uow.session.execute(
            select(Posting.account, Posting.member_id, Posting.partner_id, Posting.points)
            .where(Posting.entry_id == entry_id))}


def movements(entry_id: int) -> list[tuple[int, int]]:
    """(lot id, points) of the entry's lot movements."""
    with UnitOfWork(readonly=True) as uow:
        return [tuple(r) for r in uow.session.execute(
            select(LotMovement.lot_id, LotMovement.points)
            .where(LotMovement.entry_id == entry_id).order_by(LotMovement.lot_id))]


# --------------------------------------------------------------------------- tampering


def execute(sql: str, **params: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(sql), params)


@contextmanager
def journal_unlocked(table: str) -> Iterator[None]:
    """Lift the append-only guard of one journal table (tests of the check only)."""
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"))
            saved = []
        else:
            saved = conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = :table"), {"table": table}).all()
            for name, _ in saved:
                conn.execute(text(f'DROP TRIGGER "{name}"'))
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only"))
            for _, sql in saved:
                conn.execute(text(sql))


@contextmanager
def check_constraint_lifted(table: str, name: str, definition: str) -> Iterator[None]:
    """Run the body's writes without one CHECK constraint (tests of the check only).

    SQLite cannot drop a constraint, so there the body must write through
    :func:`execute_unchecked`; PostgreSQL drops it and adds it back afterwards (the body
    must have put the rows right again by then).
    """
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT {name} "
                                  f"CHECK ({definition})"))


def execute_unchecked(sql: str, **params: Any) -> None:
    """Like :func:`execute`, with SQLite's CHECK constraints ignored for this statement."""
    with db.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        try:
            conn.execute(text(sql), params)
            conn.commit()
        finally:
            if sqlite:
                conn.rollback()
                conn.exec_driver_sql("PRAGMA ignore_check_constraints = OFF")
                conn.commit()
