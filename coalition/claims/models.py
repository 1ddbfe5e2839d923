"""``claim``: a member's missing-points claim at a partner, one per partner and receipt."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, ExactDecimal, Timestamp, utcnow

#: open until the partner answers; confirmed and refused are final
STATUSES = ("open", "confirmed", "refused")


class Claim(Base):
    __tablename__ = "claim"
    __table_args__ = (
        # a receipt is claimed once at its partner, whatever became of the claim
        UniqueConstraint("partner_id", "receipt"),
        # an earn answers one claim
        UniqueConstraint("entry_id"),
        Index("ix_claim_partner_id_status_id", "partner_id", "status", "id"),
        Index("ix_claim_member_id_id", "member_id", "id"),
        CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
                        name="status"),
        # a confirmed claim names the earn it booked (or matched) and its points
        CheckConstraint("(status = 'confirmed') = (entry_id IS NOT NULL AND points IS NOT "
                        "NULL)", name="confirmed_booking"),
        CheckConstraint("(status = 'open') = (answered_at IS NULL)", name="answered"),
        CheckConstraint("spend_amount > 0", name="spend_positive"),
    )

    id: Mapped[PK]
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"))
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"))
    #: the reference the till printed on the receipt (the member's ``partner_txn_id`` when
    #: only that was given)
    receipt: Mapped[str] = mapped_column(String(64))
    #: the partner's own id of the sale, when the member knows it: the earn is booked
    #: under it, so a partner that posts it later finds it booked
    partner_txn_id: Mapped[str | None] = mapped_column(String(64))
    spend_amount: Mapped[Decimal] = mapped_column(ExactDecimal(24, 8))
    spend_currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[Timestamp]
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    answered_at: Mapped[Timestamp | None]
    #: who answered: the partner's staff login on the portal, ``api`` for an API client
    answered_by: Mapped[str | None] = mapped_column(String(200))
    #: why the partner refused (shown to the member)
    reason: Mapped[str | None] = mapped_column(String(500))
    entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("entry.id"))
    points: Mapped[int | None] = mapped_column(BigInteger)
