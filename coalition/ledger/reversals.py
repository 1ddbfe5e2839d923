"""Reversals: a partner takes back all or part of an earn or a burn."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import UnitOfWork, Units
from coalition.errors import InsufficientPoints, InvalidRequest, MemberClosed, NotFound
from coalition.ledger import journal
from coalition.ledger.booking import PartnerRef, debit_wallet, partner_of
from coalition.ledger.idempotency import Outcome, idempotent, request_hash
from coalition.ledger.journal import Take
from coalition.ledger.lookup import MemberRef
from coalition.ledger.models import Entry, Lot, LotMovement, Member
from coalition.ledger.rendering import render_transaction
from coalition.ledger.voiding import returning
from coalition.money import floor_points
from coalition.offers.earning import reversal_postings
from coalition.program.service import rules_in_force


def _reversed_so_far(session: Session, original: Entry, kind: str) -> tuple[int, Decimal]:
    e = Entry.__table__.c
    points, refunded = session.execute(
        select(func.coalesce(func.sum(e.points), 0), func.sum(e.spend_amount))
        .where(e.reference_id == original.id, e.kind == kind)
    ).one()
    if refunded is not None and not isinstance(refunded, Decimal):
        # SQLite sums the text form as a float; add the exact values instead.
        refunded = sum((a for a in session.scalars(
            select(Entry.spend_amount).where(Entry.reference_id == original.id,
                                             Entry.kind == kind,
                                             Entry.spend_amount.is_not(None))) if a is not None),
            Decimal(0))
    return int(points), refunded or Decimal(0)


def _reversal_points(original: Entry, data: dict[str, Any], done: int,
                     refunded: Decimal) -> int:
    left = original.points - done
    if left <= 0:
        raise InvalidRequest("The transaction is already fully reversed.",
                             errors={"points": ["Nothing left to reverse."]})
    refund = data.get("refund")
    if refund is None:
        points = data.get("points") or left
    else:
        if original.kind != "earn" or original.spend_amount is None:
            message = "A refund can only reverse an earn made from a spend."
            raise InvalidRequest(message, errors={"refund": [message]})
        if refund["currency"] != original.spend_currency:
            message = f"The spend was in {original.spend_currency}."
            raise InvalidRequest(message, errors={"refund": {"currency": [message]}})
        if refunded + refund["amount"] > original.spend_amount:
            message = (f"Refunds would exceed the spend of {original.spend_amount} "
                       f"({refunded} already refunded).")
            raise InvalidRequest(message, errors={"refund": {"amount": [message]}})
        if refunded + refund["amount"] == original.spend_amount:
            points = left  # the last part of a full refund returns whatever is left
        else:
            # pro rata, rounded down, so the parts of one earn never add up to more than it
            points = min(left, floor_points(original.points * refund["amount"]
                                            / original.spend_amount))
        if points < 1:
            message = "The refund is too small to return any points."
            raise InvalidRequest(message, errors={"refund": {"amount": [message]}})
    if points > left:
        message = f"At most {left} points are left to reverse."
        raise InvalidRequest(message, errors={"points": [message]})
    return points


class ReversalNotPermitted(Exception):
    """The caller may not reverse bookings of this kind (``needs``: ``earn`` or ``burn``)."""

    def __init__(self, kind: str, needs: str) -> None:
        super().__init__(f"Reversing a {kind} is not permitted.")
        self.kind, self.needs = kind, needs


def reverse(partner_id: int | PartnerRef, transaction_id: int, data: dict[str, Any],
            *, may_reverse: Collection[str] | None = None,
            session: Session | None = None, units: Units = UnitOfWork) -> Outcome:
    """Reverse the partner's own earn, burn or capture, in whole or in part. With
    ``may_reverse``, the caller may reverse only bookings of those kinds (``earn``,
    ``burn``: a capture is a burn); another is refused with :class:`ReversalNotPermitted`."""
    partner = partner_of(partner_id)
    digest = request_hash("reversal", {"transaction": transaction_id, **data})

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        original = session.scalar(select(Entry).where(
            Entry.id == transaction_id, Entry.partner_id == partner.id,
            Entry.kind.in_(("earn", "burn", "hold_capture"))))
        if original is None or original.member_id is None:
            raise NotFound(f"No transaction {transaction_id} to reverse.")
        needed = "earn" if original.kind == "earn" else "burn"
        if may_reverse is not None and needed not in may_reverse:
            raise ReversalNotPermitted(original.kind, needed)
        # a merged member's points and lots moved to the survivor: so does the reversal
        member_id: int = session.execute(
            select(func.coalesce(Member.merged_into_id, Member.id))
            .where(Member.id == original.member_id)).scalar_one()
        journal.lock_wallet(session, member_id)
        member = session.get_one(Member, member_id)
        if member.status != "active":
            raise MemberClosed(f"Member {member.member_number} is {member.status}.")
        ref = MemberRef(member.id, member.member_number, member.status, member.tier)
        if original.kind == "earn":
            entry_id = _reverse_earn(session, partner, ref, original, data, digest, now)
        else:
            entry_id = _reverse_burn(session, partner, ref, original, data, digest, now)
        return render_transaction(session, session.get_one(Entry, entry_id), partner.code)

    return idempotent(partner, data["partner_txn_id"], digest, work,
                      lambda s, e: render_transaction(s, e, partner.code), session, units)


def _reverse_earn(session: Session, partner: PartnerRef, member: MemberRef, original: Entry,
                  data: dict[str, Any], digest: str, now: datetime) -> int:
    done, refunded = _reversed_so_far(session, original, "earn_reversal")
    points = _reversal_points(original, data, done, refunded)
    lot = session.scalars(select(Lot).where(Lot.entry_id == original.id,
                                            Lot.source == "earn")).one()
    if lot.state == "pending":
        # not yet spendable, so every point not reversed before is still in the lot
        balance = debit_wallet(session, member, now, pending=-points)
        takes = [Take(lot.id, lot.origin_partner_id, -points)]
        journal.apply_takes(session, takes)
        account = "member:pending"
    else:
        from_lot = min(points, lot.remaining if lot.state == "live" else 0)
        rest = points - from_lot
        if rest and rules_in_force(session)["earn_reversal_after_spend"] == "refuse":
            raise InsufficientPoints(
                f"{rest} of these points were already spent; the program refuses the return.")
        balance = debit_wallet(session, member, now, available=-points)
        takes = [Take(lot.id, lot.origin_partner_id, -from_lot)] if from_lot else []
        journal.apply_takes(session, takes)
        if rest:
            takes += journal.take_from_live_lots(session, member.id, rest, exclude_lot=lot.id)
        account = "member:available"
    refund = data.get("refund")
    return journal.book_entry(
        session, kind="earn_reversal", booked_at=now, points=points, partner_id=partner.id,
        member_id=member.id, partner_txn_id=data["partner_txn_id"], request_hash=digest,
        reference_id=original.id, balance=balance, takes=takes,
        spend_amount=refund["amount"] if refund else None,
        spend_currency=refund["currency"] if refund else None,
        postings=[*reversal_postings(session, original.id, original.points, done, points),
                  (account, member.id, None, -points)],
    )


def _consumed(session: Session, original: Entry) -> list[Take]:
    """Points the burn (or capture) took from each lot and has not had back, latest
    expiry first."""
    mv, lot = LotMovement.__table__.c, Lot.__table__.c
    sources = [original.id]
    if original.kind == "hold_capture" and original.reference_id is not None:
        sources.append(original.reference_id)
    # the burn, its hold, and the reversals of it: one list of entry ids, so that the
    # movements are found through their entry index (an OR of two IN conditions made
    # PostgreSQL scan every movement and hash every lot of the coalition)
    entries = union_all(select(Entry.id).where(Entry.id.in_(sources)),
                        select(Entry.id).where(Entry.reference_id == original.id,
                                               Entry.kind == "burn_reversal"))
    net = func.sum(mv.points)
    rows = session.execute(
        select(mv.lot_id, lot.origin_partner_id, -net)
        .join(Lot.__table__, lot.id == mv.lot_id)
        .where(mv.entry_id.in_(entries))
        .group_by(mv.lot_id, lot.origin_partner_id, lot.expires_at)
        .having(net < 0)
        .order_by(lot.expires_at.desc().nulls_first(), mv.lot_id.desc())
    ).all()
    return [Take(lot_id, origin, int(points)) for lot_id, origin, points in rows]


def _reverse_burn(session: Session, partner: PartnerRef, member: MemberRef, original: Entry,
                  data: dict[str, Any], digest: str, now: datetime) -> int:
    done, _ = _reversed_so_far(session, original, "burn_reversal")
    if data.get("refund") is not None:
        message = "A refund can only reverse an earn made from a spend."
        raise InvalidRequest(message, errors={"refund": [message]})
    points = _reversal_points(original, data, done, Decimal(0))
    balance = debit_wallet(session, member, now, available=points)
    takes = returning(_consumed(session, original), points)
    journal.apply_takes(session, takes)
    return journal.book_entry(
        session, kind="burn_reversal", booked_at=now, points=points, partner_id=partner.id,
        member_id=member.id, partner_txn_id=data["partner_txn_id"], request_hash=digest,
        reference_id=original.id, balance=balance, takes=takes,
        postings=[("partner:redeemed", None, partner.id, -points),
                  ("member:available", member.id, None, points)],
    )
