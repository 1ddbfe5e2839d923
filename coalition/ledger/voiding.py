"""Hold voiding: an open hold's reserved points go back to the member, with the takes
that reserved them; used by hold cancellation, the expiry job, merges and closures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition.ledger import journal
from coalition.ledger.journal import LedgerInconsistency, Take
from coalition.ledger.models import Hold, Lot, LotMovement, Wallet

_mv, _lot = LotMovement.__table__.c, Lot.__table__.c
#: the order a hold's points go back to its lots: latest expiry first (so a partial
#: capture keeps the earliest-expiring points and returns the rest)
_RETURN_ORDER = (_lot.expires_at.desc().nulls_first(), _lot.id.desc())


def hold_takes(session: Session, hold: Hold) -> list[Take]:
    """The points the hold still reserves, per lot, in the order they go back."""
    rows = session.execute(
        select(_mv.lot_id, _lot.origin_partner_id, -_mv.points)
        .join(Lot.__table__, _lot.id == _mv.lot_id)
        .where(_mv.entry_id == hold.entry_id)
        .order_by(*_RETURN_ORDER)
    ).all()
    return [Take(lot_id, origin, points) for lot_id, origin, points in rows]


def holds_takes(session: Session, hold_entry_ids: Sequence[int]) -> dict[int, list[Take]]:
    """:func:`hold_takes` of many holds in one query, by hold entry id."""
    found: dict[int, list[Take]] = {entry_id: [] for entry_id in hold_entry_ids}
    if not found:
        return found
    rows = session.execute(
        select(_mv.entry_id, _mv.lot_id, _lot.origin_partner_id, -_mv.points)
        .join(Lot.__table__, _lot.id == _mv.lot_id)
        .where(_mv.entry_id.in_(list(found)))
        .order_by(_mv.entry_id, *_RETURN_ORDER)
    ).all()
    for entry_id, lot_id, origin, points in rows:
        found[entry_id].append(Take(lot_id, origin, points))
    return found


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


def void_takes(hold_id: int, reserved: list[Take], points: int) -> list[Take]:
    """The takes that give a void's ``points`` back to the lots the hold reserved them in;
    refused when those lots reserve fewer."""
    takes = returning(reserved, points)
    if sum(t.points for t in takes) != points:
        raise LedgerInconsistency(f"hold {hold_id}: its lots reserve "
                                  f"{sum(t.points for t in takes)} of {points} points")
    return takes


def void_hold(session: Session, hold: Hold, now: datetime, *, status: str,
              partner_txn_id: str | None = None, digest: str | None = None,
              note: str | None = None, occurred_at: datetime | None = None) -> int:
    """Return a hold's points to available (its lots get them back, exactly what the hold
    took from each). The caller has locked the member's wallet and checked the hold is
    open; ``status`` is what the hold becomes (``voided``, ``expired``)."""
    takes = void_takes(hold.id, hold_takes(session, hold), hold.points)
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
