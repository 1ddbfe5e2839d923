"""Core models shared by every package: partners and their rate cards, program rules.

The ledger references partners, so they live in the core; onboarding them (the service and
the operator API) lives in :mod:`partners`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from coalition.db import PK, Base, Rate, Timestamp, utcnow


class Partner(Base):
    __tablename__ = "partner"
    __table_args__ = (
        CheckConstraint("kind IN ('merchant', 'charity')", name="kind"),
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
    )

    id: Mapped[PK]
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)

    rate_cards: Mapped[list[RateCard]] = relationship(
        back_populates="partner", order_by="RateCard.valid_from", lazy="selectin"
    )

    def rate_card_at(self, when: datetime) -> RateCard | None:
        """The card in force at ``when``: the latest that is valid from or before it."""
        current = None
        for card in self.rate_cards:
            if card.valid_from <= when:
                current = card
        return current


class RateCard(Base):
    """Prices for one partner from ``valid_from`` until the next card. Never edited."""

    __tablename__ = "rate_card"
    __table_args__ = (
        UniqueConstraint("partner_id", "valid_from"),
        CheckConstraint("earn_rate >= 0", name="earn_rate"),
        CheckConstraint("issue_price >= 0", name="issue_price"),
        CheckConstraint("redeem_rate >= 0", name="redeem_rate"),
    )

    id: Mapped[PK]
    partner_id: Mapped[int] = mapped_column(ForeignKey("partner.id"), index=True)
    valid_from: Mapped[Timestamp]
    earn_rate: Mapped[Rate]
    issue_price: Mapped[Rate]
    redeem_rate: Mapped[Rate]
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)

    partner: Mapped[Partner] = relationship(back_populates="rate_cards")


class ProgramRules(Base):
    """One published version of the program rules. A change publishes a new version."""

    __tablename__ = "program_rules"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    rules: Mapped[dict[str, Any]] = mapped_column(JSON)
    published_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    published_by: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)


__all__ = ["Decimal", "Partner", "ProgramRules", "RateCard"]
