"""Reversals: a partner takes back all or part of an earn or a burn."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, select, true, union_all
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import UnitOfWork, Units
from coalition.errors import InsufficientPoints, InvalidRequest, MemberClosed, NotFound
from coalition.ledger import journal
from coalition.ledger.booking import (
    PartnerRef,
    debit_wallet,
    partner_of,
    refuse_wallet_change,
)
from coalition.ledger.idempotency import (
    AlreadyBooked,
    Outcome,
    idempotent,
    probe,
    request_hash,
    used_column,
)
from coalition.ledger.journal import LedgerInconsistency, Take
from coalition.ledger.lookup import MemberRef
from coalition.ledger.models import Entry, Lot, LotMovement, Member, Wallet
from coalition.ledger.rendering import render_transaction, transaction_body
from coalition.ledger.voiding import returning
from coalition.money import floor_points
from coalition.offers.earning import give_back, reversal_postings
from coalition.offers.models import OfferAward
from coalition.prepared import Prepared
from coalition.program.service import latest_version_columns, rules_of_version


def _reversal_points(original: _Seen, data: dict[str, Any], done: int,
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


_e, _l, _w = Entry.__table__.c, Lot.__table__.c, Wallet.__table__.c
_original = Entry.__table__.alias("original")
_o = _original.c
_reversal = Entry.__table__.alias("reversal")
_r = _reversal.c
_absorbed = Member.__table__.alias("named")
_survivor = Member.__table__.alias("survivor")
_s = _survivor.c
#: the reversals of the original so far (of its own kind of reversal)
_SO_FAR = and_(_r.reference_id == _o.id,
               _r.kind == case((_o.kind == "earn", "earn_reversal"), else_="burn_reversal"))

_mv = LotMovement.__table__.c
_sources = Entry.__table__.alias("source")
# the burn, its hold, and the reversals of it: one list of entry ids, so that the
# movements are found through their entry index (an OR of two IN conditions made
# PostgreSQL scan every movement and hash every lot of the coalition)
_CONSUMING = union_all(
    select(_sources.c.id).where(_sources.c.id == bindparam("original")),
    select(_sources.c.reference_id).where(_sources.c.id == bindparam("original"),
                                          _sources.c.kind == "hold_capture"),
    select(_sources.c.id).where(_sources.c.reference_id == bindparam("original"),
                                _sources.c.kind == "burn_reversal"))
_net = func.sum(_mv.points)
#: points a burn (or capture) took from each lot and has not had back (none for an earn)
_CONSUMED = (
    select(_mv.lot_id.label("consumed_lot"), _l.origin_partner_id.label("consumed_origin"),
           _l.expires_at.label("consumed_expires"), (-_net).label("consumed"))
    .join(Lot.__table__, _l.id == _mv.lot_id)
    .where(_mv.entry_id.in_(_CONSUMING))
    .group_by(_mv.lot_id, _l.origin_partner_id, _l.expires_at)
    .having(_net < 0)
    .subquery("consumed"))
_CONSUMED_IN_ORDER = Prepared(
    select(_CONSUMED.c.consumed_lot, _CONSUMED.c.consumed_origin, _CONSUMED.c.consumed)
    .order_by(_CONSUMED.c.consumed_expires.desc().nulls_first(),
              _CONSUMED.c.consumed_lot.desc()))

def consumed_by(session: Session, burn_id: int) -> list[Take]:
    """Points a burn (or capture) took from each lot and has not had back, latest expiry
    first: what a reversal of it returns, and where to."""
    rows = _CONSUMED_IN_ORDER.rows(session, {"original": burn_id})
    return [Take(lot_id, origin, int(points)) for lot_id, origin, points in rows]


_award = OfferAward.__table__.c
_lot = Lot.__table__.alias("earned")
_el = _lot.c

#: a reversal's first read, in one round trip: whether its ``partner_txn_id`` was used, the
#: original, the member it is booked on now (a merged member's points and lots moved to
#: the survivor: so does the reversal), that member's wallet version, what was reversed of
#: the original so far, the earn's lot, a burn's lots (one row each, latest expiry first),
#: and the rules' version. All but the original and
#: the lot's fixed columns can change until the member's wallet is locked: the booking is
#: made only if the wallet is still at the version read (``change_and_book``'s ``version``).
_FIRST_READ = Prepared(
    select(used_column().label("used"), _o.kind, _o.points, _o.spend_amount,
           _o.spend_currency, _o.reference_id,
           _s.id.label("member_id"), _s.member_number, _s.status, _s.tier,
           select(_w.version).where(_w.member_id == _s.id).scalar_subquery().label("version"),
           select(func.coalesce(func.sum(_r.points), 0)).where(_SO_FAR)
           .scalar_subquery().label("done"),
           select(func.sum(_r.spend_amount)).where(_SO_FAR).scalar_subquery()
           .label("refunded"),
           _el.id.label("lot_id"), _el.origin_partner_id, _el.state.label("lot_state"),
           _el.remaining, *latest_version_columns(),
           _CONSUMED.c.consumed_lot, _CONSUMED.c.consumed_origin, _CONSUMED.c.consumed,
           exists().where(_award.entry_id == _o.id).label("promoted"))
    .select_from(
        _original.join(_absorbed, _absorbed.c.id == _o.member_id)
        .join(_survivor, _s.id == func.coalesce(_absorbed.c.merged_into_id, _absorbed.c.id))
        .outerjoin(_lot, and_(_el.entry_id == _o.id, _el.source == "earn",
                              _o.kind == "earn"))
        .outerjoin(_CONSUMED, true()))
    .where(_o.id == bindparam("original"), _o.partner_id == bindparam("partner"),
           _o.kind.in_(("earn", "burn", "hold_capture")))
    .order_by(_CONSUMED.c.consumed_expires.desc().nulls_first(),
              _CONSUMED.c.consumed_lot.desc()))


@dataclass(frozen=True)
class _Seen:
    """What the first read found (:data:`_FIRST_READ`)."""

    id: int
    kind: str
    points: int
    spend_amount: Decimal | None
    spend_currency: str | None
    reference_id: int | None
    member: MemberRef
    version: int
    done: int
    refunded: Decimal
    lot: Take | None
    lot_state: str | None
    lot_remaining: int
    rules_version: int | None
    rules_published_at: datetime | None
    consumed: list[Take]
    #: whether promotions added points to the earn (their funders give back their parts)
    promoted: bool


def _read(session: Session, partner: PartnerRef, transaction_id: int,
          partner_txn_id: str) -> _Seen:
    rows = _FIRST_READ.rows(session, {"original": transaction_id, "partner": partner.id,
                                      "txn": partner_txn_id})
    row = rows[0] if rows else None
    if row is None:
        probe(session, partner.id, partner_txn_id)
        raise NotFound(f"No transaction {transaction_id} to reverse.")
    if row.used is not None:
        raise AlreadyBooked(row.used)
    refunded = row.refunded
    if refunded is not None and not isinstance(refunded, Decimal):
        # SQLite sums the text form as a float; add the exact values instead.
        refunded = sum((a for a in session.scalars(
            select(_r.spend_amount).where(_SO_FAR, _o.id == transaction_id)
            .select_from(_original.join(_reversal, _r.reference_id == _o.id)))
            if a is not None), Decimal(0))
    return _Seen(
        transaction_id, row.kind, row.points, row.spend_amount, row.spend_currency,
        row.reference_id, MemberRef(row.member_id, row.member_number, row.status, row.tier),
        row.version, int(row.done), refunded or Decimal(0),
        Take(row.lot_id, row.origin_partner_id, 0) if row.lot_id is not None else None,
        row.lot_state, row.remaining or 0, row.rules_version, row.rules_published_at,
        [Take(r.consumed_lot, r.consumed_origin, int(r.consumed))
         for r in rows if r.consumed_lot is not None],
        bool(row.promoted))


class _Moved(Exception):
    """The member's wallet moved (or refused) after the first read: lock it, read again."""


