"""Renewal and lapse, a step of the daily job (``coalition daily``).

On the day a period ends, each current membership (``active`` or ``cancelled``) ending
before the next midnight is decided: one the member left on auto-renew, whose plan is still
on sale for points and who has the points, is renewed (a ``membership`` entry as for a
purchase with points, and a new row starting where the old one ends, so the benefits never
stop); any other lapses (in force to the end of its period). The member is told either way.

Candidates are found by one query over the index on (status, ends_at); each page of
members is then decided in one transaction under their wallet locks, from the rows as
committed, so a rerun (or two runs at once, or a run killed half way) renews nothing twice:
a renewed row is ``renewed`` and its successor ``renews_id`` it (unique).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition.db import UnitOfWork, Units, read
from coalition.ledger.batch import BATCH, Batch, run_pages
from coalition.ledger.lookup import member_state
from coalition.membership.models import CURRENT, Membership
from coalition.membership.plans import Plan, plans
from coalition.membership.purchase import pay_with_points, start
from coalition.notifications.service import notify
from coalition.program.service import rules_in_force

_t = Membership.__table__.c


@dataclass
class RenewalSummary:
    renewed: int = 0
    renewed_points: int = 0
    lapsed: int = 0
    #: ``{"no_auto_renew": 2, "insufficient_points": 1}``: lapses by why
    lapses: dict[str, int] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


def due_before(as_of: date) -> datetime:
    """The memberships decided on ``as_of`` end before this moment (the next midnight)."""
    return datetime.combine(as_of + timedelta(days=1), time(), UTC)


def _due_members(until: datetime, batch: int) -> Iterator[list[int]]:
    after = 0
    while True:
        with read() as session:
            page = list(session.scalars(
                select(_t.member_id).where(_t.status.in_(CURRENT), _t.ends_at < until,
                                           _t.member_id > after)
                .order_by(_t.member_id).limit(batch)))
        if not page:
            return
        yield page
        after = page[-1]


def _lapse(session: Session, row: Membership, why: str, now: datetime) -> None:
    row.status = "lapsed"
    session.flush()
    notify(session, row.member_id, "membership", f"membership:{row.id}:lapsed", {
        "event": "lapsed", "reason": why, "plan": row.plan, "name": row.plan_name,
        "ends_at": row.ends_at.isoformat()}, now=now)


def _decide(session: Session, row: Membership, plan: Plan | None, available: int,
            now: datetime) -> tuple[str, int]:
    """Renew or lapse one row, under its member's wallet lock (``available``: the points
    read under it): ``("renewed", points)`` or ``("lapsed:<why>", 0)``."""
    member = member_state(session, row.member_id)
    if member.status != "active":
        row.status, row.ended_at = "ended", now
        session.flush()
        return "lapsed:member_" + member.status, 0
    why = ("cancelled" if row.status == "cancelled" else
           "no_auto_renew" if not row.auto_renew else
           "plan_withdrawn" if plan is None or plan.price_points is None else
           "insufficient_points" if available < plan.price_points else None)
    if why is not None:
        _lapse(session, row, why, now)
        return f"lapsed:{why}", 0
    assert plan is not None and plan.price_points is not None
    entry_id, _ = pay_with_points(session, member, plan, now)
    row.status = "renewed"
    session.flush()
    start(session, member, plan, now=now, entry_id=entry_id, auto_renew=True,
          paid_with="points", renews=row)
    return "renewed", plan.price_points


def _renew_page(member_ids: list[int], until: datetime,
                units: Units) -> list[tuple[str, int]]:
    with units() as uow:
        session = uow.session
        locked = Batch.lock(session, member_ids)
        on_sale = {plan.code: plan for plan in plans(rules_in_force(session))}
        rows = list(session.scalars(select(Membership).where(
            Membership.member_id.in_(locked.members), Membership.status.in_(CURRENT),
            Membership.ends_at < until).order_by(Membership.member_id)))
        outcomes = [_decide(session, row, on_sale.get(row.plan),
                            locked.balances[row.member_id].available, locked.now)
                    for row in rows]
        uow.commit()
        return outcomes


def renew_or_lapse(as_of: date, *, units: Units = UnitOfWork, batch: int = BATCH,
                   workers: int = 1) -> RenewalSummary:
    """Decide every current membership ending before the midnight after ``as_of``."""
    summary = RenewalSummary()
    until = due_before(as_of)
    for _page, results, failures in run_pages(
            _due_members(until, batch), lambda members: _renew_page(members, until, units),
            workers=workers):
        for outcomes in results:
            for outcome, points in outcomes:
                if outcome == "renewed":
                    summary.renewed += 1
                    summary.renewed_points += points
                else:
                    summary.lapsed += 1
                    why = outcome.split(":", 1)[1]
                    summary.lapses[why] = summary.lapses.get(why, 0) + 1
        summary.failures.update(failures)
    return summary
