"""Hold voiding: an open hold's reserved points go back to the member, with the takes
that reserved them; used by hold cancellation, the expiry job, merges and closures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition.ledger import journal
from coalition.ledger.journal import LedgerInconsistency, Take
from coalition.ledger.models import Hold, Lot, LotMovement, Wallet

_mv, _lot = LotMovement.__table__.c, Lot.__table__.c
#: the order a hold's points go back to its lots: latest expiry first (so a partial
#: capture keeps the earliest-expiring points and returns the rest)
RETURN_ORDER = (_lot.expires_at.desc().nulls_first(), _lot.id.desc())


@dataclass(frozen=True)
class OpenHold:
    """An open hold as a void needs it (all of it fixed when the hold was authorised)."""

    id: int
    entry_id: int
    member_id: int
    partner_id: int
    points: int


def hold_takes(session: Session, hold_entry_id: int) -> list[Take]:
    """The points an open hold reserves, per lot, in the order they go back (read from
    the hold's lot movements and the lots' fixed columns: no wallet lock needed)."""
    rows = session.execute(
        select(_mv.lot_id, _lot.origin_partner_id, -_mv.points)
        .join(Lot.__table__, _lot.id == _mv.lot_id)
        .where(_mv.entry_id == hold_entry_id)
        .order_by(*RETURN_ORDER)
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
        .order_by(_mv.entry_id, *RETURN_ORDER)
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


def void_hold(session: Session, hold: OpenHold, now: datetime, *, status: str,
              reserved: list[Take] | None = None, partner_txn_id: str | None = None,
              digest: str | None = None, note: str | None = None,
              occurred_at: datetime | None = None) -> journal.Booked:
    """Return an open hold's points to available (its lots get them back, exactly what the
    hold took from each, ``reserved``: read here when not given), the hold becoming
    ``status`` (``voided``, ``expired``); one booking of the journal, refused with
    ``HoldNotOpen`` if the hold was closed meanwhile."""
    if reserved is None:
        reserved = hold_takes(session, hold.entry_id)
    takes = void_takes(hold.id, reserved, hold.points)
    booked = journal.change_and_book(
        session, member_id=hold.member_id, held=-hold.points, available=hold.points,
        activity_at=None, kind="hold_void", booked_at=now, occurred_at=occurred_at,
        points=hold.points, partner_id=hold.partner_id, partner_txn_id=partner_txn_id,
        request_hash=digest, reference_id=hold.entry_id, takes=takes, note=note,
        closes=journal.HoldClose(hold.id, status),
        postings=[("member:held", hold.member_id, None, -hold.points),
                  ("member:available", hold.member_id, None, hold.points)],
    )
    if booked is None:
        raise LedgerInconsistency(f"hold {hold.id}: member {hold.member_id} holds less "
                                  f"than {hold.points} points")
    return booked


def void_open_holds(session: Session, member_id: int, now: datetime,
                    note: str) -> tuple[int, int, int]:
    """Void every open hold of the member (under its wallet lock), oldest first; answers
    how many, and the available and pending points left, which a merge or a closure moves
    next. Points still held without an open hold are an inconsistency."""
    h = Hold.__table__.c
    holds = [OpenHold(*row) for row in session.execute(
        select(h.id, h.entry_id, h.member_id, h.partner_id, h.points)
        .where(h.member_id == member_id, h.status == "open").order_by(h.id))]
    for hold in holds:
        void_hold(session, hold, now, status="voided", note=note)
    w = Wallet.__table__.c
    available, pending, held = session.execute(
        select(w.available, w.pending, w.held).where(w.member_id == member_id)).one()
    if held:
        raise LedgerInconsistency(f"member {member_id}: {held} held points "
                                  f"without an open hold")
    return len(holds), available, pending
