"""Hold voiding: an open hold's reserved points go back to the member, with the takes
that reserved them; used by hold cancellation, the expiry job, merges and closures.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition.ledger import journal
from coalition.ledger.journal import LedgerInconsistency, Take
from coalition.ledger.models import Hold, Lot, LotMovement, Wallet


def hold_takes(session: Session, hold: Hold) -> list[Take]:
    """The points the hold still reserves, per lot, latest expiry first (so a partial
    capture keeps the earliest-expiring points and returns the rest)."""
    mv, lot = LotMovement.__table__.c, Lot.__table__.c
    rows = session.execute(
        select(mv.lot_id, lot.origin_partner_id, -mv.points)
        .join(Lot.__table__, lot.id == mv.lot_id)
        .where(mv.entry_id == hold.entry_id)
        .order_by(lot.expires_at.desc().nulls_first(), lot.id.desc())
    ).all()
    return [Take(lot_id, origin, points) for lot_id, origin, points in rows]


def returning(reserved: list[Take], points: int) -> list[Take]:
    """Positive takes returning ``points`` to the first lots of ``reserved``."""
    takes, left = [], points
    for take in reserved:
        if left == 0:
            break
        back = min(take.points, left)
        takes.append(Take(take.lot_id, take.origin_partner_id, back))
        left -= back
    return takes


def void_hold(session: Session, hold: Hold, now: datetime, *, status: str,
              partner_txn_id: str | None = None, digest: str | None = None,
              note: str | None = None, occurred_at: datetime | None = None) -> int:
    """Return a hold's points to available (its lots get them back, exactly what the hold
    took from each). The caller has locked the member's wallet and checked the hold is
    open; ``status`` is what the hold becomes (``voided``, ``expired``)."""
    takes = returning(hold_takes(session, hold), hold.points)
    if sum(t.points for t in takes) != hold.points:
        raise LedgerInconsistency(f"hold {hold.id}: its lots reserve "
                                  f"{sum(t.points for t in takes)} of {hold.points} points")
    balance = journal.change_wallet(session, hold.member_id, held=-hold.points,
                                    available=hold.points, activity_at=None)
    if balance is None:
        raise LedgerInconsistency(f"hold {hold.id}: member {hold.member_id} holds less "
                                  f"than {hold.points} points")
    journal.apply_takes(session, takes)
    entry_id = journal.book_entry(
        session, kind="hold_void", booked_at=now, occurred_at=occurred_at, points=hold.points,
        partner_id=hold.partner_id, member_id=hold.member_id, partner_txn_id=partner_txn_id,
        request_hash=digest, reference_id=hold.entry_id, balance=balance, takes=takes,
        note=note,
        postings=[("member:held", hold.member_id, None, -hold.points),
                  ("member:available", hold.member_id, None, hold.points)],
    )
    hold.status, hold.closed_by_entry_id = status, entry_id
    session.flush()
    return entry_id


def void_open_holds(session: Session, member_id: int, now: datetime,
                    note: str) -> tuple[int, int, int]:
    """Void every open hold of the member (under its wallet lock), oldest first; answers
    how many, and the available and pending points left, which a merge or a closure moves
    next. Points still held without an open hold are an inconsistency."""
    holds = session.scalars(select(Hold).where(
        Hold.member_id == member_id, Hold.status == "open").order_by(Hold.id)).all()
    for hold in holds:
        void_hold(session, hold, now, status="voided", note=note)
    w = Wallet.__table__.c
    available, pending, held = session.execute(
        select(w.available, w.pending, w.held).where(w.member_id == member_id)).one()
    if held:
        raise LedgerInconsistency(f"member {member_id}: {held} held points "
                                  f"without an open hold")
    return len(holds), available, pending
