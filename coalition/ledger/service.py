"""Partner operations on the ledger: earn, burn, holds, reversals, and their history.

Each operation is one unit of work keyed by the partner's ``partner_txn_id``:

* the same id with the same request returns the original result, marked as a replay;
* the same id with a different request is refused (``idempotency_conflict``);
* two concurrent requests with one id produce one entry: the loser's insert hits the
  unique index, its transaction rolls back whole, and it answers with the winner's result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coalition.clock import add_months
from coalition.db import UnitOfWork, read, run_with_retries, utcnow
from coalition.errors import (
    BalanceLimit,
    CoalitionError,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientPoints,
    InsufficientScope,
    InvalidRequest,
    MemberClosed,
    NoRateCard,
    NotFound,
)
from coalition.ledger import journal, tiers
from coalition.ledger.journal import Balance, LedgerInconsistency, Take
from coalition.ledger.members import MemberRef, active_member
from coalition.ledger.models import (
    TRANSACTION_TYPES,
    Entry,
    Hold,
    Lot,
    LotMovement,
    Member,
    Wallet,
)
from coalition.models import Partner, RateCard
from coalition.money import floor_points
from coalition.program.service import rules_in_force

#: an ``occurred_at`` may run ahead of the server clock by this much (till clocks drift)
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Outcome:
    body: dict[str, Any]
    replayed: bool


@dataclass(frozen=True)
class PartnerRef:
    id: int
    code: str
    currency: str


def request_hash(operation: str, data: dict[str, Any]) -> str:
    """A digest of the parsed request: what "the same request" means for a replay."""
    canonical = json.dumps({"op": operation, **data}, sort_keys=True, default=str,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------- idempotency


_E = Entry.__table__.c
_EXISTING = select(_E.id).where(_E.partner_id == bindparam("partner"),
                                _E.partner_txn_id == bindparam("txn"))
_EARN_RATE = (select(RateCard.__table__.c.earn_rate)
              .where(RateCard.__table__.c.partner_id == bindparam("partner"),
                     RateCard.__table__.c.valid_from <= bindparam("now"))
              .order_by(RateCard.__table__.c.valid_from.desc()).limit(1))


def _existing(session: Session, partner_id: int, partner_txn_id: str) -> Entry | None:
    entry_id = session.execute(_EXISTING, {"partner": partner_id,
                                           "txn": partner_txn_id}).scalar()
    return None if entry_id is None else session.get_one(Entry, entry_id)


def _idempotent(
    partner: PartnerRef,
    partner_txn_id: str,
    digest: str,
    work: Callable[[Session], dict[str, Any]],
    render: Callable[[Session, Entry], dict[str, Any]],
    session: Session | None = None,
) -> Outcome:
    """Run ``work`` (which books one entry and returns the answer) exactly once per id;
    ``render`` rebuilds that answer from the stored entry for a replay.

    With ``session``, the booking joins the caller's unit of work (which commits it, or
    retries it whole); otherwise it is a unit of work of its own.
    """

    def replay(session: Session, entry: Entry) -> Outcome:
        if entry.request_hash != digest:
            raise IdempotencyConflict(
                f"partner_txn_id {partner_txn_id!r} was already used for a different request.",
                errors={"partner_txn_id": ["Already used for a different request."]})
        return Outcome(render(session, entry), replayed=True)

    def attempt() -> Outcome:
        with UnitOfWork() as uow:
            entry = _existing(uow.session, partner.id, partner_txn_id)
            if entry is not None:
                return replay(uow.session, entry)
            try:
                body = work(uow.session)
            except CoalitionError:
                # A concurrent duplicate may have committed while this one waited for the
                # member's wallet lock: the refusal (points spent, hold closed, nothing
                # left to reverse) is of the duplicate's own result, so answer with it.
                # (Rolled back first: a refusal can come after this one wrote its entry.)
                uow.session.rollback()
                entry = _existing(uow.session, partner.id, partner_txn_id)
                if entry is not None:
                    return replay(uow.session, entry)
                raise
            uow.commit()
            return Outcome(body, replayed=False)

    if session is not None:
        entry = _existing(session, partner.id, partner_txn_id)
        if entry is not None:
            return replay(session, entry)
        return Outcome(work(session), replayed=False)
    try:
        return run_with_retries(attempt)
    except IntegrityError:
        with read() as session:
            entry = _existing(session, partner.id, partner_txn_id)
            if entry is None:
                raise
            return replay(session, entry)


# --------------------------------------------------------------------------- rendering


def _member_number(session: Session, member_id: int) -> str:
    return session.scalar(select(Member.member_number).where(Member.id == member_id)) or ""


def transaction_body(
    *, entry_id: int, kind: str, partner_code: str, member_number: str | None,
    partner_txn_id: str | None, points: int, pending: bool, booked_at: datetime,
    occurred_at: datetime, reference: int | None, balance: Balance | None,
    spend_amount: Decimal | None = None, spend_currency: str | None = None,
) -> dict[str, Any]:
    """A transaction as API.md shows it, as it stood when booked."""
    body: dict[str, Any] = {
        "id": entry_id,
        "type": kind,
        "partner": partner_code,
        "member_number": member_number,
        "partner_txn_id": partner_txn_id,
        "points": points,
        "status": "pending" if pending else "posted",
        "booked_at": booked_at,
        "occurred_at": occurred_at,
        "reference": reference,
        "balance": {"available": balance.available, "pending": balance.pending,
                    "held": balance.held} if balance else None,
    }
    if spend_amount is not None:
        body["spend"] = {"amount": spend_amount, "currency": spend_currency}
    return body


def render_transaction(session: Session, entry: Entry, partner_code: str) -> dict[str, Any]:
    pending = False
    if entry.kind == "earn":
        pending = session.scalar(select(Lot.pending_until).where(
            Lot.entry_id == entry.id, Lot.source == "earn")) is not None
    return transaction_body(
        entry_id=entry.id, kind=entry.kind, partner_code=partner_code,
        member_number=_member_number(session, entry.member_id) if entry.member_id else None,
        partner_txn_id=entry.partner_txn_id, points=entry.points, pending=pending,
        booked_at=entry.booked_at, occurred_at=entry.occurred_at,
        reference=entry.reference_id,
        balance=Balance(entry.available_after, entry.pending_after, entry.held_after),
        spend_amount=entry.spend_amount, spend_currency=entry.spend_currency,
    )


def render_hold(session: Session, hold: Hold, partner_code: str,
                balance_from: Entry | None = None) -> dict[str, Any]:
    """The hold, with the member's balances just after ``balance_from`` (default: the
    authorisation); ``balance_at`` says which."""
    entry = session.get_one(Entry, hold.entry_id)
    after = balance_from or entry
    return {
        "id": hold.id,
        "partner": partner_code,
        "member_number": _member_number(session, hold.member_id),
        "partner_txn_id": entry.partner_txn_id,
        "points": hold.points,
        "captured_points": hold.captured,
        "status": hold.status,
        "expires_at": hold.expires_at,
        "created_at": entry.booked_at,
        "balance": {"available": after.available_after, "pending": after.pending_after,
                    "held": after.held_after},
        "balance_at": "authorisation" if after is entry else "void",
    }


# --------------------------------------------------------------------------- helpers


def partner_ref(session: Session, partner_id: int) -> PartnerRef:
    row = session.execute(select(Partner.id, Partner.code, Partner.currency)
                          .where(Partner.id == partner_id)).one()
    return PartnerRef(*row)


def _partner(partner: int | PartnerRef) -> PartnerRef:
    if isinstance(partner, PartnerRef):
        return partner
    with read() as session:
        return partner_ref(session, partner)


def _check_occurred(occurred_at: datetime | None, now: datetime) -> None:
    if occurred_at is not None and occurred_at > now + CLOCK_SKEW:
        raise InvalidRequest("occurred_at is in the future.",
                             errors={"occurred_at": ["Must not be in the future."]})


def _debit(session: Session, member: MemberRef, now: datetime, available: int = 0,
           held: int = 0, pending: int = 0) -> Balance:
    balance = journal.change_wallet(session, member.id, available=available, held=held,
                                    pending=pending, activity_at=now)
    if balance is None:
        # a change that takes points (a hold moves them from available to held) is refused
        # for want of them; only a pure credit can be refused by the limit
        if available >= 0 and pending >= 0 and held >= 0:
            raise BalanceLimit("The member's balance would exceed the largest allowed.")
        raise InsufficientPoints(f"Member {member.member_number} does not have enough points.")
    return balance


# --------------------------------------------------------------------------- earn / burn


def release_welcome_bonus(session: Session, member_id: int, now: datetime) -> int:
    """Make the member's welcome bonus spendable (one ``release`` entry), in the unit of
    work of the member's earn from a spend; the bonus waits for it, so that a partner
    cannot enrol members to burn their bonus. Returns the points released."""
    lot = Lot.__table__.c
    journal.lock_wallet(session, member_id)  # before the lots are read
    waiting = session.execute(
        select(lot.id, lot.remaining).where(
            lot.member_id == member_id, lot.source == "bonus", lot.state == "pending",
            lot.pending_until.is_(None))).all()
    if not waiting:
        return 0
    session.execute(update(Lot.__table__).where(lot.id.in_([i for i, _ in waiting]))
                    .values(state="live"))
    points = sum(remaining for _, remaining in waiting)
    if not points:
        return 0
    balance = journal.change_wallet(session, member_id, pending=-points, available=points)
    if balance is None:
        raise LedgerInconsistency(f"member {member_id}: pending short of the {points} "
                                  f"welcome bonus points")
    journal.book_entry(
        session, kind="release", booked_at=now, points=points, member_id=member_id,
        balance=balance, note="welcome bonus: first earn from a spend",
        postings=[("member:pending", member_id, None, -points),
                  ("member:available", member_id, None, points)])
    return points


def earn(partner_id: int | PartnerRef, data: dict[str, Any], *,
         session: Session | None = None) -> Outcome:
    """Credit points for a spend (× earn rate × tier multiplier, rounded down) or as given."""
    partner = _partner(partner_id)
    digest = request_hash("earn", data)

    def work(session: Session) -> int:
        now = utcnow()
        _check_occurred(data.get("occurred_at"), now)
        member = active_member(session, partner.id, data)
        rules = rules_in_force(session)
        spend = data.get("spend")
        if spend is not None:
            if spend["currency"] != partner.currency:
                message = f"This partner earns in {partner.currency}."
                raise InvalidRequest(message, errors={"spend": {"currency": [message]}})
            earn_rate = session.execute(_EARN_RATE, {"partner": partner.id,
                                                     "now": now}).scalar()
            if earn_rate is None:
                raise NoRateCard("The partner has no rate card in force yet: settlement "
                                 "could not price this booking.")
            points = floor_points(spend["amount"] * earn_rate
                                  * tiers.multiplier(rules, member.tier))
            if points < 1:
                raise InvalidRequest("The spend earns no points.",
                                     errors={"spend": {"amount": ["Earns no points."]}})
            release_welcome_bonus(session, member.id, now)
        else:
            points = data["points"]
        pending_days = rules["pending_days"]
        pending_until = now + timedelta(days=pending_days) if pending_days else None
        expiry = rules["expiry"]
        expires_at = add_months(now, expiry["months"]) if expiry["policy"] == "fixed" else None
        if pending_until:
            balance = _debit(session, member, now, pending=points)
            account = "member:pending"
        else:
            balance = _debit(session, member, now, available=points)
            account = "member:available"
        entry_id = journal.book_entry(
            session, kind="earn", booked_at=now, occurred_at=data.get("occurred_at"),
            points=points, partner_id=partner.id, member_id=member.id,
            partner_txn_id=data["partner_txn_id"], request_hash=digest,
            spend_amount=spend["amount"] if spend else None,
            spend_currency=spend["currency"] if spend else None, balance=balance,
            postings=[("partner:issued", None, partner.id, -points),
                      (account, member.id, None, points)],
        )
        journal.create_lot(
            session, member_id=member.id, origin_partner_id=partner.id, source="earn",
            entry_id=entry_id, points=points, earned_at=now, expires_at=expires_at,
            pending_until=pending_until,
        )
        tiers.upgrade(session, member.id, member.tier, rules, now)
        return transaction_body(
            entry_id=entry_id, kind="earn", partner_code=partner.code,
            member_number=member.member_number, partner_txn_id=data["partner_txn_id"],
            points=points, pending=pending_until is not None, booked_at=now,
            occurred_at=data.get("occurred_at") or now, reference=None, balance=balance,
            spend_amount=spend["amount"] if spend else None,
            spend_currency=spend["currency"] if spend else None,
        )

    return _idempotent(partner, data["partner_txn_id"], digest, work,
                       lambda s, e: render_transaction(s, e, partner.code), session)


def burn(partner_id: int | PartnerRef, data: dict[str, Any], *,
         session: Session | None = None) -> Outcome:
    """Spend points at this partner, from the member's earliest-expiring lots."""
    partner = _partner(partner_id)
    digest = request_hash("burn", data)

    def work(session: Session) -> int:
        now = utcnow()
        _check_occurred(data.get("occurred_at"), now)
        member = active_member(session, partner.id, data)
        points = data["points"]
        balance = _debit(session, member, now, available=-points)
        takes = journal.take_from_live_lots(session, member.id, points)
        entry_id = journal.book_entry(
            session, kind="burn", booked_at=now, occurred_at=data.get("occurred_at"),
            points=points, partner_id=partner.id, member_id=member.id,
            partner_txn_id=data["partner_txn_id"], request_hash=digest, balance=balance,
            postings=[("member:available", member.id, None, -points),
                      ("partner:redeemed", None, partner.id, points)],
            takes=takes,
        )
        return transaction_body(
            entry_id=entry_id, kind="burn", partner_code=partner.code,
            member_number=member.member_number, partner_txn_id=data["partner_txn_id"],
            points=points, pending=False, booked_at=now,
            occurred_at=data.get("occurred_at") or now, reference=None, balance=balance,
        )

    return _idempotent(partner, data["partner_txn_id"], digest, work,
                       lambda s, e: render_transaction(s, e, partner.code), session)