def reverse(partner_id: int | PartnerRef, transaction_id: int, data: dict[str, Any],
            *, may_reverse: Collection[str] | None = None,
            session: Session | None = None, units: Units = UnitOfWork) -> Outcome:
    """Reverse the partner's own earn, burn or capture, in whole or in part. With
    ``may_reverse``, the caller may reverse only bookings of those kinds (``earn``,
    ``burn``: a capture is a burn); another is refused with :class:`ReversalNotPermitted`.

    The first read is made without the member's lock and the booking only if nothing moved
    since (one round trip each); otherwise the member's wallet is locked, everything read
    again, and booked under the lock."""
    partner = partner_of(partner_id)
    digest = request_hash("reversal", {"transaction": transaction_id, **data})

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        seen = _read(session, partner, transaction_id, data["partner_txn_id"])
        needed = "earn" if seen.kind == "earn" else "burn"
        if may_reverse is not None and needed not in may_reverse:
            raise ReversalNotPermitted(seen.kind, needed)
        try:
            return _book(session, partner, seen, data, digest, now, locked=False)
        except _Moved:
            pass
        for _ in range(3):
            journal.lock_wallet(session, seen.member.id)
            again = _read(session, partner, transaction_id, data["partner_txn_id"])
            if again.member.id == seen.member.id:
                return _book(session, partner, again, data, digest, now, locked=True)
            seen = again  # merged meanwhile: the survivor's lock is the one to hold
        raise LedgerInconsistency(f"transaction {transaction_id}: its member keeps moving")

    return idempotent(partner, data["partner_txn_id"], digest, work,
                      lambda s, e: render_transaction(s, e, partner.code), session, units,
                      probe=False)


