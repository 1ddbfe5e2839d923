"""Answers as dicts: a booking, a hold, a balance after an entry."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import Schema, fields
from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition.ledger.journal import Balance
from coalition.ledger.models import MEMBERSHIP_SALE, Entry, Hold, Lot, Member
from coalition.offers.earning import awards_of, earn_lines
from coalition.schemas import DecimalString, UTCTimestamp


def member_number_of(session: Session, member_id: int) -> str:
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
    body = transaction_body(
        entry_id=entry.id, kind=entry.kind, partner_code=partner_code,
        member_number=member_number_of(session, entry.member_id) if entry.member_id else None,
        partner_txn_id=entry.partner_txn_id, points=entry.points, pending=pending,
        booked_at=entry.booked_at, occurred_at=entry.occurred_at,
        reference=entry.reference_id,
        balance=recorded_balance(entry),
        spend_amount=entry.spend_amount, spend_currency=entry.spend_currency,
    )
    if entry.kind == "membership":
        body["type"] = MEMBERSHIP_SALE
    if entry.kind == "earn":
        awards = awards_of(session, entry.id)
        body["lines"] = earn_lines(entry.points - sum(a[2] for a in awards), awards)
    return body


def recorded_balance(entry: Entry) -> Balance | None:
    """The member's balances just after ``entry``, as the entry recorded them (every
    booking does)."""
    if entry.available_after is None or entry.pending_after is None or entry.held_after is None:
        return None
    return Balance(entry.available_after, entry.pending_after, entry.held_after)


def render_hold(session: Session, hold: Hold, partner_code: str,
                balance_from: Entry | None = None) -> dict[str, Any]:
    """The hold, with the member's balances just after ``balance_from`` (default: the
    authorisation); ``balance_at`` says which."""
    entry = session.get_one(Entry, hold.entry_id)
    after = balance_from or entry
    return {
        "id": hold.id,
        "partner": partner_code,
        "member_number": member_number_of(session, hold.member_id),
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


def balance_dict(balance: Balance) -> dict[str, int]:
    return {"available": balance.available, "pending": balance.pending,
            "held": balance.held}


def balance_after(entry: Entry) -> dict[str, int]:
    return {"available": entry.available_after or 0, "pending": entry.pending_after or 0,
            "held": entry.held_after or 0}


class _SpendSchema(Schema):
    amount = DecimalString()
    currency = fields.String()


class TransactionEventSchema(Schema):
    """A booking the core makes at a partner (a member's redemption there, a paid
    membership it sold) as the partner's ``transaction.booked`` event carries it: the shape
    of its transactions (``GET /v1/transactions``)."""

    id = fields.Integer()
    type = fields.String()
    partner = fields.String()
    member_number = fields.String()
    partner_txn_id = fields.String()
    points = fields.Integer()
    status = fields.String()
    booked_at = UTCTimestamp()
    occurred_at = UTCTimestamp()
    reference = fields.Integer(allow_none=True)
    spend = fields.Nested(_SpendSchema)
    balance = fields.Dict(allow_none=True)