# --------------------------------------------------------------------------- holds


def authorise_hold(partner_id: int | PartnerRef, data: dict[str, Any]) -> Outcome:
    """Move points from available to held until captured, voided or expired."""
    partner = _partner(partner_id)
    digest = request_hash("hold", data)

    def work(session: Session) -> int:
        now = utcnow()
        member = active_member(session, partner.id, data)
        holds = rules_in_force(session)["holds"]
        seconds = data.get("expires_in") or holds["default_seconds"]
        if seconds > holds["max_seconds"]:
            message = f"At most {holds['max_seconds']} seconds."
            raise InvalidRequest(message, errors={"expires_in": [message]})
        points = data["points"]
        balance = _debit(session, member, now, available=-points, held=points)
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

    return _idempotent(partner, data["partner_txn_id"], digest, work, render)


def _hold_takes(session: Session, hold: Hold) -> list[Take]:
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


def _returning(reserved: list[Take], points: int) -> list[Take]:
    """Positive takes returning ``points`` to the first lots of ``reserved``."""
    takes, left = [], points
    for take in reserved:
        if left == 0:
            break
        back = min(take.points, left)
        takes.append(Take(take.lot_id, take.origin_partner_id, back))
        left -= back
    return takes


def _open_hold(session: Session, partner: PartnerRef, hold_id: int, now: datetime) -> Hold:
    hold = session.scalar(select(Hold).where(Hold.id == hold_id, Hold.partner_id == partner.id))
    if hold is None:
        raise NotFound(f"No hold {hold_id}.")
    journal.lock_wallet(session, hold.member_id)
    session.refresh(hold)
    if hold.status != "open":
        raise HoldNotOpen(f"Hold {hold_id} is {hold.status}.")
    if hold.expires_at <= now:
        raise HoldNotOpen(f"Hold {hold_id} has expired.")
    return hold


