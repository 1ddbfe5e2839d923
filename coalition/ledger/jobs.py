"""The expiry job: holds past their expiry, pending points that became spendable, and
points that expired under the program's expiry policy.

``expire(as_of)`` finds the members with something due in set-based queries and then
settles each member in a transaction of its own (retried on a transient conflict), so a
run never holds more than one member's wallet lock, a crash loses at most the member in
hand, and running again finishes the job. Everything it does is decided by the state it
finds under the member's wallet lock, so a second run with the same ``as_of`` (or two runs
at once) books nothing twice::

    summary = expire(clock.utcnow())

For each member, in this order (so that points a voided hold returns, and points released
from pending, are themselves expired when they are due):

1. open holds with ``expires_at <= as_of`` are voided (``hold_void``, note ``expired``,
   hold status ``expired``), returning the held points to the lots they came from;
2. pending lots with ``pending_until <= as_of`` become live (one ``release`` entry);
3. live lots are expired (one ``expiry`` entry, points to ``coalition:breakage``): under
   the ``fixed`` policy those with ``expires_at <= as_of``; under ``inactivity`` all of
   them once ``last_activity_at + months <= as_of``.

The job's own entries are not member activity: they never move ``last_activity_at``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Select, exists, func, select, union, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from coalition import clock
from coalition.clock import add_months
from coalition.db import UnitOfWork, read, run_with_retries
from coalition.ledger import journal
from coalition.ledger.journal import LedgerInconsistency, Take
from coalition.ledger.models import Hold, Lot, LotMovement, Member, Wallet
from coalition.ledger.voiding import void_hold
from coalition.program.service import load_rules

#: members settled per candidate query (keyset pages, so memory stays flat)
PAGE = 500

#: ``progress(done, total)``: called once before the first member and after each one
Progress = Callable[[int, int], None]

_hold = Hold.__table__.c
_lot = Lot.__table__.c
_wallet = Wallet.__table__.c
_member = Member.__table__.c
_movement = LotMovement.__table__.c


@dataclass
class ExpirySummary:
    as_of: datetime
    policy: str
    #: members examined (a candidate may turn out to have nothing due under its lock)
    members: int = 0
    holds_voided: int = 0
    points_unheld: int = 0
    members_released: int = 0
    lots_released: int = 0
    points_released: int = 0
    members_expired: int = 0
    lots_expired: int = 0
    points_expired: int = 0
    #: members the job could not settle (their state disagreed with itself)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Settled:
    holds: int = 0
    unheld: int = 0
    lots_released: int = 0
    released: int = 0
    lots_expired: int = 0
    expired: int = 0


@dataclass(frozen=True)
class _Policy:
    name: str
    months: int | None

    @classmethod
    def of(cls, expiry: dict[str, Any]) -> _Policy:
        return cls(expiry["policy"], expiry.get("months"))


# --------------------------------------------------------------------------- the run


def expire(as_of: datetime, progress: Progress | None = None) -> ExpirySummary:
    """Void expired holds, release pending points and expire points, as of ``as_of``.

    ``booked_at`` of every entry is the server clock; ``occurred_at`` is ``as_of``.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    with read() as session:
        policy = _Policy.of(load_rules(session)["expiry"])
        total = session.scalar(select(func.count()).select_from(
            _candidates(as_of, policy).subquery())) or 0
    summary = ExpirySummary(as_of=as_of, policy=policy.name)
    if progress:
        progress(0, total)
    after: int | None = None
    while True:
        with read() as session:
            query = _candidates(as_of, policy, after=after)
            page = list(session.scalars(query.order_by("member_id").limit(PAGE)))
        if not page:
            break
        for member_id in page:
            try:
                done = run_with_retries(partial(_settle, member_id, as_of, policy))
            except LedgerInconsistency as exc:
                summary.failures.append({"member_id": member_id, "error": str(exc)})
                done = _Settled()
            _add(summary, done)
            summary.members += 1
            if progress:
                progress(summary.members, max(total, summary.members))
        after = page[-1]
    return summary


def _add(summary: ExpirySummary, done: _Settled) -> None:
    summary.holds_voided += done.holds
    summary.points_unheld += done.unheld
    summary.lots_released += done.lots_released
    summary.points_released += done.released
    summary.members_released += 1 if done.released else 0
    summary.lots_expired += done.lots_expired
    summary.points_expired += done.expired
    summary.members_expired += 1 if done.expired else 0


