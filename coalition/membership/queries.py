"""What a membership looks like to its member and to whoever decides on benefits.

:func:`active_plan` is the one question other use cases ask (a member-only reward, an
offer for members of a plan): the plan in force for a member at a moment, or ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition.db import read
from coalition.ledger.models import Member
from coalition.membership.models import CURRENT, IN_FORCE, Membership, in_force
from coalition.models import Partner
from coalition.money import round_money

_t = Membership.__table__.c


@dataclass(frozen=True)
class ActivePlan:
    """A member's plan in force: its code and name, the multiplier bought, and until
    when the period paid for lasts."""

    code: str
    name: str
    multiplier: Decimal
    ends_at: datetime
    auto_renew: bool
    cancelled: bool


def active_plan(session: Session, member_id: int, at: datetime) -> ActivePlan | None:
    """The member's plan in force at ``at`` (a cancelled one stays in force to the end of
    its period; a closure ends it), or ``None``."""
    row = session.execute(
        select(_t.plan, _t.plan_name, _t.multiplier, _t.ends_at, _t.auto_renew, _t.status)
        .where(in_force(member_id, at)).order_by(_t.starts_at.desc()).limit(1)).first()
    if row is None:
        return None
    return ActivePlan(row.plan, row.plan_name, row.multiplier, row.ends_at,
                      row.auto_renew and row.status == "active", row.status == "cancelled")


def current_row(session: Session, member_id: int) -> Membership | None:
    """The member's current row (``active`` or ``cancelled``), whether or not its period
    is over yet; read under the member's wallet lock by those who change it."""
    return session.scalar(select(Membership).where(
        Membership.member_id == member_id, Membership.status.in_(CURRENT)))


def render(session: Session, row: Membership, now: datetime) -> dict[str, Any]:
    partner = (None if row.partner_id is None else
               session.scalar(select(Partner.code).where(Partner.id == row.partner_id)))
    number = session.scalar(select(Member.member_number).where(Member.id == row.member_id))
    return {
        "id": row.id, "member_number": number, "plan": row.plan, "name": row.plan_name,
        "status": row.status,
        "in_force": row.status in IN_FORCE and row.starts_at <= now < row.ends_at,
        "auto_renew": row.auto_renew and row.status == "active",
        "starts_at": row.starts_at, "ends_at": row.ends_at,
        "period_months": row.period_months, "multiplier": row.multiplier,
        "paid_with": row.paid_with, "points": row.points if row.paid_with == "points" else None,
        "price": None if row.price_amount is None or row.price_currency is None else {
            "amount": round_money(row.price_amount, row.price_currency),
            "currency": row.price_currency},
        "partner": partner, "entry_id": row.entry_id,
        "cancelled_at": row.cancelled_at, "ended_at": row.ended_at,
    }


def memberships_of(member_id: int, now: datetime) -> dict[str, Any]:
    """The member's current membership (if any) and every period, newest first."""
    with read() as session:
        rows = list(session.scalars(select(Membership).where(Membership.member_id == member_id)
                                    .order_by(Membership.starts_at.desc(),
                                              Membership.id.desc())))
        listed = [render(session, row, now) for row in rows]
    current = next((m for m in listed if m["status"] in CURRENT), None)
    return {"current": current, "memberships": listed}