def capture_hold(partner_id: int | PartnerRef, hold_id: int, data: dict[str, Any]) -> Outcome:
    """Capture all or part of a hold as a redemption; the rest returns to available."""
    partner = _partner(partner_id)
    digest = request_hash("capture", {"hold": hold_id, **data})

    def work(session: Session) -> int:
        now = utcnow()
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
        takes = _returning(_hold_takes(session, hold), back)
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

    return _idempotent(partner, data["partner_txn_id"], digest, work,
                       lambda s, e: render_transaction(s, e, partner.code))


def void_hold(session: Session, hold: Hold, now: datetime, *, status: str,
              partner_txn_id: str | None = None, digest: str | None = None,
              note: str | None = None) -> int:
    """Return a hold's points to available (its lots get them back). The caller has
    locked the member's wallet and checked the hold is open."""
    balance = journal.change_wallet(session, hold.member_id, held=-hold.points,
                                    available=hold.points, activity_at=None)
    assert balance is not None, "a held amount is always in the wallet"
    takes = _returning(_hold_takes(session, hold), hold.points)
    journal.apply_takes(session, takes)
    entry_id = journal.book_entry(
        session, kind="hold_void", booked_at=now, points=hold.points,
        partner_id=hold.partner_id, member_id=hold.member_id, partner_txn_id=partner_txn_id,
        request_hash=digest, reference_id=hold.entry_id, balance=balance, takes=takes,
        note=note,
        postings=[("member:held", hold.member_id, None, -hold.points),
                  ("member:available", hold.member_id, None, hold.points)],
    )
    hold.status, hold.closed_by_entry_id = status, entry_id
    session.flush()
    return entry_id


