"""Promotions (``offer``): who funds them, where they apply, who activated them, and the
points each earn got from them."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, ExactDecimal, Points, Timestamp, utcnow

#: how a promotion adds points to an earn from a spend
RULES = ("multiplier", "bonus")


class Offer(Base):
    """A promotion: extra points on earns at its partners during ``[valid_from,
    valid_to)``, for the members it targets, until ``issued_points`` reaches
    ``cap_points``. Never edited, except for the points it has issued.

    The cap counts the points awarded net of reversals (a refunded purchase never earned
    the bonus): a reversal of ``r`` more points of an earn of ``e``, ``d`` reversed
    before, gives back ``⌊a × (d + r) / e⌋ − ⌊a × d / e⌋`` of each award ``a``
    (:func:`coalition.offers.earning.give_back`, one statement), so the reversals of a
    whole earn give back its whole award."""

    __tablename__ = "offer"
    __table_args__ = (
        CheckConstraint("rule IN ('multiplier', 'bonus')", name="rule"),
        CheckConstraint("(rule = 'multiplier' AND multiplier > 1 AND bonus_points IS NULL)"
                        " OR (rule = 'bonus' AND bonus_points > 0 AND multiplier IS NULL)",
                        name="rule_value"),
        CheckConstraint("valid_from < valid_to", name="period"),
        CheckConstraint("cap_points > 0", name="cap_points"),
        CheckConstraint("issued_points >= 0 AND issued_points <= cap_points",
                        name="issued_points"),
        CheckConstraint("new_member_days IS NULL OR new_member_days > 0",
                        name="new_member_days"),
    )

    id: Mapped[PK]
    name: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(16))
    #: ``multiplier``: the earn's points × multiplier in all; the promotion gives the rest
    multiplier: Mapped[Decimal | None] = mapped_column(ExactDecimal(24, 8))
    #: ``bonus``: points added to each earn from a spend
    bonus_points: Mapped[int | None] = mapped_column(BigInteger)
    valid_from: Mapped[Timestamp]
    valid_to: Mapped[Timestamp]
    #: the tier codes it is for (``None``: every tier)
    tiers: Mapped[list[str] | None] = mapped_column(JSON)
    #: only for members enrolled within this many days of the earn (``None``: everyone)
    new_member_days: Mapped[int | None] = mapped_column(Integer)
    #: the member activates it first (page or API)
    opt_in: Mapped[bool]
    cap_points: Mapped[Points]
    #: raised under the guard of the earn that books them, never above ``cap_points``
    issued_points: Mapped[Points] = mapped_column(default=0)
    #: the partner that published it (``None``: the coalition's operator)
    published_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner.id"))
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)


class OfferPartner(Base):
    """A partner at whose earns the promotion applies."""

    __tablename__ = "offer_partner"

    offer_id: Mapped[int] = mapped_column(BigId, ForeignKey("offer.id"), primary_key=True)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), primary_key=True)


class OfferFunder(Base):
    """One funder's share of a promotion's points: a partner, or the coalition
    (``partner_id`` ``None``). The shares of a promotion add up to exactly 1."""

    __tablename__ = "offer_funder"
    __table_args__ = (
        CheckConstraint("share > 0 AND share <= 1", name="share"),
    )

    offer_id: Mapped[int] = mapped_column(BigId, ForeignKey("offer.id"), primary_key=True)
    #: the order the shares are split in (the last one takes the rounding)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    partner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner.id"))
    share: Mapped[Decimal] = mapped_column(ExactDecimal(24, 8))


class OfferActivation(Base):
    """A member activated an opt-in promotion."""

    __tablename__ = "offer_activation"

    offer_id: Mapped[int] = mapped_column(BigId, ForeignKey("offer.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"), primary_key=True)
    activated_at: Mapped[Timestamp]


class OfferAward(Base):
    """The points one earn got from one promotion (its funders' postings are on the
    entry). Written with the entry, never changed."""

    __tablename__ = "offer_award"
    __table_args__ = (
        CheckConstraint("points > 0", name="points"),
        Index("ix_offer_award_offer_id", "offer_id"),
    )

    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entry.id"), primary_key=True)
    offer_id: Mapped[int] = mapped_column(BigId, ForeignKey("offer.id"), primary_key=True)
    points: Mapped[Points]