def _book(session: Session, partner: PartnerRef, seen: _Seen, data: dict[str, Any],
          digest: str, now: datetime, locked: bool) -> dict[str, Any]:
    member = seen.member
    if member.status != "active":
        raise MemberClosed(f"Member {member.member_number} is {member.status}.")
    refund = data.get("refund")
    if seen.kind == "earn":
        points = _reversal_points(seen, data, seen.done, seen.refunded)
        booked = _reverse_earn(session, partner, seen, points, data, digest, now, locked)
        if seen.promoted:  # the cap counts a promotion's points net of reversals
            give_back(session, seen.id, seen.points, seen.done, points)
    else:
        if refund is not None:
            message = "A refund can only reverse an earn made from a spend."
            raise InvalidRequest(message, errors={"refund": [message]})
        points = _reversal_points(seen, data, seen.done, Decimal(0))
        booked = _reverse_burn(session, partner, seen, points, data, digest, now, locked)
    kind = f"{'earn' if seen.kind == 'earn' else 'burn'}_reversal"
    return transaction_body(
        entry_id=booked.entry_id, kind=kind, partner_code=partner.code,
        member_number=member.member_number, partner_txn_id=data["partner_txn_id"],
        points=points, pending=False, booked_at=now, occurred_at=now, reference=seen.id,
        balance=booked.balance, spend_amount=refund["amount"] if refund else None,
        spend_currency=refund["currency"] if refund else None)


def _booked(booked: journal.Booked | None, member: MemberRef, locked: bool,
            **deltas: int) -> journal.Booked:
    if booked is not None:
        return booked
    if not locked:
        raise _Moved()
    refuse_wallet_change(member, **deltas)


def _reverse_earn(session: Session, partner: PartnerRef, seen: _Seen, points: int,
                  data: dict[str, Any], digest: str, now: datetime,
                  locked: bool) -> journal.Booked:
    member, lot = seen.member, seen.lot
    assert lot is not None, "an earn always has its lot"
    refund = data.get("refund")
    entry: dict[str, Any] = dict(
        kind="earn_reversal", booked_at=now, points=points, partner_id=partner.id,
        partner_txn_id=data["partner_txn_id"], request_hash=digest, reference_id=seen.id,
        spend_amount=refund["amount"] if refund else None,
        spend_currency=refund["currency"] if refund else None)
    version = None if locked else seen.version
    # the partner's own points and each promotion funder's share, in proportion
    issued = (reversal_postings(session, seen.id, seen.points, seen.done, points)
              if seen.promoted else [("partner:issued", None, partner.id, points)])
    if seen.lot_state == "pending":
        # not yet spendable, so every point not reversed before is still in the lot
        return _booked(journal.change_and_book(
            session, member_id=member.id, pending=-points, activity_at=now,
            takes=[Take(lot.lot_id, lot.origin_partner_id, -points)], version=version,
            postings=[*issued, ("member:pending", member.id, None, -points)], **entry),
            member, locked, pending=-points)
    from_lot = min(points, seen.lot_remaining if seen.lot_state == "live" else 0)
    rest = points - from_lot
    takes = [Take(lot.lot_id, lot.origin_partner_id, -from_lot)] if from_lot else []
    postings = [*issued, ("member:available", member.id, None, -points)]
    if not rest:
        return _booked(journal.change_and_book(
            session, member_id=member.id, available=-points, activity_at=now, takes=takes,
            version=version, postings=postings, **entry), member, locked, available=-points)
    rules = rules_of_version(session, seen.rules_version, seen.rules_published_at)
    if rules["earn_reversal_after_spend"] == "refuse":
        raise InsufficientPoints(
            f"{rest} of these points were already spent; the program refuses the return.")
    if not locked:
        raise _Moved()  # the other lots are read under the lock
    # the rest comes from the member's other lots, read under the lock once debited
    balance = debit_wallet(session, member, now, available=-points)
    journal.apply_takes(session, takes)
    takes += journal.take_from_live_lots(session, member.id, rest, exclude_lot=lot.lot_id)
    return journal.Booked(balance, journal.book_entry(
        session, member_id=member.id, balance=balance, takes=takes, postings=postings,
        **entry))


def _reverse_burn(session: Session, partner: PartnerRef, seen: _Seen, points: int,
                  data: dict[str, Any], digest: str, now: datetime,
                  locked: bool) -> journal.Booked:
    member = seen.member
    return _booked(journal.change_and_book(
        session, member_id=member.id, available=points, activity_at=now,
        takes=returning(seen.consumed, points),
        version=None if locked else seen.version,
        kind="burn_reversal", booked_at=now, points=points, partner_id=partner.id,
        partner_txn_id=data["partner_txn_id"], request_hash=digest, reference_id=seen.id,
        postings=[("partner:redeemed", None, partner.id, -points),
                  ("member:available", member.id, None, points)]),
        member, locked, available=points)
