"""The daily job: birthday bonuses and tier downgrades for a day; safe to rerun."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import func, select

from coalition.db import UnitOfWork, Units, read, run_with_retries
from coalition.errors import CoalitionError
from coalition.ledger import tiers
from coalition.ledger.bonuses import birthday_conditions, grant_birthday
from coalition.ledger.journal import LedgerInconsistency
from coalition.ledger.lookup import lock_members, member_state
from coalition.ledger.models import Member
from coalition.program.service import Rules, rules_in_force

_m = Member.__table__.c


#: members handled per candidate query of the daily job (keyset pages)
PAGE = 500


Progress = Callable[[str, int, int], None]
T = TypeVar("T")


@dataclass
class DailySummary:
    as_of: date
    birthday_members: int = 0
    birthday_points: int = 0
    tier_members_checked: int = 0
    tier_downgrades: int = 0
    #: ``{"gold>silver": 3}``: members moved down, by from and to tier
    downgrades: dict[str, int] = field(default_factory=dict)
    #: members the job could not handle, with why
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def daily(as_of: date, progress: Progress | None = None, *,
          units: Units = UnitOfWork) -> DailySummary:
    """Birthday bonuses and tier downgrades for ``as_of`` (a UTC date); safe to rerun.

    Candidates are found with set-based queries; each member is then handled in a
    transaction of its own under the member's wallet lock, where the decision is made
    again from what is committed, so a second run (or two runs at once) changes nothing
    twice and a crash loses at most the member in hand.
    """
    summary = DailySummary(as_of=as_of)
    _birthdays(as_of, summary, progress, units)
    _downgrades(as_of, summary, progress, units)
    return summary


def _each(summary: DailySummary, step: str, member_id: int, work: Callable[[], T]) -> T | None:
    """Run one member's ``step`` (its own unit of work, retried on a conflict); a refusal
    or an inconsistency is that member's failure, and the job goes on."""
    try:
        return run_with_retries(work)
    except (CoalitionError, LedgerInconsistency) as exc:
        summary.failures.append({"member_id": member_id, "step": step, "error": str(exc)})
        return None


def _birthdays(as_of: date, summary: DailySummary, progress: Progress | None,
               units: Units) -> None:
    with read() as session:
        rules = rules_in_force(session)
    points = rules["bonuses"]["birthday"]
    if not points:
        return
    conditions = birthday_conditions(as_of)
    with read() as session:
        total = session.scalar(select(func.count()).where(*conditions)) or 0
    if progress:
        progress("birthdays", 0, total)
    after = 0
    done = 0
    while True:
        with read() as session:
            page = list(session.scalars(select(_m.id).where(*conditions, _m.id > after)
                                        .order_by(_m.id).limit(PAGE)))
        if not page:
            break
        for member_id in page:
            granted = _each(summary, "birthday", member_id,
                            partial(grant_birthday, member_id, as_of, points, units=units))
            if granted:
                summary.birthday_members += 1
                summary.birthday_points += points
            done += 1
            if progress:
                progress("birthdays", done, max(total, done))
        after = page[-1]


def _downgrades(as_of: date, summary: DailySummary, progress: Progress | None,
                units: Units) -> None:
    """Move down every active member whose qualifying points over the 12 months before
    ``as_of`` no longer reach their tier (upgrades happen at earn time)."""
    with read() as session:
        rules = rules_in_force(session)
    first = rules["tiers"][0]["code"]
    now = datetime.combine(as_of, time(), UTC)
    qualifying = tiers.qualifying_by_member(tiers.window_start(now)).subquery()
    points = func.coalesce(qualifying.c.points, 0)
    current = tiers.rank_sql(rules, _m.tier, unknown=len(rules["tiers"]))
    due = (
        select(_m.id)
        .select_from(Member.__table__.outerjoin(qualifying,
                                                qualifying.c.member_id == _m.id))
        .where(_m.status == "active", _m.tier != first,
               current > tiers.reached_rank_sql(rules, points))
    )
    with read() as session:
        summary.tier_members_checked = session.scalar(
            select(func.count()).where(_m.status == "active", _m.tier != first)
        ) or 0
        candidates = list(session.scalars(due.order_by(_m.id)))
    if progress:
        progress("tiers", 0, len(candidates))
    for done, member_id in enumerate(candidates, 1):
        moved = _each(summary, "tier", member_id,
                      partial(_downgrade, member_id, rules, now, units))
        if moved:
            summary.tier_downgrades += 1
            step = f"{moved[0]}>{moved[1]}"
            summary.downgrades[step] = summary.downgrades.get(step, 0) + 1
        if progress:
            progress("tiers", done, len(candidates))


def _downgrade(member_id: int, rules: Rules, now: datetime,
               units: Units) -> tuple[str, str] | None:
    """Under the wallet lock (which every earn takes before it upgrades), decide again
    from the committed earns, and move the member down if they no longer qualify."""
    with units() as uow:
        session = uow.session
        lock_members(session, member_id)
        member = member_state(session, member_id)
        if member.status != "active":
            return None
        reached = tiers.downgrade(session, member_id, member.tier, rules, now)
        if reached is None:
            return None
        uow.commit()
        return member.tier, reached
