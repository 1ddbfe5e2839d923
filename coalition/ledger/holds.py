"""Holds: a partner reserves points (authorise), then captures or cancels them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import UnitOfWork, Units, read
from coalition.errors import HoldNotOpen, InvalidRequest, MemberClosed, NotFound
from coalition.ledger import journal
from coalition.ledger.booking import PartnerRef, debit_wallet, partner_of, partner_ref
from coalition.ledger.idempotency import Outcome, idempotent, request_hash
from coalition.ledger.lookup import active_member
from coalition.ledger.models import Entry, Hold, Member, Wallet
from coalition.ledger.rendering import render_hold, render_transaction, transaction_body
from coalition.ledger.voiding import hold_takes, returning, void_hold
from coalition.program.service import rules_in_force


def authorise_hold(partner_id: int | PartnerRef, data: dict[str, Any], *,
                   units: Units = UnitOfWork) -> Outcome:
    """Move points from available to held until captured, voided or expired."""
    partner = partner_of(partner_id)
    digest = request_hash("hold", data)

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        member = active_member(session, partner.id, data)
        holds = rules_in_force(session)["holds"]
        seconds = data.get("expires_in") or holds["default_seconds"]
        if seconds > holds["max_seconds"]:
            message = f"At most {holds['max_seconds']} seconds."
            raise InvalidRequest(message, errors={"expires_in": [message]})
        points = data["points"]
        balance = debit_wallet(session, member, now, available=-points, held=points)
        takes = journal.take_from_live_lots(session, member.id, points)
        entry_id = journal.book_entry(
            session, kind="hold", booked_at=now, points=points, partner_id=partner.id,
            member_id=member.id, partner_txn_id=data["partner_txn_id"], request_hash=digest,
            balance=balance, takes=takes,
            postings=[("member:available", member.id, None, -points),
                      ("member:held", member.id, None, points)],
        )
        hold = Hold(entry_id=entry_id, member_id=member.id, partner_id=partner.id,
                    points=points, captured=0, status="open",
                    expires_at=now + timedelta(seconds=seconds))
        session.add(hold)
        session.flush()
        return {"id": hold.id, "partner": partner.code, "member_number": member.member_number,
                "partner_txn_id": data["partner_txn_id"], "points": points,
                "captured_points": 0, "status": "open", "expires_at": hold.expires_at,
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

    return idempotent(partner, data["partner_txn_id"], digest, work, render, units=units)


def _locked_open_hold(session: Session, partner: PartnerRef, hold_id: int) -> Hold:
    """The partner's hold, read again under its member's wallet lock; refused unless open."""
    hold = session.scalar(select(Hold).where(Hold.id == hold_id, Hold.partner_id == partner.id))
    if hold is None:
        raise NotFound(f"No hold {hold_id}.")
    journal.lock_wallet(session, hold.member_id)
    session.refresh(hold)
    if hold.status != "open":
        raise HoldNotOpen(f"Hold {hold_id} is {hold.status}.")
    return hold


def _open_hold(session: Session, partner: PartnerRef, hold_id: int, now: datetime) -> Hold:
    """As :func:`_locked_open_hold`, and not expired: what a capture needs."""
    hold = _locked_open_hold(session, partner, hold_id)
    if hold.expires_at <= now:
        raise HoldNotOpen(f"Hold {hold_id} has expired.")
    return hold


def capture_hold(partner_id: int | PartnerRef, hold_id: int, data: dict[str, Any], *,
                 units: Units = UnitOfWork) -> Outcome:
    """Capture all or part of a hold as a redemption; the rest returns to available."""
    partner = partner_of(partner_id)
    digest = request_hash("capture", {"hold": hold_id, **data})

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        hold = _open_hold(session, partner, hold_id, now)
        member = session.get_one(Member, hold.member_id)
        if member.status != "active":
            raise MemberClosed(f"Member {member.member_number} is {member.status}.")
        captured = data.get("points") or hold.points
        if captured > hold.points:
            message = f"At most the {hold.points} points held."
            raise InvalidRequest(message, errors={"points": [message]})
        back = hold.points - captured
        balance = journal.change_wallet(session, hold.member_id, held=-hold.points,
                                        available=back, activity_at=now)
        assert balance is not None, "a held amount is always in the wallet"
        takes = returning(hold_takes(session, hold), back)
        journal.apply_takes(session, takes)
        entry_id = journal.book_entry(
            session, kind="hold_capture", booked_at=now, points=captured,
            partner_id=partner.id, member_id=hold.member_id,
            partner_txn_id=data["partner_txn_id"], request_hash=digest,
            reference_id=hold.entry_id, balance=balance, takes=takes,
            postings=[("member:held", hold.member_id, None, -hold.points),
                      ("partner:redeemed", None, partner.id, captured),
                      ("member:available", hold.member_id, None, back)],
        )
        hold.status, hold.captured, hold.closed_by_entry_id = "captured", captured, entry_id
        session.flush()
        return transaction_body(
            entry_id=entry_id, kind="hold_capture", partner_code=partner.code,
            member_number=member.member_number, partner_txn_id=data["partner_txn_id"],
            points=captured, pending=False, booked_at=now, occurred_at=now,
            reference=hold.entry_id, balance=balance,
        )

    return idempotent(partner, data["partner_txn_id"], digest, work,
                      lambda s, e: render_transaction(s, e, partner.code), units=units)


def cancel_hold(partner_id: int | PartnerRef, hold_id: int, data: dict[str, Any], *,
                units: Units = UnitOfWork) -> Outcome:
    """Void an open hold: every held point returns to available."""
    partner = partner_of(partner_id)
    digest = request_hash("void", {"hold": hold_id, **data})

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        hold = _locked_open_hold(session, partner, hold_id)
        entry_id = void_hold(session, hold, now, status="voided",
                             partner_txn_id=data["partner_txn_id"], digest=digest)
        return render_hold(session, hold, partner.code,
                           balance_from=session.get_one(Entry, entry_id))

    def render(session: Session, entry: Entry) -> dict[str, Any]:
        hold = session.scalars(select(Hold).where(Hold.entry_id == entry.reference_id)).one()
        return render_hold(session, hold, partner.code, balance_from=entry)

    return idempotent(partner, data["partner_txn_id"], digest, work, render, units=units)


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
