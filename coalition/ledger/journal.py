"""Booking primitives: the only code that writes wallets, lots, entries and postings.

Rules every caller keeps:

* The member's wallet row is changed (or locked) first, in the caller's transaction, before
  any of that member's lots are read; so all changes to one member's points are serialised
  by that row, and lots never need locks of their own.
* Each wallet change is one guarded ``UPDATE … WHERE <no balance goes negative> RETURNING``;
  no row back means the change is refused and nothing was written.
* An entry's postings sum to zero (checked here before anything is written).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, bindparam, case, func, insert, literal_column, select, update
from sqlalchemy.orm import Session

from coalition.ledger.models import Entry, Lot, LotMovement, Posting, Wallet
from coalition.schemas import MAX_POINTS

#: a balance never exceeds what a JSON number carries exactly
MAX_BALANCE = MAX_POINTS


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int
    held: int


@dataclass(frozen=True)
class Take:
    """Points taken from (negative) or returned to (positive) one lot."""

    lot_id: int
    origin_partner_id: int | None
    points: int


def change_wallet(
    session: Session,
    member_id: int,
    available: int = 0,
    pending: int = 0,
    held: int = 0,
    activity_at: datetime | None = None,
) -> Balance | None:
    """Apply the deltas in one guarded statement; ``None`` if a balance would go below
    zero or above :data:`MAX_BALANCE` (nothing changed then)."""
    w = Wallet.__table__.c
    values = {
        "available": w.available + available,
        "pending": w.pending + pending,
        "held": w.held + held,
        "version": w.version + 1,
    }
    if activity_at is not None:
        values["last_activity_at"] = activity_at
    conditions = [w.member_id == member_id]
    for column, delta in ((w.available, available), (w.pending, pending), (w.held, held)):
        if delta < 0:
            conditions.append(column >= -delta)
        elif delta > 0:
            conditions.append(column <= MAX_BALANCE - delta)
    row = session.execute(
        update(Wallet.__table__).where(and_(*conditions)).values(**values)
        .returning(w.available, w.pending, w.held)
    ).first()
    return Balance(*row) if row else None


def lock_wallet(session: Session, member_id: int) -> Balance:
    """Lock the member's wallet row for the rest of the transaction and read it."""
    w = Wallet.__table__.c
    row = session.execute(
        select(w.available, w.pending, w.held).where(w.member_id == member_id).with_for_update()
    ).one()
    return Balance(*row)


def take_from_live_lots(
    session: Session, member_id: int, points: int, exclude_lot: int | None = None
) -> list[Take]:
    """Take ``points`` from the member's live lots, earliest expiry first.

    The caller has already debited the wallet (so the points are there). Only the lots
    needed are read: a running total picks them in one query.
    """
    lot = Lot.__table__.c
    running = func.sum(lot.remaining).over(
        order_by=(lot.expires_at.asc().nulls_last(), lot.id)
    )
    conditions = [lot.member_id == member_id, lot.state == "live", lot.remaining > 0]
    if exclude_lot is not None:
        conditions.append(lot.id != exclude_lot)
    ordered = (
        select(lot.id, lot.origin_partner_id, lot.remaining, running.label("running"))
        .where(*conditions)
        .subquery()
    )
    rows = session.execute(
        select(ordered.c.id, ordered.c.origin_partner_id, ordered.c.remaining,
               ordered.c.running)
        .where(ordered.c.running - ordered.c.remaining < points)
        .order_by(ordered.c.running)
    ).all()
    takes: list[Take] = []
    left = points
    for lot_id, origin, remaining, _ in rows:
        taken = min(remaining, left)
        takes.append(Take(lot_id, origin, -taken))
        left -= taken
    if left:
        raise LedgerInconsistency(f"member {member_id}: lots short of the wallet by {left}")
    apply_takes(session, takes)
    return takes


def apply_takes(session: Session, takes: Sequence[Take]) -> None:
    """Change each lot's remaining points by its take (negative: taken)."""
    if not takes:
        return
    lot = Lot.__table__
    # Points returned to a lot that expired meanwhile make it live again with its original
    # expiry, so the next expiry run takes them as breakage like any other late points.
    session.execute(
        update(lot)
        .where(lot.c.id == bindparam("lot"))
        .values(
            remaining=lot.c.remaining + bindparam("delta"),
            state=case((and_(bindparam("delta") > 0, lot.c.state == "expired"), "live"),
                       else_=lot.c.state),
        ),
        [{"lot": t.lot_id, "delta": t.points} for t in takes],
    )


def book_entry(
    session: Session,
    *,
    kind: str,
    booked_at: datetime,
    points: int,
    postings: Iterable[tuple[str, int | None, int | None, int]],
    occurred_at: datetime | None = None,
    partner_id: int | None = None,
    member_id: int | None = None,
    partner_txn_id: str | None = None,
    request_hash: str | None = None,
    reference_id: int | None = None,
    spend_amount: Decimal | None = None,
    spend_currency: str | None = None,
    balance: Balance | None = None,
    note: str | None = None,
    takes: Sequence[Take] = (),
) -> int:
    """Write one entry with its postings ``(account, member_id, partner_id, points)`` and
    the lot movements of ``takes``; returns the entry id."""
    postings = [p for p in postings if p[3] != 0]
    if len(postings) < 2 or sum(p[3] for p in postings) != 0:
        raise LedgerInconsistency(
            f"{kind}: an entry needs two or more postings summing to zero: {postings}")
    entry_id = session.execute(
        insert(Entry.__table__).values(
            kind=kind, booked_at=booked_at, occurred_at=occurred_at or booked_at,
            partner_id=partner_id, member_id=member_id, partner_txn_id=partner_txn_id,
            request_hash=request_hash, points=points, reference_id=reference_id,
            spend_amount=spend_amount, spend_currency=spend_currency,
            available_after=balance.available if balance else None,
            pending_after=balance.pending if balance else None,
            held_after=balance.held if balance else None,
            note=note,
        ).returning(literal_column("id"))
    ).scalar_one()
    if postings:
        session.execute(insert(Posting.__table__), [
            {"entry_id": entry_id, "account": account, "member_id": member,
             "partner_id": partner, "points": amount}
            for account, member, partner, amount in postings
        ])
    if takes:
        session.execute(insert(LotMovement.__table__), [
            {"lot_id": t.lot_id, "entry_id": entry_id, "points": t.points,
             "origin_partner_id": t.origin_partner_id, "entry_kind": kind,
             "entry_partner_id": partner_id, "entry_booked_at": booked_at} for t in takes
        ])
    return entry_id


def create_lot(
    session: Session,
    *,
    member_id: int,
    origin_partner_id: int | None,
    source: str,
    entry_id: int,
    points: int,
    earned_at: datetime,
    expires_at: datetime | None,
    pending_until: datetime | None = None,
) -> int:
    return session.execute(
        insert(Lot.__table__).values(
            member_id=member_id, origin_partner_id=origin_partner_id, source=source,
            entry_id=entry_id, points=points, remaining=points,
            state="pending" if pending_until else "live",
            earned_at=earned_at, expires_at=expires_at, pending_until=pending_until,
        ).returning(literal_column("id"))
    ).scalar_one()


class LedgerInconsistency(RuntimeError):
    """The working state disagrees with itself; the transaction is abandoned."""
