"""``membership``: one row per paid period of a member's plan.

A purchase (with points on the page or API, or with money through a partner) and each
renewal write one row: the plan's code and the terms bought (multiplier, price), the
period ``[starts_at, ends_at)``, and the journal entry that paid for it. The row's status
says what became of it:

* ``active``: in force (or, once its period is over, waiting for the daily job to renew or
  end it); renewed at its end when ``auto_renew`` is set and the member has the points.
* ``cancelled``: the member cancelled; the benefits last to ``ends_at``, no renewal.
* ``renewed``: the next row continues it (decided by the daily job on the day the period
  ends; the next row starts where this one ends).
* ``lapsed``: it ends without a renewal (decided likewise; in force to its end).
* ``ended``: ended early by the member's closure, or by a merge that kept the survivor's.

A member has at most one row that is ``active`` or ``cancelled`` (a unique partial index),
so two purchases at once cannot both succeed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    and_,
    bindparam,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, ExactDecimal, Points, Timestamp, utcnow

STATUSES = ("active", "cancelled", "renewed", "lapsed", "ended")
#: the statuses of a member's current row (the benefits may still be in force)
CURRENT = ("active", "cancelled")
#: the statuses under which a row's period gives its benefits (all but ``ended``: a renewal
#: or a lapse is decided on the day a period ends, and the period still runs to its end)
IN_FORCE = ("active", "cancelled", "renewed", "lapsed")
PAID_WITH = ("points", "money")
_CURRENT_SQL = "status IN ('active', 'cancelled')"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Membership(Base):
    __tablename__ = "membership"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint(_in("paid_with", PAID_WITH), name="paid_with"),
        CheckConstraint("ends_at > starts_at", name="period"),
        CheckConstraint("(paid_with = 'points' AND points > 0) OR (paid_with = 'money' "
                        "AND points = 0 AND price_amount > 0 AND price_currency IS NOT NULL "
                        "AND partner_id IS NOT NULL)", name="price"),
        Index("ix_membership_member_id_starts_at", "member_id", "starts_at"),
        Index("ix_membership_status_ends_at", "status", "ends_at"),
        # one current row per member: two purchases at once cannot both succeed
        Index("uq_membership_current", "member_id", unique=True,
              postgresql_where=text(_CURRENT_SQL), sqlite_where=text(_CURRENT_SQL)),
    )

    id: Mapped[PK]
    member_id: Mapped[int] = mapped_column(BigId, ForeignKey("member.id"))
    plan: Mapped[str] = mapped_column(String(32))
    plan_name: Mapped[str] = mapped_column(String(64))
    #: the earn multiplier bought, kept for the period whatever later rules say
    multiplier: Mapped[Decimal] = mapped_column(ExactDecimal(8, 4))
    status: Mapped[str] = mapped_column(String(16), default="active")
    auto_renew: Mapped[bool] = mapped_column(Boolean)
    starts_at: Mapped[Timestamp]
    ends_at: Mapped[Timestamp]
    period_months: Mapped[int] = mapped_column(Integer)
    paid_with: Mapped[str] = mapped_column(String(8))
    points: Mapped[Points]
    price_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal(24, 8))
    price_currency: Mapped[str | None] = mapped_column(String(3))
    #: the partner that took the money (a money purchase)
    partner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner.id"))
    #: the journal entry that paid for this period
    entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entry.id"), unique=True)
    #: the row this one renews
    renews_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("membership.id"),
                                                  unique=True)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    cancelled_at: Mapped[Timestamp | None]
    ended_at: Mapped[Timestamp | None]


_t = Membership.__table__.c


def in_force(member_id: Any, at: Any) -> Any:
    """SQL: the condition on ``membership`` for the member's rows in force at ``at``."""
    return and_(_t.member_id == member_id, _t.status.in_(IN_FORCE), _t.starts_at <= at,
                _t.ends_at > at)


def multiplier_in_force(member_id: Any) -> Any:
    """SQL, a scalar: the earn multiplier of the member's plan in force at the bound
    ``now`` (NULL without one), for a booking's first read to carry."""
    return (select(_t.multiplier).where(in_force(member_id, bindparam("now")))
            .order_by(_t.starts_at.desc()).limit(1).scalar_subquery())