def cancel_hold(partner_id: int | PartnerRef, hold_id: int, data: dict[str, Any]) -> Outcome:
    """Void an open hold: every held point returns to available."""
    partner = _partner(partner_id)
    digest = request_hash("void", {"hold": hold_id, **data})

    def work(session: Session) -> int:
        now = utcnow()
        hold = session.scalar(select(Hold).where(Hold.id == hold_id,
                                                 Hold.partner_id == partner.id))
        if hold is None:
            raise NotFound(f"No hold {hold_id}.")
        journal.lock_wallet(session, hold.member_id)
        session.refresh(hold)
        if hold.status != "open":
            raise HoldNotOpen(f"Hold {hold_id} is {hold.status}.")
        entry_id = void_hold(session, hold, now, status="voided",
                             partner_txn_id=data["partner_txn_id"], digest=digest)
        return render_hold(session, hold, partner.code,
                           balance_from=session.get_one(Entry, entry_id))

    def render(session: Session, entry: Entry) -> dict[str, Any]:
        hold = session.scalars(select(Hold).where(Hold.entry_id == entry.reference_id)).one()
        return render_hold(session, hold, partner.code, balance_from=entry)

    return _idempotent(partner, data["partner_txn_id"], digest, work, render)


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


# --------------------------------------------------------------------------- reversals


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
                                             Entry.spend_amount.is_not(None)))), Decimal(0))
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


