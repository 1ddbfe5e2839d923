"""The daily job: birthday bonuses, tier downgrades, notices of points about to expire,
paid memberships renewed or lapsed (:mod:`coalition.membership.renewal`), and vouchers left
unused past their expiry (refunded or forfeited by the program's rule,
:mod:`coalition.catalog.expiry`) for a day; safe to rerun.

Candidates are found with set-based queries (keyset pages of
:data:`~coalition.ledger.batch.BATCH` members); each page is then handled in one
transaction under its members' wallet locks (:mod:`coalition.ledger.batch`), where the
decision is made again from what is committed, so a second run (or two runs at once)
changes nothing twice, a booking racing the job is neither lost nor doubled, a crash loses
at most the page in hand, and a member that cannot be handled is reported while the others
are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select

from coalition import clock
from coalition.catalog.expiry import close_expired
from coalition.db import UnitOfWork, Units, read
from coalition.ledger import tiers
from coalition.ledger.batch import BATCH, Batch, run_pages
from coalition.ledger.bonuses import birthday_conditions, grant_birthdays
from coalition.ledger.expiring import by_date
from coalition.ledger.models import Lot, Member
from coalition.membership.renewal import renew_or_lapse
from coalition.notifications.service import notify
from coalition.program.service import Rules, rules_in_force

_m = Member.__table__.c
_lot = Lot.__table__.c

#: days before an expiry date that the member is told, widest first: a date within the
#: narrower notice is told once, as that one (a member is never told twice in one run)
EXPIRY_NOTICES = (30, 7)

#: ``progress(step, done, total)``: before the step's first member and after each batch
Progress = Callable[[str, int, int], None]


@dataclass
class DailySummary:
    as_of: date
    birthday_members: int = 0
    birthday_points: int = 0
    tier_members_checked: int = 0
    tier_downgrades: int = 0
    #: ``{"gold>silver": 3}``: members moved down, by from and to tier
    downgrades: dict[str, int] = field(default_factory=dict)
    #: notifications of points about to expire written by this run (a rerun writes none)
    expiry_notices: int = 0
    memberships_renewed: int = 0
    membership_points: int = 0
    memberships_lapsed: int = 0
    #: ``{"no_auto_renew": 2}``: memberships that lapsed, by why
    membership_lapses: dict[str, int] = field(default_factory=dict)
    vouchers_refunded: int = 0
    voucher_points_refunded: int = 0
    vouchers_forfeited: int = 0
    #: members the job could not handle, with why
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def daily(as_of: date, progress: Progress | None = None, *,
          units: Units = UnitOfWork, batch: int = BATCH, workers: int = 1) -> DailySummary:
    """Birthday bonuses, tier downgrades, expiry notices and memberships ending on ``as_of``
    (a UTC date),
    ``batch`` members per transaction, ``workers`` transactions at once; safe to rerun."""
    summary = DailySummary(as_of=as_of)
    _birthdays(as_of, summary, progress, units, batch, workers)
    _downgrades(as_of, summary, progress, units, batch, workers)
    _expiry_notices(as_of, summary, progress, units, batch)
    renewals = renew_or_lapse(as_of, units=units, batch=batch, workers=workers)
    summary.memberships_renewed = renewals.renewed
    summary.membership_points = renewals.renewed_points
    summary.memberships_lapsed = renewals.lapsed
    summary.membership_lapses = renewals.lapses
    summary.failures += [{"member_id": m, "step": "membership", "error": why}
                         for m, why in renewals.failures.items()]
    # vouchers that expired by the end of the day (never later than now: a till may still
    # use one until its expiry)
    closed = close_expired(min(datetime.combine(as_of + timedelta(days=1), time(), UTC),
                               clock.utcnow()), units=units)
    summary.vouchers_refunded = closed.refunded
    summary.voucher_points_refunded = closed.refunded_points
    summary.vouchers_forfeited = closed.forfeited
    summary.failures.sort(key=lambda failure: failure["member_id"])
    return summary


def _birthdays(as_of: date, summary: DailySummary, progress: Progress | None,
               units: Units, batch: int, workers: int) -> None:
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

    def pages() -> Iterator[list[int]]:
        after = 0
        while True:
            with read() as session:
                page = list(session.scalars(select(_m.id).where(*conditions, _m.id > after)
                                            .order_by(_m.id).limit(batch)))
            if not page:
                return
            yield page
            after = page[-1]

    done = 0
    for page, granted, failures in run_pages(
            pages(), lambda members: grant_birthdays(members, as_of, points, units=units),
            workers=workers):
        count = sum(len(members) for members in granted)
        summary.birthday_members += count
        summary.birthday_points += count * points
        summary.failures += [{"member_id": m, "step": "birthday", "error": why}
                             for m, why in sorted(failures.items())]
        done += len(page)
        if progress:
            progress("birthdays", done, max(total, done))


def _downgrades(as_of: date, summary: DailySummary, progress: Progress | None,
                units: Units, batch: int, workers: int) -> None:
    """Move down every active member whose qualifying points over the 12 months before
    ``as_of`` no longer reach their tier (upgrades happen at earn time)."""
    with read() as session:
        rules = rules_in_force(session)
    first = rules["tiers"][0]["code"]
    now = datetime.combine(as_of, time(), UTC)
    qualifying = tiers.qualifying_by_member([now], open_ended=True).subquery()
    points = func.coalesce(qualifying.c.q0, 0)
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
    pages = (candidates[start:start + batch] for start in range(0, len(candidates), batch))
    done = 0
    for page, moved, failures in run_pages(
            pages, lambda members: _downgrade(members, rules, now, units), workers=workers):
        for changes in moved:
            for step in changes.values():
                summary.tier_downgrades += 1
                name = f"{step[0]}>{step[1]}"
                summary.downgrades[name] = summary.downgrades.get(name, 0) + 1
        summary.failures += [{"member_id": m, "step": "tier", "error": why}
                             for m, why in sorted(failures.items())]
        done += len(page)
        if progress:
            progress("tiers", done, len(candidates))


def _downgrade(member_ids: list[int], rules: Rules, now: datetime,
               units: Units) -> dict[int, tuple[str, str]]:
    """Under the wallet locks (which every earn takes before it upgrades), decide again
    from the committed earns, and move down the members that no longer qualify."""
    with units() as uow:
        session = uow.session
        locked = Batch.lock(session, member_ids)
        active = dict(session.execute(
            select(_m.id, _m.tier).where(_m.id.in_(locked.members), _m.status == "active")
        ).all())
        moved = tiers.downgrades(session, active, rules, now)
        uow.commit()
        return moved


def _expiry_notices(as_of: date, summary: DailySummary, progress: Progress | None,
                    units: Units, batch: int) -> None:
    """Tell each active member of the points that expire on each date in the next
    :data:`EXPIRY_NOTICES` days: one notification per member, date and notice
    (``expiry:2027-01-31:30``), written at most once however often the job runs, and with
    how many points expire then (as of this run). A date 7 days or less away is told as the
    7-day notice only; a day the job did not run is caught up by the next run."""
    start = datetime.combine(as_of + timedelta(days=1), time(), UTC)
    end = datetime.combine(as_of + timedelta(days=max(EXPIRY_NOTICES) + 1), time(), UTC)
    expiring = [_lot.state == "live", _lot.remaining > 0, _lot.expires_at >= start,
                _lot.expires_at < end]
    members = (select(_lot.member_id).distinct()
               .join(Member.__table__, _m.id == _lot.member_id)
               .where(*expiring, _m.status == "active"))
    with read() as session:
        total = session.scalar(select(func.count()).select_from(members.subquery())) or 0
    if progress:
        progress("expiry notices", 0, total)
    after, done = 0, 0
    while True:
        with read() as session:
            page = list(session.scalars(members.where(_lot.member_id > after)
                                        .order_by(_lot.member_id).limit(batch)))
        if not page:
            return
        summary.expiry_notices += _notify_expiring(page, as_of, expiring, units)
        after, done = page[-1], done + len(page)
        if progress:
            progress("expiry notices", done, max(total, done))


def _notify_expiring(member_ids: list[int], as_of: date, expiring: list[Any],
                     units: Units) -> int:
    """One page: the members' live points by expiry moment, summed per UTC date, each
    date told once per notice."""
    written = 0
    with units() as uow:
        session = uow.session
        moments: dict[int, list[tuple[datetime, int]]] = {}
        for member_id, moment, points in session.execute(
                select(_lot.member_id, _lot.expires_at, func.sum(_lot.remaining))
                .where(*expiring, _lot.member_id.in_(member_ids))
                .group_by(_lot.member_id, _lot.expires_at)
                .order_by(_lot.member_id, _lot.expires_at)):
            moments.setdefault(member_id, []).append((moment, int(points)))
        for member_id, rows in moments.items():
            for day in by_date(rows, limit=max(EXPIRY_NOTICES) + 1):
                days = (day["date"] - as_of).days
                notice = min(n for n in EXPIRY_NOTICES if days <= n)
                written += notify(
                    session, member_id, "points_expiring",
                    f"expiry:{day['date'].isoformat()}:{notice}",
                    {"points": day["points"], "date": day["date"].isoformat(),
                     "days": days, "expires_at": day["expires_at"].isoformat()})
        uow.commit()
    return written
