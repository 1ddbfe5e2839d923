"""Ledger tables.

The journal (``entry`` + ``posting``) is append-only: every business event is one entry
with postings that sum to zero, and a correction is a new entry referencing the old one.
``wallet``, ``lot`` and ``hold`` are the working state that the journal explains: each
change to them happens in the same transaction as the entry that accounts for it, and
``coalition ledger check`` proves that they agree.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, ExactDecimal, Points, Timestamp, UTCDateTime, utcnow


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


MEMBER_STATUSES = ("active", "closed", "merged")

#: every kind of journal entry
ENTRY_KINDS = (
    "earn", "burn", "earn_reversal", "burn_reversal",
    "hold", "hold_capture", "hold_void",
    "release", "expiry", "transfer", "donation", "forfeiture", "bonus", "adjustment", "merge",
    # a paid membership: bought with points (they go to coalition:membership), or with
    # money through a partner (no points move: the entry carries the money)
    "membership",
)

#: kinds a partner sees in ``GET /v1/transactions`` (API.md ``type``)
TRANSACTION_TYPES = ("earn", "burn", "earn_reversal", "burn_reversal", "hold_capture")
#: a partner's history also lists the paid memberships it sold for money: ``membership``
#: entries at the partner, shown as ``membership_sale`` (they move no points)
MEMBERSHIP_SALE = "membership_sale"
HISTORY_TYPES = (*TRANSACTION_TYPES, MEMBERSHIP_SALE)
#: the entry kind of each type of a partner's history
HISTORY_KINDS = {**{t: t for t in TRANSACTION_TYPES}, MEMBERSHIP_SALE: "membership"}

#: ledger accounts. Member accounts carry the member's points; partner and coalition
#: accounts are their counterparts (issued and funded go negative as points are created);
#: ``promotion:funded`` issues a promotion's points for each funder (a partner, or none:
#: the coalition).
ACCOUNTS = (
    "member:available", "member:pending", "member:held",
    "partner:issued", "partner:redeemed",
    "coalition:breakage", "coalition:forfeited", "coalition:funded",
    # points spent on paid memberships: a redemption by the coalition itself
    "coalition:membership",
    "promotion:funded",
)

LOT_SOURCES = ("earn", "bonus", "transfer", "adjustment")
LOT_STATES = ("pending", "live", "expired", "forfeited")
HOLD_STATUSES = ("open", "captured", "voided", "expired")

class Member(Base):
    __tablename__ = "member"
    __table_args__ = (CheckConstraint(_in("status", MEMBER_STATUSES), name="status"),)

    id: Mapped[PK]
    member_number: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    #: indexed: a member's history includes the members merged into it
    merged_into_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("member.id"),
                                                       index=True)
    #: when the member was merged into ``merged_into_id`` (none for the merges made
    #: before the moment was kept: their month is unknown)
    merged_at: Mapped[Timestamp | None]
    tier: Mapped[str] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date)
    enrolled_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner.id"))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    closed_at: Mapped[Timestamp | None]
    # sign-in: a one-time activation code handed out at enrolment (stored as a digest),
    # then a password of the member's choosing (a modern password hash)
    activation_code_hash: Mapped[str | None] = mapped_column(String(64))
    activated_at: Mapped[Timestamp | None]
    password_hash: Mapped[str | None] = mapped_column(String(255))
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[Timestamp | None]
    #: the year of the last birthday bonus, so the daily job grants it once a year
    birthday_bonus_year: Mapped[int | None] = mapped_column(Integer)


class MemberLink(Base):
    """A partner's own reference (customer id, card number) for a member, with the
    personal data that partner supplied itself: what the partner is shown, apart from the
    member's own profile (:class:`MemberConsent`)."""

    __tablename__ = "member_link"
    __table_args__ = (UniqueConstraint("partner_id", "partner_member_ref"),)

    id: Mapped[PK]
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"))
    partner_member_ref: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"), index=True)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date)


class MemberConsent(Base):
    """The member agreed to share their own name, e-mail and birth date with a partner;
    withdrawn by deleting the row."""

    __tablename__ = "member_consent"

    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"), primary_key=True)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), primary_key=True)
    granted_at: Mapped[Timestamp] = mapped_column(default=utcnow)


class Wallet(Base):
    """A member's balances, changed only together with the entry that explains them."""

    __tablename__ = "wallet"
    __table_args__ = (
        CheckConstraint("available >= 0", name="available"),
        CheckConstraint("pending >= 0", name="pending"),
        CheckConstraint("held >= 0", name="held"),
    )

    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"), primary_key=True)
    available: Mapped[Points] = mapped_column(default=0)
    pending: Mapped[Points] = mapped_column(default=0)
    held: Mapped[Points] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    last_activity_at: Mapped[Timestamp | None]


