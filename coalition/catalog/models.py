"""``reward`` (what members can redeem points for, fulfilled by one partner) and
``voucher`` (one redemption: the code the member shows at the fulfilling partner's till).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, Points, Timestamp, utcnow

#: what a reward is: a voucher, a product, a service, a gift to a charity
REWARD_KINDS = ("voucher", "product", "service", "charity")
#: a voucher is issued until the partner marks it used, or, past its expiry, the daily job
#: refunds or forfeits it by the program's rule
VOUCHER_STATUSES = ("issued", "used", "refunded", "forfeited")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class Reward(Base):
    __tablename__ = "reward"
    __table_args__ = (
        CheckConstraint(_in("kind", REWARD_KINDS), name="kind"),
        CheckConstraint("points > 0", name="points"),
        # the stock is the guard of every redemption: never more sold than there were
        CheckConstraint("sold >= 0 AND (stock IS NULL OR sold <= stock)", name="sold"),
        CheckConstraint("per_member_limit IS NULL OR per_member_limit > 0",
                        name="per_member_limit"),
        Index("ix_reward_partner_id_id", "partner_id", "id"),
    )

    id: Mapped[PK]
    #: the partner that fulfils it, at which the points are redeemed (and settled)
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"))
    #: published by the operator for the coalition (fulfilled by ``partner_id``)
    coalition: Mapped[bool] = mapped_column(default=False)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    terms: Mapped[str] = mapped_column(Text, default="")
    points: Mapped[Points]
    #: units in total (none: unlimited) and units sold so far
    stock: Mapped[int | None] = mapped_column(BigInteger)
    sold: Mapped[int] = mapped_column(BigInteger, default=0)
    per_member_limit: Mapped[int | None] = mapped_column(BigInteger)
    #: a member-only reward: the code of the paid membership plan a member must hold, in
    #: force, to redeem it (none: every member)
    plan: Mapped[str | None] = mapped_column(String(32))
    valid_from: Mapped[Timestamp | None]
    valid_to: Mapped[Timestamp | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    updated_at: Mapped[Timestamp] = mapped_column(default=utcnow)


class Voucher(Base):
    __tablename__ = "voucher"
    __table_args__ = (
        CheckConstraint(_in("status", VOUCHER_STATUSES), name="status"),
        CheckConstraint("points > 0", name="points"),
        Index("ix_voucher_member_id_id", "member_id", "id"),
        Index("ix_voucher_reward_id_member_id", "reward_id", "member_id"),
        Index("ix_voucher_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[PK]
    #: the code the member shows: 100 random bits in base32, unique
    code: Mapped[str] = mapped_column(String(32), unique=True)
    reward_id: Mapped[int] = mapped_column(BigId, ForeignKey("reward.id"))
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"))
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"))
    points: Mapped[Points]
    #: the burn at the fulfilling partner that paid for it
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entry.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="issued")
    issued_at: Mapped[Timestamp]
    expires_at: Mapped[Timestamp]
    used_at: Mapped[Timestamp | None]
    #: the till's ``Idempotency-Key`` of the redemption that used it (a retry replays)
    used_key: Mapped[str | None] = mapped_column(String(64))
    #: when the daily job refunded or forfeited it, and the burn reversal of a refund
    closed_at: Mapped[Timestamp | None]
    refund_entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("entry.id"))