def _candidates(as_of: datetime, policy: _Policy, after: int | None = None) -> Select[Any]:
    """Members with anything that may be due: one set-based query, no lots in Python.

    A candidate is only a suspicion; :func:`_settle` decides under the wallet lock.
    """

    def arm(member_column: Any, *conditions: Any) -> Select[Any]:
        if after is not None:
            conditions += (member_column > after,)
        return select(member_column.label("member_id")).where(*conditions)

    arms = [
        arm(_hold.member_id, _hold.status == "open", _hold.expires_at <= as_of),
        arm(_lot.member_id, _lot.state == "pending", _lot.pending_until <= as_of),
    ]
    if policy.name == "fixed" and policy.months:
        arms.append(arm(_lot.member_id, _lot.state == "live", _lot.remaining > 0,
                        _lot.expires_at <= as_of))
    elif policy.name == "inactivity" and policy.months:
        # add_months clamps to the month's end, so someone last active on the 31st may be
        # due a few days after as_of − months: over-select, then decide exactly per member
        cutoff = add_months(as_of, -policy.months) + timedelta(days=3)
        arms.append(
            arm(_wallet.member_id,
                func.coalesce(_wallet.last_activity_at, _member.created_at) <= cutoff,
                exists().where(_lot.member_id == _wallet.member_id, _lot.state == "live",
                               _lot.remaining > 0))
            .join_from(Wallet.__table__, Member.__table__, _member.id == _wallet.member_id)
        )
    due = union(*arms).subquery()
    return select(due.c.member_id)


# --------------------------------------------------------------------------- one member


def _settle(member_id: int, as_of: datetime, policy: _Policy) -> _Settled:
    """Everything due for one member, in one transaction under the member's wallet lock."""
    with UnitOfWork() as uow:
        session = uow.session
        now = clock.utcnow()
        try:
            journal.lock_wallet(session, member_id)
        except NoResultFound as exc:
            raise LedgerInconsistency(f"member {member_id} has no wallet") from exc
        holds, unheld = _void_expired_holds(session, member_id, as_of, now)
        lots_released, released = _release(session, member_id, as_of, now)
        lots_expired, expired = _expire_lots(session, member_id, as_of, now, policy)
        uow.commit()
    return _Settled(holds, unheld, lots_released, released, lots_expired, expired)


def _void_expired_holds(session: Session, member_id: int, as_of: datetime,
                        now: datetime) -> tuple[int, int]:
    holds = session.scalars(
        select(Hold).where(_hold.member_id == member_id, _hold.status == "open",
                           _hold.expires_at <= as_of)
        .order_by(_hold.expires_at, _hold.id)
    ).all()
    # a lot that expired while some of its points were held takes them back as live
    # points (apply_takes revives it); step 3 expires them again when they are due
    for hold in holds:
        void_hold(session, hold, now, status="expired", note="expired", occurred_at=as_of)
    return len(holds), sum(hold.points for hold in holds)


def _release(session: Session, member_id: int, as_of: datetime,
             now: datetime) -> tuple[int, int]:
    lots = session.execute(
        select(_lot.id, _lot.remaining)
        .where(_lot.member_id == member_id, _lot.state == "pending",
               _lot.pending_until <= as_of)
    ).all()
    points = journal.release_lots(session, member_id, [tuple(row) for row in lots], now,
                                  occurred_at=as_of)
    return sum(1 for _, remaining in lots if remaining), points


def _expire_lots(session: Session, member_id: int, as_of: datetime, now: datetime,
                 policy: _Policy) -> tuple[int, int]:
    if policy.name == "none" or not policy.months:
        return 0, 0
    conditions = [_lot.member_id == member_id, _lot.state == "live", _lot.remaining > 0]
    if policy.name == "fixed":
        conditions.append(_lot.expires_at <= as_of)
    else:
        last, created = session.execute(
            select(_wallet.last_activity_at, _member.created_at)
            .join(Member.__table__, _member.id == _wallet.member_id)
            .where(_wallet.member_id == member_id)
        ).one()
        if add_months(last or created, policy.months) > as_of:
            return 0, 0
    lots = session.execute(
        select(_lot.id, _lot.origin_partner_id, _lot.remaining)
        .where(*conditions).order_by(_lot.expires_at.asc().nulls_last(), _lot.id)
    ).all()
    if not lots:
        return 0, 0
    points = sum(remaining for _, _, remaining in lots)
    balance = journal.change_wallet(session, member_id, available=-points)
    if balance is None:
        raise LedgerInconsistency(f"member {member_id}: available short of the {points} "
                                  f"points in expiring lots")
    takes = [Take(lot_id, origin, -remaining) for lot_id, origin, remaining in lots]
    journal.apply_takes(session, takes)
    # points an open hold still reserves in these lots, if it is voided or partly
    # captured, come back to them as live points (apply_takes revives an expired lot) and
    # the next run expires them
    session.execute(update(Lot.__table__).where(_lot.id.in_([t.lot_id for t in takes]))
                    .values(state="expired"))
    journal.book_entry(
        session, kind="expiry", booked_at=now, occurred_at=as_of, points=points,
        member_id=member_id, balance=balance, takes=takes,
        postings=[("member:available", member_id, None, -points),
                  ("coalition:breakage", None, None, points)],
    )
    return len(lots), points
