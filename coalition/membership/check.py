"""``coalition ledger check``: what paid memberships add to the ledger's invariants.

* every ``membership`` entry pays for exactly one membership period, and every period is
  paid by one: with points (the entry's points, no partner, coalition:membership credited
  by them) or with money (the entry carries the price, at the partner that took it, and
  moves no points); the entry is the member's (or a member's merged into it);
* a ``renewed`` period is continued by exactly one period starting where it ends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from coalition.ledger.check import CheckResult
from coalition.ledger.models import Entry, Member, Posting
from coalition.membership.models import Membership

_t = Membership.__table__.c
_e = Entry.__table__.c
_p = Posting.__table__.c
_m = Member.__table__.c


def memberships_agree(conn: Connection, limit: int) -> CheckResult:
    result = CheckResult(
        "memberships_agree",
        "every membership entry pays for one membership period, as much as the period "
        "cost, and every renewed period is continued",
        {"memberships": conn.scalar(select(func.count()).select_from(Membership.__table__))
         or 0})
    found: list[dict[str, Any]] = []

    credited = (select(_p.entry_id, func.sum(_p.points).label("points"))
                .where(_p.account == "coalition:membership").group_by(_p.entry_id)
                .subquery())
    owner = func.coalesce(_m.merged_into_id, _m.id)
    paid_right = or_(
        and_(_t.paid_with == "points", _e.points == _t.points, _e.partner_id.is_(None),
             func.coalesce(credited.c.points, 0) == _t.points),
        and_(_t.paid_with == "money", _e.points == 0, _e.partner_id == _t.partner_id,
             _e.spend_amount == _t.price_amount, _e.spend_currency == _t.price_currency,
             credited.c.points.is_(None)))
    for row in conn.execute(
        select(_t.id.label("membership_id"), _t.member_id, _t.paid_with, _t.points,
               _t.price_amount, _e.id.label("entry_id"), _e.kind, _e.points.label("entry_points"),
               _e.spend_amount, credited.c.points.label("credited"))
        .select_from(Membership.__table__
                     .outerjoin(Entry.__table__, _e.id == _t.entry_id)
                     .outerjoin(Member.__table__, _m.id == _e.member_id)
                     .outerjoin(credited, credited.c.entry_id == _e.id))
        .where(or_(_e.id.is_(None), _e.kind != "membership", owner != _t.member_id,
                   ~paid_right))
        .order_by(_t.id).limit(limit)
    ).mappings():
        found.append({"problem": "membership period and the entry that paid for it "
                                 "disagree", **row})

    for row in conn.execute(
        select(_e.id.label("entry_id"), _e.member_id, _e.points)
        .where(_e.kind == "membership",
               ~select(_t.id).where(_t.entry_id == _e.id).exists())
        .order_by(_e.id).limit(limit)
    ).mappings():
        found.append({"problem": "membership entry pays for no membership period", **row})

    after = Membership.__table__.alias("next")
    nxt = after.c
    for row in conn.execute(
        select(_t.id.label("membership_id"), _t.member_id, _t.ends_at,
               nxt.id.label("next_id"), nxt.starts_at.label("next_starts_at"))
        .select_from(Membership.__table__.outerjoin(after, nxt.renews_id == _t.id))
        .where(or_(and_(_t.status == "renewed",
                        or_(nxt.id.is_(None), nxt.starts_at != _t.ends_at)),
                   and_(_t.status != "renewed", nxt.id.is_not(None))))
        .order_by(_t.id).limit(limit)
    ).mappings():
        found.append({"problem": "a renewed period is not continued where it ends "
                                 "(or one not renewed is)", **row})
    result.found(len(found), found[:limit])
    return result
