"""The tier rule, once: a member's qualifying points are the earns less the earn reversals
booked in the rolling 12 months, the member's own and those of every member merged into
it; the tier reached is the highest whose threshold they meet (the first tier, threshold 0,
is the floor). Upgrades happen at the earn that crosses a threshold
(:func:`upgrade`), downgrades in the daily job (:func:`downgrades`), and the member's own
view shows the same figure (:func:`qualifying_points`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, case, func, literal, or_, select, update
from sqlalchemy.orm import Session

from coalition.clock import add_months
from coalition.ledger.models import Entry, Member
from coalition.notifications.service import notify
from coalition.program.service import Rules

#: the tier year: qualifying points are those booked in the months before now
WINDOW_MONTHS = 12

_m = Member.__table__.c
_e = Entry.__table__.c
_QUALIFYING_KINDS = ("earn", "earn_reversal")
_SIGNED = case((_e.kind == "earn", _e.points), else_=-_e.points)


def window_start(now: datetime) -> datetime:
    return add_months(now, -WINDOW_MONTHS)


def _whose(member_id: int) -> Any:
    """SQL: the member and the members merged into it (a merge re-points a chain at the
    last survivor, so one level is all there is)."""
    return select(_m.id).where(or_(_m.id == member_id, _m.merged_into_id == member_id))


def qualifying_points(session: Session, member_id: int, now: datetime) -> tuple[int, datetime]:
    """The member's qualifying points at ``now`` (below zero when an earn from before the
    window was reversed in it), and the window's start."""
    since = window_start(now)
    points = session.scalar(
        select(func.coalesce(func.sum(_SIGNED), 0))
        .where(_e.member_id.in_(_whose(member_id)), _e.kind.in_(_QUALIFYING_KINDS),
               _e.booked_at > since))
    return int(points or 0), since


def qualifying_by_member(since: datetime, members: Sequence[int] | None = None) -> Any:
    """SQL: qualifying points per member (``member_id``, ``points``) booked after
    ``since``, the merged members' under their survivor: the daily job's set-based form of
    :func:`qualifying_points` (for ``members`` only, when given)."""
    owner = func.coalesce(_m.merged_into_id, _m.id)
    query = (select(owner.label("member_id"), func.sum(_SIGNED).label("points"))
             .select_from(Entry.__table__.join(Member.__table__, _m.id == _e.member_id))
             .where(_e.kind.in_(_QUALIFYING_KINDS), _e.booked_at > since)
             .group_by(owner))
    if members is not None:
        # the member's own entries and those of the members merged into it
        query = query.where(or_(_m.id.in_(members), _m.merged_into_id.in_(members)))
    return query


def reached(rules: Rules, points: int) -> str:
    """The code of the highest tier ``points`` qualify for."""
    return [t["code"] for t in rules["tiers"] if t["threshold"] <= max(points, 0)][-1]


def rank(rules: Rules, tier: str, *, unknown: int) -> int:
    """The tier's place in the program, lowest first (``unknown`` for a code it no longer
    has)."""
    codes = [t["code"] for t in rules["tiers"]]
    return codes.index(tier) if tier in codes else unknown


def rank_sql(rules: Rules, tier: Any, *, unknown: int) -> Any:
    """SQL: :func:`rank` of a tier column."""
    return case(*[(tier == t["code"], literal(i)) for i, t in enumerate(rules["tiers"])],
                else_=literal(unknown))


def reached_rank_sql(rules: Rules, points: Any) -> Any:
    """SQL: the rank of :func:`reached` for a points column."""
    tiers = list(enumerate(rules["tiers"]))
    return case(*[(points >= t["threshold"], literal(i)) for i, t in reversed(tiers)],
                else_=literal(0))


def multiplier(rules: Rules, tier: str) -> Decimal:
    """The tier's earn multiplier (1 for a code the program no longer has)."""
    for t in rules["tiers"]:
        if t["code"] == tier:
            return t["multiplier"]
    return Decimal(1)


