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

from sqlalchemy import and_, bindparam, case, func, literal, or_, select, union_all, update
from sqlalchemy.orm import Session

from coalition.clock import add_months
from coalition.ledger.models import Entry, Member
from coalition.notifications.service import notify, notify_many
from coalition.program.service import Rules

#: the tier year: qualifying points are those booked in the months before now
WINDOW_MONTHS = 12

_m = Member.__table__.c
_e = Entry.__table__.c
QUALIFYING_KINDS = ("earn", "earn_reversal")
#: SQL: an entry's qualifying points: an earn's, less an earn reversal's, none (NULL) for
#: any other kind
QUALIFYING = case((_e.kind == "earn", _e.points), (_e.kind == "earn_reversal", -_e.points))


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
        select(func.coalesce(func.sum(QUALIFYING), 0))
        .where(_e.member_id.in_(_whose(member_id)), _e.kind.in_(QUALIFYING_KINDS),
               _e.booked_at > since))
    return int(points or 0), since


def _merged_by(moment: datetime, *, ever: bool) -> Any:
    """SQL: the member (``Member``) had been merged into another at ``moment`` (or at all,
    when ``ever``); a merge whose moment was not kept counts as long past."""
    merged = _m.merged_into_id.is_not(None)
    return merged if ever else and_(merged, or_(_m.merged_at.is_(None),
                                                _m.merged_at <= moment))


def qualifying_sums(moments: Sequence[datetime], *, open_ended: bool = False,
                    rows: Any = None) -> list[Any]:
    """SQL: a member's own qualifying points at each of ``moments`` (``q0`` …), as
    aggregates over entries grouped by member: those booked in the 12 months up to the
    moment (when ``open_ended``, those booked since the last moment's window start, up to
    whatever is booked). ``rows``: entries already read with their :data:`QUALIFYING`
    points (columns ``booked_at`` and ``qualifying``), so that a grouping over many moments
    works the kind out once an entry."""
    points, booked_at = ((QUALIFYING, _e.booked_at) if rows is None
                         else (rows.c.qualifying, rows.c.booked_at))
    last = len(moments) - 1
    return [func.coalesce(func.sum(points).filter(
        booked_at > window_start(moment),
        *([] if open_ended and k == last else [booked_at <= moment])), 0).label(f"q{k}")
        for k, moment in enumerate(moments)]


def qualifying_span(moments: Sequence[datetime], *, open_ended: bool = False) -> Any:
    """SQL: the entries :func:`qualifying_sums` may count (to limit the rows read)."""
    return and_(_e.booked_at > window_start(min(moments)),
                *([] if open_ended else [_e.booked_at <= max(moments)]))


def qualifying_by_member(moments: Sequence[datetime], members: Sequence[int] | None = None,
                         *, open_ended: bool = False, own: Any = None) -> Any:
    """SQL: qualifying points per member (``member_id``, then ``q0`` … one per moment) at
    each of ``moments``, those of a member merged into another by then under its survivor:
    the set-based form of :func:`qualifying_points`, for the daily job (one moment, open
    ended: everything booked since the window start, for ``members`` only when given) and
    analytics' tiers at each month end.

    The entries are summed per member first (a plain grouping the database aggregates in
    parallel), then per owner at each moment; ``own`` is that first step when the caller
    already reads the entries (``member_id`` and :func:`qualifying_sums`)."""
    n = len(moments)
    if own is None:
        own = (select(_e.member_id, *qualifying_sums(moments, open_ended=open_ended))
               .where(_e.kind.in_(QUALIFYING_KINDS),
                      qualifying_span(moments, open_ended=open_ended))
               .group_by(_e.member_id))
        if members is not None:
            # the member's own entries and those of the members merged into it
            own = own.where(_e.member_id.in_(select(_m.id).where(
                or_(_m.id.in_(members), _m.merged_into_id.in_(members)))))
    own = own.subquery()
    merged = [_merged_by(moment, ever=open_ended and k == n - 1)
              for k, moment in enumerate(moments)]
    rows = own.join(Member.__table__, _m.id == own.c.member_id)
    both = union_all(
        select(_m.id.label("member_id"),
               *[case((merged[k], 0), else_=own.c[f"q{k}"]).label(f"q{k}") for k in range(n)])
        .select_from(rows),
        select(_m.merged_into_id.label("member_id"),
               *[case((merged[k], own.c[f"q{k}"]), else_=0).label(f"q{k}") for k in range(n)])
        .select_from(rows).where(_m.merged_into_id.is_not(None))).subquery()
    return (select(both.c.member_id, *[func.sum(both.c[f"q{k}"]).label(f"q{k}")
                                       for k in range(n)])
            .group_by(both.c.member_id))


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


def _told(member_id: int, old: str, new: str, rules: Rules,
          now: datetime) -> tuple[int, str, str, dict[str, Any]]:
    """The notification of a move, keyed once per move and day."""
    names = {t["code"]: t["name"] for t in rules["tiers"]}
    up = rank(rules, new, unknown=0) > rank(rules, old, unknown=0)
    return (member_id, "tier_changed", f"tier:{now.date().isoformat()}:{old}>{new}",
            {"from": old, "to": new, "from_name": names.get(old, old),
             "to_name": names.get(new, new), "direction": "up" if up else "down"})


def tell(session: Session, member_id: int, old: str, new: str, rules: Rules,
         now: datetime) -> None:
    """The member's notification of a move, once per move and day."""
    notify(session, *_told(member_id, old, new, rules, now), now)


def downgrades(session: Session, tiers: dict[int, str], rules: Rules,
               now: datetime) -> dict[int, tuple[str, str]]:
    """Move down each active member of ``tiers`` (member → the tier read under its wallet
    lock, which the caller holds) whose qualifying points at ``now`` reach a lower tier:
    one query for their points and one statement for the moves. Returns member →
    ``(from, to)`` for the members moved."""
    points = dict(session.execute(qualifying_by_member([now], list(tiers), open_ended=True)).all())
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
        notify_many(session, [_told(member_id, old, new, rules, now)
                              for member_id, (old, new) in moved.items()], now)
    return moved
