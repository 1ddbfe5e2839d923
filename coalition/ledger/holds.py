"""Holds: a partner reserves points (authorise), then captures or cancels them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import UnitOfWork, Units, read
from coalition.errors import HoldNotOpen, InvalidRequest, MemberClosed, NotFound
from coalition.ledger import journal
from coalition.ledger.booking import PartnerRef, debit_wallet, partner_of, partner_ref
from coalition.ledger.idempotency import (
    AlreadyBooked,
    Outcome,
    first_read,
    idempotent,
    probe,
    request_hash,
    used_column,
)
from coalition.ledger.journal import Take
from coalition.ledger.models import Entry, Hold, Lot, LotMovement, Member, Wallet
from coalition.ledger.rendering import (
    balance_dict,
    render_hold,
    render_transaction,
    transaction_body,
)
from coalition.ledger.voiding import RETURN_ORDER, OpenHold, returning, void_hold
from coalition.prepared import Prepared
from coalition.program.service import latest_version_columns, rules_of_version


def authorise_hold(partner_id: int | PartnerRef, data: dict[str, Any], *,
                   units: Units = UnitOfWork) -> Outcome:
    """Move points from available to held until captured, voided or expired. The first
    read carries the idempotency probe, the member and the rules' version
    (:func:`~coalition.ledger.idempotency.first_read`)."""
    partner = partner_of(partner_id)
    digest = request_hash("hold", data)

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        member, (version, published_at) = first_read(
            session, partner, data["partner_txn_id"], data, ("hold", latest_version_columns))
        holds = rules_of_version(session, version, published_at)["holds"]
        seconds = data.get("expires_in") or holds["default_seconds"]
        if seconds > holds["max_seconds"]:
            message = f"At most {holds['max_seconds']} seconds."
            raise InvalidRequest(message, errors={"expires_in": [message]})
        points = data["points"]
        balance = debit_wallet(session, member, now, available=-points, held=points)
        takes = journal.take_from_live_lots(session, member.id, points, apply=False)
        expires_at = now + timedelta(seconds=seconds)
        hold = journal.NewHold(expires_at)
        journal.book_entry(
            session, kind="hold", booked_at=now, points=points, partner_id=partner.id,
            member_id=member.id, partner_txn_id=data["partner_txn_id"], request_hash=digest,
            balance=balance, takes=takes, apply_to_lots=True, opens=hold,
            postings=[("member:available", member.id, None, -points),
                      ("member:held", member.id, None, points)])
        return {"id": hold.id, "partner": partner.code, "member_number": member.member_number,
                "partner_txn_id": data["partner_txn_id"], "points": points,
                "captured_points": 0, "status": "open", "expires_at": expires_at,
                "created_at": now,
                "balance": {"available": balance.available, "pending": balance.pending,
                            "held": balance.held},
                "balance_at": "authorisation"}

    def render(session: Session, entry: Entry) -> dict[str, Any]:
        hold = session.scalars(select(Hold).where(Hold.entry_id == entry.id)).one()
        body = render_hold(session, hold, partner.code)
        body["status"] = "open"  # the hold as it was authorised
        body["captured_points"] = 0
        return body

    return idempotent(partner, data["partner_txn_id"], digest, work, render, units=units,
                      probe=False)


_h, _m, _e = Hold.__table__.c, Member.__table__.c, Entry.__table__.c
_mv, _lot = LotMovement.__table__.c, Lot.__table__.c
#: a capture's or a void's first read: the hold, its member, its authorisation, whether the
#: request's ``partner_txn_id`` was used, and the points the hold reserves in each lot (one
#: row per lot, in the order they go back), in one round trip. Everything but the hold's
#: status is fixed once the hold is authorised; the status is checked again by the booking
#: that closes the hold (:class:`~coalition.ledger.journal.HoldClose`).
_HOLD_READ = Prepared(
    select(_h.entry_id, _h.member_id, _h.points, _h.status, _h.expires_at,
           _m.member_number, _m.status.label("member_status"),
           _e.partner_txn_id.label("hold_txn_id"), _e.booked_at,
           used_column().label("used"),
           _mv.lot_id, _lot.origin_partner_id, (-_mv.points).label("reserved"))
    .select_from(Hold.__table__.join(Member.__table__, _m.id == _h.member_id)
                 .join(Entry.__table__, _e.id == _h.entry_id)
                 .outerjoin(LotMovement.__table__.join(Lot.__table__, _lot.id == _mv.lot_id),
                            _mv.entry_id == _h.entry_id))
    .where(_h.id == bindparam("hold"), _h.partner_id == bindparam("partner"))
    .order_by(*RETURN_ORDER))


@dataclass(frozen=True)
class _SeenHold:
    hold: OpenHold
    status: str
    expires_at: datetime
    member_number: str
    member_status: str
    partner_txn_id: str | None
    created_at: datetime
    reserved: list[Take]


def _read_hold(session: Session, partner: PartnerRef, hold_id: int,
               partner_txn_id: str) -> _SeenHold:
    """The partner's hold (:data:`_HOLD_READ`), refused unless open; a ``partner_txn_id``
    used already is answered with its entry (:class:`AlreadyBooked`)."""
    rows = _HOLD_READ.rows(session, {"hold": hold_id, "partner": partner.id,
                                     "txn": partner_txn_id})
    if not rows:
        probe(session, partner.id, partner_txn_id)
        raise NotFound(f"No hold {hold_id}.")
    first = rows[0]
    if first.used is not None:
        raise AlreadyBooked(first.used)
    if first.status != "open":
        raise HoldNotOpen(f"Hold {hold_id} is {first.status}.")
    return _SeenHold(
        OpenHold(hold_id, first.entry_id, first.member_id, partner.id, first.points),
        first.status, first.expires_at, first.member_number, first.member_status,
        first.hold_txn_id, first.booked_at,
        [Take(row.lot_id, row.origin_partner_id, row.reserved)
         for row in rows if row.lot_id is not None])


def capture_hold(partner_id: int | PartnerRef, hold_id: int, data: dict[str, Any], *,
                 units: Units = UnitOfWork) -> Outcome:
    """Capture all or part of a hold as a redemption; the rest returns to available."""
    partner = partner_of(partner_id)
    digest = request_hash("capture", {"hold": hold_id, **data})

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        seen = _read_hold(session, partner, hold_id, data["partner_txn_id"])
        hold = seen.hold
        if seen.expires_at <= now:
            raise HoldNotOpen(f"Hold {hold_id} has expired.")
        if seen.member_status != "active":
            raise MemberClosed(f"Member {seen.member_number} is {seen.member_status}.")
        captured = data.get("points") or hold.points
        if captured > hold.points:
            message = f"At most the {hold.points} points held."
            raise InvalidRequest(message, errors={"points": [message]})
        back = hold.points - captured
        booked = journal.change_and_book(
            session, member_id=hold.member_id, held=-hold.points, available=back,
            activity_at=now, kind="hold_capture", booked_at=now, points=captured,
            partner_id=partner.id, partner_txn_id=data["partner_txn_id"],
            request_hash=digest, reference_id=hold.entry_id,
            takes=returning(seen.reserved, back),
            closes=journal.HoldClose(hold_id, "captured", captured),
            postings=[("member:held", hold.member_id, None, -hold.points),
                      ("partner:redeemed", None, partner.id, captured),
                      ("member:available", hold.member_id, None, back)],
        )
        assert booked is not None, "a refused capture of an open hold raises"
        return transaction_body(
            entry_id=booked.entry_id, kind="hold_capture", partner_code=partner.code,
            member_number=seen.member_number, partner_txn_id=data["partner_txn_id"],
            points=captured, pending=False, booked_at=now, occurred_at=now,
            reference=hold.entry_id, balance=booked.balance,
        )

    return idempotent(partner, data["partner_txn_id"], digest, work,
                      lambda s, e: render_transaction(s, e, partner.code), units=units,
                      probe=False)


def cancel_hold(partner_id: int | PartnerRef, hold_id: int, data: dict[str, Any], *,
                units: Units = UnitOfWork) -> Outcome:
    """Void an open hold: every held point returns to available."""
    partner = partner_of(partner_id)
    digest = request_hash("void", {"hold": hold_id, **data})

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        seen = _read_hold(session, partner, hold_id, data["partner_txn_id"])
        booked = void_hold(session, seen.hold, now, status="voided", reserved=seen.reserved,
                           partner_txn_id=data["partner_txn_id"], digest=digest)
        return {"id": hold_id, "partner": partner.code, "member_number": seen.member_number,
                "partner_txn_id": seen.partner_txn_id, "points": seen.hold.points,
                "captured_points": 0, "status": "voided", "expires_at": seen.expires_at,
                "created_at": seen.created_at, "balance": balance_dict(booked.balance),
                "balance_at": "void"}

    def render(session: Session, entry: Entry) -> dict[str, Any]:
        hold = session.scalars(select(Hold).where(Hold.entry_id == entry.reference_id)).one()
        return render_hold(session, hold, partner.code, balance_from=entry)

    return idempotent(partner, data["partner_txn_id"], digest, work, render, units=units,
                      probe=False)


def get_hold(partner_id: int, hold_id: int) -> dict[str, Any]:
    with read() as session:
        hold = session.scalar(select(Hold).where(Hold.id == hold_id,
                                                 Hold.partner_id == partner_id))
        if hold is None:
            raise NotFound(f"No hold {hold_id}.")
        view = render_hold(session, hold, partner_ref(session, partner_id).code)
        # read later, the member's balance is the one of now, not of the authorisation
        wallet = session.get_one(Wallet, hold.member_id)
        view["balance"] = {"available": wallet.available, "pending": wallet.pending,
                           "held": wallet.held}
        view["balance_at"] = "now"
        return view