def reverse(partner_id: int | PartnerRef, transaction_id: int, data: dict[str, Any],
            scopes: frozenset[str] | None = None, *,
            session: Session | None = None) -> Outcome:
    """Reverse the partner's own earn, burn or capture, in whole or in part. With
    ``scopes``, the caller's token must hold the scope of the original's kind."""
    partner = _partner(partner_id)
    digest = request_hash("reversal", {"transaction": transaction_id, **data})

    def work(session: Session) -> int:
        now = utcnow()
        original = session.scalar(select(Entry).where(
            Entry.id == transaction_id, Entry.partner_id == partner.id,
            Entry.kind.in_(("earn", "burn", "hold_capture"))))
        if original is None or original.member_id is None:
            raise NotFound(f"No transaction {transaction_id} to reverse.")
        needed = "points:earn" if original.kind == "earn" else "points:burn"
        if scopes is not None and needed not in scopes:
            raise InsufficientScope(f"Reversing a {original.kind} needs the scope {needed}.")
        # a merged member's points and lots moved to the survivor: so does the reversal
        member_id = session.scalar(select(func.coalesce(Member.merged_into_id, Member.id))
                                   .where(Member.id == original.member_id))
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

    return _idempotent(partner, data["partner_txn_id"], digest, work,
                       lambda s, e: render_transaction(s, e, partner.code), session)