def upgrade(session: Session, member_id: int, tier: str, rules: Rules, now: datetime) -> None:
    """Upgrade at the earn that crosses a threshold (downgrades are the daily job's), under
    the member's wallet lock; ``tier`` is the tier read before the lock was taken."""
    tiers = rules["tiers"]
    if len(tiers) < 2:
        return  # one tier: nothing to move up to
    # the tier as it is now, under the wallet lock: the daily job may have moved the
    # member down since ``tier`` was read
    tier = session.scalar(select(Member.tier).where(Member.id == member_id)) or tier
    current = rank(rules, tier, unknown=0)
    if tier in [t["code"] for t in tiers] and current == len(tiers) - 1:
        return
    points, _ = qualifying_points(session, member_id, now)
    target = reached(rules, points)
    if rank(rules, target, unknown=0) > current:
        session.execute(update(Member.__table__).where(_m.id == member_id)
                        .values(tier=target))
        tell(session, member_id, tier, target, rules, now)


def tell(session: Session, member_id: int, old: str, new: str, rules: Rules,
         now: datetime) -> None:
    """The member's notification of a move, once per move and day."""
    names = {t["code"]: t["name"] for t in rules["tiers"]}
    up = rank(rules, new, unknown=0) > rank(rules, old, unknown=0)
    notify(session, member_id, "tier_changed", f"tier:{now.date().isoformat()}:{old}>{new}",
           {"from": old, "to": new, "from_name": names.get(old, old),
            "to_name": names.get(new, new), "direction": "up" if up else "down"}, now)


def downgrades(session: Session, tiers: dict[int, str], rules: Rules,
               now: datetime) -> dict[int, tuple[str, str]]:
    """Move down each active member of ``tiers`` (member → the tier read under its wallet
    lock, which the caller holds) whose qualifying points at ``now`` reach a lower tier:
    one query for their points and one statement for the moves. Returns member →
    ``(from, to)`` for the members moved."""
    points = dict(session.execute(qualifying_by_member(window_start(now), list(tiers))).all())
    moved = {}
    for member_id, tier in tiers.items():
        target = reached(rules, int(points.get(member_id) or 0))
        if rank(rules, tier, unknown=len(rules["tiers"])) > rank(rules, target, unknown=0):
            moved[member_id] = (tier, target)
    if moved:
        session.execute(
            update(Member.__table__)
            .where(_m.id == bindparam("b_member"), _m.tier == bindparam("b_from"))
            .values(tier=bindparam("b_to")),
            [{"b_member": m, "b_from": old, "b_to": new} for m, (old, new) in moved.items()])
        for member_id, (old, new) in moved.items():
            tell(session, member_id, old, new, rules, now)
    return moved


def qualifying_by_member_at(moments: list[datetime]) -> Any:
    """SQL: qualifying points per member (``member_id``, then ``q0`` … one per moment) at
    each of ``moments``, the merged members' under their survivor: the set-based form of
    :func:`qualifying_points` for many moments at once (analytics' tiers at each month
    end). Entries are summed per member first (a plain grouping the database aggregates in
    parallel), then per survivor."""
    at = [func.coalesce(func.sum(_SIGNED).filter(_e.booked_at > window_start(moment),
                                                 _e.booked_at <= moment), 0).label(f"q{k}")
          for k, moment in enumerate(moments)]
    own = (select(_e.member_id, *at)
           .where(_e.kind.in_(_QUALIFYING_KINDS), _e.booked_at > window_start(moments[0]),
                  _e.booked_at <= moments[-1])
           .group_by(_e.member_id).subquery())
    owner = func.coalesce(_m.merged_into_id, _m.id)
    return (select(owner.label("member_id"),
                   *[func.sum(own.c[f"q{k}"]).label(f"q{k}") for k in range(len(at))])
            .select_from(own.join(Member.__table__, _m.id == own.c.member_id))
            .group_by(owner))