class Entry(Base):
    """One business event. Never updated or deleted."""

    __tablename__ = "entry"
    __table_args__ = (
        CheckConstraint(_in("kind", ENTRY_KINDS), name="kind"),
        CheckConstraint("points >= 0", name="points"),
        UniqueConstraint("partner_id", "partner_txn_id"),
        Index("ix_entry_member_id_id", "member_id", "id"),
        Index("ix_entry_partner_id_id", "partner_id", "id"),
    )

    id: Mapped[PK]
    kind: Mapped[str] = mapped_column(String(24))
    booked_at: Mapped[Timestamp] = mapped_column(index=True)
    occurred_at: Mapped[Timestamp]
    partner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner.id"))
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("member.id"))
    partner_txn_id: Mapped[str | None] = mapped_column(String(64))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    points: Mapped[Points]
    reference_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("entry.id"), index=True)
    spend_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal(24, 8))
    spend_currency: Mapped[str | None] = mapped_column(String(3))
    # the member's balances just after this entry: a replay answers with exactly these
    available_after: Mapped[int | None] = mapped_column(BigInteger)
    pending_after: Mapped[int | None] = mapped_column(BigInteger)
    held_after: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)
    #: a transfer's sender let the receiver see its first name (else "a member")
    sender_named: Mapped[bool | None]


class Posting(Base):
    __tablename__ = "posting"
    __table_args__ = (
        CheckConstraint(_in("account", ACCOUNTS), name="account"),
        CheckConstraint("points <> 0", name="points"),
        Index("ix_posting_member_id_account", "member_id", "account"),
        Index("ix_posting_partner_id_account", "partner_id", "account"),
    )

    id: Mapped[PK]
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entry.id"), index=True)
    account: Mapped[str] = mapped_column(String(24))
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("member.id"))
    partner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner.id"))
    points: Mapped[Points]


class Lot(Base):
    """Points a member received in one event, consumed earliest expiry first."""

    __tablename__ = "lot"
    __table_args__ = (
        CheckConstraint(_in("source", LOT_SOURCES), name="source"),
        CheckConstraint(_in("state", LOT_STATES), name="state"),
        CheckConstraint("points > 0", name="points"),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining"),
        Index("ix_lot_member_id_state", "member_id", "state"),
        Index("ix_lot_state_expires_at", "state", "expires_at"),
    )

    id: Mapped[PK]
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"))
    #: the partner whose customer earned these points; NULL for coalition-funded points
    origin_partner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner.id"))
    source: Mapped[str] = mapped_column(String(16))
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entry.id"), index=True)
    points: Mapped[Points]
    remaining: Mapped[Points]
    state: Mapped[str] = mapped_column(String(16))
    earned_at: Mapped[Timestamp]
    expires_at: Mapped[Timestamp | None]
    pending_until: Mapped[Timestamp | None]


#: the lots that still carry spendable points, written with literals: a prepared
#: statement's generic plan can then prove the predicate of ``ix_lot_live`` and read it
#: (with ``state = $2`` it cannot, and reads every lot of the member)
IS_LIVE_LOT = and_(Lot.__table__.c.state == literal_column("'live'"),
                   Lot.__table__.c.remaining > literal_column("0"))

# a member's live lots with points left, in consumption order: what a burn takes and a
# balance read lists, found without reading the member's spent history
Index("ix_lot_live", Lot.__table__.c.member_id, Lot.__table__.c.expires_at, Lot.__table__.c.id,
      postgresql_where=IS_LIVE_LOT, sqlite_where=IS_LIVE_LOT)


class LotMovement(Base):
    """A change to a lot's remaining points, made by one entry (negative: taken)."""

    __tablename__ = "lot_movement"
    __table_args__ = (CheckConstraint("points <> 0", name="points"),)

    id: Mapped[PK]
    lot_id: Mapped[int] = mapped_column(BigId, ForeignKey("lot.id"), index=True)
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entry.id"), index=True)
    points: Mapped[Points]
    #: the lot's origin partner, copied when the movement is written (a lot's origin never
    #: changes), so settlement reads whose points moved without a lookup per movement;
    #: ``coalition ledger check`` verifies the copy
    origin_partner_id: Mapped[int | None] = mapped_column(BigId)
    #: the moving entry's kind, partner and booking time, copied likewise (an entry never
    #: changes), so a period's movements are read without joining every one to its entry
    entry_kind: Mapped[str | None] = mapped_column(String(24))
    entry_partner_id: Mapped[int | None] = mapped_column(BigId)
    entry_booked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)


class Hold(Base):
    """An authorised burn: points moved from available to held until captured or voided."""

    __tablename__ = "hold"
    __table_args__ = (
        CheckConstraint(_in("status", HOLD_STATUSES), name="status"),
        CheckConstraint("captured >= 0 AND captured <= points", name="captured"),
        Index("ix_hold_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[PK]
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entry.id"), unique=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"), index=True)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"))
    points: Mapped[Points]
    captured: Mapped[Points] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default="open")
    expires_at: Mapped[Timestamp]
    closed_by_entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("entry.id"))


__all__ = ["Entry", "Hold", "Lot", "LotMovement", "Member", "MemberConsent", "MemberLink",
           "Posting", "Wallet"]