def _reverse_earn(session: Session, partner: PartnerRef, member: MemberRef, original: Entry,
                  data: dict[str, Any], digest: str, now: datetime) -> int:
    done, refunded = _reversed_so_far(session, original, "earn_reversal")
    points = _reversal_points(original, data, done, refunded)
    lot = session.scalars(select(Lot).where(Lot.entry_id == original.id,
                                            Lot.source == "earn")).one()
    if lot.state == "pending":
        # not yet spendable, so every point not reversed before is still in the lot
        balance = _debit(session, member, now, pending=-points)
        takes = [Take(lot.id, lot.origin_partner_id, -points)]
        journal.apply_takes(session, takes)
        account = "member:pending"
    else:
        from_lot = min(points, lot.remaining if lot.state == "live" else 0)
        rest = points - from_lot
        if rest and rules_in_force(session)["earn_reversal_after_spend"] == "refuse":
            raise InsufficientPoints(
                f"{rest} of these points were already spent; the program refuses the return.")
        balance = _debit(session, member, now, available=-points)
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
        postings=[("partner:issued", None, partner.id, points),
                  (account, member.id, None, -points)],
    )


def _consumed(session: Session, original: Entry) -> list[Take]:
    """Points the burn (or capture) took from each lot and has not had back, latest
    expiry first."""
    mv, lot = LotMovement.__table__.c, Lot.__table__.c
    sources = [original.id]
    if original.kind == "hold_capture" and original.reference_id is not None:
        sources.append(original.reference_id)
    reversals = select(Entry.id).where(Entry.reference_id == original.id,
                                       Entry.kind == "burn_reversal")
    net = func.sum(mv.points)
    rows = session.execute(
        select(mv.lot_id, lot.origin_partner_id, -net)
        .join(Lot.__table__, lot.id == mv.lot_id)
        .where(mv.entry_id.in_(sources) | mv.entry_id.in_(reversals))
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
    balance = _debit(session, member, now, available=points)
    takes = _returning(_consumed(session, original), points)
    journal.apply_takes(session, takes)
    return journal.book_entry(
        session, kind="burn_reversal", booked_at=now, points=points, partner_id=partner.id,
        member_id=member.id, partner_txn_id=data["partner_txn_id"], request_hash=digest,
        reference_id=original.id, balance=balance, takes=takes,
        postings=[("partner:redeemed", None, partner.id, -points),
                  ("member:available", member.id, None, points)],
    )


# --------------------------------------------------------------------------- history


def _encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"e{entry_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("e") or not (text[1:].isascii() and text[1:].isdigit()):
            raise ValueError(text)
        entry_id = int(text[1:])
        if entry_id >= 2**63:  # beyond any 64-bit id: the driver would overflow (500)
            raise ValueError(text)
        return entry_id
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidRequest("Not a cursor from this API.",
                             errors={"cursor": ["Not a valid cursor."]}) from exc


def list_transactions(partner_id: int, filters: dict[str, Any]) -> dict[str, Any]:
    """The partner's own transactions, newest first, a page at a time."""
    limit = filters.get("limit", 50)
    with read() as session:
        partner = partner_ref(session, partner_id)
        query = select(Entry).where(Entry.partner_id == partner_id,
                                    Entry.kind.in_(TRANSACTION_TYPES))
        if filters.get("type"):
            query = query.where(Entry.kind == filters["type"])
        if filters.get("member_number"):
            query = query.where(Entry.member_id == select(Member.id).where(
                Member.member_number == filters["member_number"]).scalar_subquery())
        if filters.get("booked_from"):
            query = query.where(Entry.booked_at >= filters["booked_from"])
        if filters.get("booked_to"):
            query = query.where(Entry.booked_at < filters["booked_to"])
        if filters.get("cursor"):
            query = query.where(Entry.id < _decode_cursor(filters["cursor"]))
        rows = session.scalars(query.order_by(Entry.id.desc()).limit(limit + 1)).all()
        items = [render_transaction(session, e, partner.code) for e in rows[:limit]]
        more = len(rows) > limit
        return {"items": items,
                "next_cursor": _encode_cursor(rows[limit - 1].id) if more else None}


def get_transaction(partner_id: int, transaction_id: int) -> dict[str, Any]:
    with read() as session:
        entry = session.scalar(select(Entry).where(
            and_(Entry.id == transaction_id, Entry.partner_id == partner_id,
                 Entry.kind.in_(TRANSACTION_TYPES))))
        if entry is None:
            raise NotFound(f"No transaction {transaction_id}.")
        return render_transaction(session, entry, partner_ref(session, partner_id).code)
