"""The expiry job: holds past their expiry, pending points that became spendable, and
points that expired under the program's expiry policy.

``expire(as_of)`` finds the members with something due in set-based queries (keyset
pages of :data:`~coalition.ledger.batch.BATCH` members) and settles each page in one
transaction under those members' wallet locks, with statements over the whole page
(:mod:`coalition.ledger.batch`), so a crash loses at most the page in hand and running
again finishes the job. Everything it does is decided by the state it finds under the
locks, so a second run with the same ``as_of`` (or two runs at once) books nothing twice,
and an earn or a burn racing the job waits for the page's transaction (or the page for
it) and is neither lost nor doubled. A member whose state disagrees with itself is
reported and the others settled::

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

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, exists, func, select, union, update

from coalition.clock import add_months
from coalition.db import UnitOfWork, read
from coalition.ledger import journal
from coalition.ledger.batch import BATCH, Batch, paged, refuse, run_pages, windows
from coalition.ledger.journal import LedgerInconsistency, Take
from coalition.ledger.models import Hold, Lot, Member, Wallet
from coalition.ledger.voiding import holds_takes, void_takes
from coalition.program.service import load_rules

#: ``progress(done, total)``: called once before the first member and after each batch
Progress = Callable[[int, int], None]

#: member ids read per candidate query, in batches: a window of WINDOW × batch ids
WINDOW = 4

_hold = Hold.__table__.c
_lot = Lot.__table__.c
_wallet = Wallet.__table__.c
_member = Member.__table__.c


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

    def add(self, done: ExpirySummary) -> None:
        for name in ("holds_voided", "points_unheld", "members_released", "lots_released",
                     "points_released", "members_expired", "lots_expired", "points_expired"):
            setattr(self, name, getattr(self, name) + getattr(done, name))


@dataclass(frozen=True)
class _Policy:
    name: str
    months: int | None

    @classmethod
    def of(cls, expiry: dict[str, Any]) -> _Policy:
        return cls(expiry["policy"], expiry.get("months"))


# --------------------------------------------------------------------------- the run


def expire(as_of: datetime, progress: Progress | None = None, *,
           batch: int = BATCH, workers: int = 1) -> ExpirySummary:
    """Void expired holds, release pending points and expire points, as of ``as_of``,
    ``batch`` members per transaction, ``workers`` transactions at once.

    ``booked_at`` of every entry is the server clock; ``occurred_at`` is ``as_of``.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    with read() as session:
        policy = _Policy.of(load_rules(session)["expiry"])
        total = session.scalar(select(func.count()).select_from(
            _candidates(as_of, policy).subquery())) or 0
        top = session.scalar(select(func.max(_member.id))) or 0
    summary = ExpirySummary(as_of=as_of, policy=policy.name)
    if progress:
        progress(0, total)

    def candidates() -> Iterator[list[int]]:
        # a window of member ids at a time, read through the member indexes
        for low, high in windows(top, WINDOW * batch):
            with read() as session:
                yield list(session.scalars(_candidates(as_of, policy, (low, high))
                                           .order_by("member_id")))

    for page, done, failures in run_pages(
            paged(candidates(), batch), lambda members: _settle(members, as_of, policy),
            workers=workers):
        for part in done:
            summary.add(part)
        summary.failures += [{"member_id": m, "error": why} for m, why in sorted(failures.items())]
        summary.members += len(page)
        if progress:
            progress(summary.members, max(total, summary.members))
    summary.failures.sort(key=lambda failure: failure["member_id"])
    return summary


def _candidates(as_of: datetime, policy: _Policy,
                window: tuple[int, int] | None = None) -> Select[Any]:
    """Members with anything that may be due (in the ``[low, high)`` window of member
    ids): one set-based query, no lots in Python.

    A candidate is only a suspicion; :func:`_settle` decides under the wallet locks.
    """

    def arm(member_column: Any, *conditions: Any) -> Select[Any]:
        if window is not None:
            conditions += (member_column >= window[0], member_column < window[1])
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


# --------------------------------------------------------------------------- one batch


def _settle(member_ids: list[int], as_of: datetime, policy: _Policy) -> ExpirySummary:
    """Everything due for a batch of members, in one transaction under their wallet locks;
    refuses (:class:`~coalition.ledger.batch.Refused`) the members whose state disagrees."""
    done = ExpirySummary(as_of=as_of, policy=policy.name)
    with UnitOfWork() as uow:
        session = uow.session
        batch = Batch.lock(session, member_ids)
        refuse({m: f"member {m} has no wallet" for m in member_ids if m not in batch.balances})
        _void_expired_holds(batch, as_of, done)
        _release(batch, as_of, done)
        _expire_lots(batch, as_of, policy, done)
        batch.write()
        uow.commit()
    return done


def _void_expired_holds(batch: Batch, as_of: datetime, done: ExpirySummary) -> None:
    session = batch.session
    holds = session.execute(
        select(_hold.id, _hold.member_id, _hold.partner_id, _hold.points, _hold.entry_id)
        .where(_hold.member_id.in_(batch.members), _hold.status == "open",
               _hold.expires_at <= as_of)
        .order_by(_hold.member_id, _hold.expires_at, _hold.id)
    ).all()
    reserved = holds_takes(session, [hold.entry_id for hold in holds])
    takes: list[Take] = []
    failures: dict[int, str] = {}
    for hold_id, member_id, partner_id, points, entry_id in holds:
        try:
            back = void_takes(hold_id, reserved[entry_id], points)
            batch.book(member_id, kind="hold_void", points=points, held=-points,
                       available=points, occurred_at=as_of, partner_id=partner_id,
                       reference_id=entry_id, note="expired", takes=back,
                       closes_hold=(hold_id, "expired"),
                       postings=[("member:held", member_id, None, -points),
                                 ("member:available", member_id, None, points)])
        except LedgerInconsistency as exc:
            failures.setdefault(member_id, str(exc))
            continue
        takes += back
        done.holds_voided += 1
        done.points_unheld += points
    refuse(failures)
    # a lot that expired while some of its points were held takes them back as live
    # points (apply_takes revives it); step 3 expires them again when they are due
    journal.apply_takes(session, takes)


def _release(batch: Batch, as_of: datetime, done: ExpirySummary) -> None:
    session = batch.session
    rows = session.execute(
        select(_lot.member_id, _lot.id, _lot.remaining)
        .where(_lot.member_id.in_(batch.members), _lot.state == "pending",
               _lot.pending_until <= as_of)
        .order_by(_lot.member_id, _lot.id)
    ).all()
    if not rows:
        return
    journal.make_live(session, [row.id for row in rows])
    per_member: dict[int, list[int]] = {}
    for member_id, _, remaining in rows:
        per_member.setdefault(member_id, []).append(remaining)
    failures: dict[int, str] = {}
    for member_id, remaining in per_member.items():
        released = journal.release(member_id, remaining)
        if released is None:  # emptied while pending (a reversal in full): no entry
            continue
        try:
            batch.book(member_id, kind="release", points=released.points,
                       pending=-released.points, available=released.points,
                       occurred_at=as_of, postings=released.postings)
        except LedgerInconsistency:
            failures[member_id] = released.refusal
        done.members_released += 1
        done.lots_released += sum(1 for points in remaining if points)
        done.points_released += released.points
    refuse(failures)


def _expire_lots(batch: Batch, as_of: datetime, policy: _Policy,
                 done: ExpirySummary) -> None:
    if policy.name == "none" or not policy.months:
        return
    session = batch.session
    conditions = [_lot.state == "live", _lot.remaining > 0]
    if policy.name == "fixed":
        members = batch.members
        conditions.append(_lot.expires_at <= as_of)
    else:
        members = [
            member_id for member_id, last, created in session.execute(
                select(_wallet.member_id, _wallet.last_activity_at, _member.created_at)
                .join(Member.__table__, _member.id == _wallet.member_id)
                .where(_wallet.member_id.in_(batch.members)))
            if add_months(last or created, policy.months) <= as_of]
        if not members:
            return
    lots = session.execute(
        select(_lot.member_id, _lot.id, _lot.origin_partner_id, _lot.remaining)
        .where(_lot.member_id.in_(members), *conditions)
        .order_by(_lot.member_id, _lot.expires_at.asc().nulls_last(), _lot.id)
    ).all()
    if not lots:
        return
    per_member: dict[int, list[Take]] = {}
    for member_id, lot_id, origin, remaining in lots:
        per_member.setdefault(member_id, []).append(Take(lot_id, origin, -remaining))
    failures: dict[int, str] = {}
    for member_id, takes in per_member.items():
        points = -sum(t.points for t in takes)
        try:
            batch.book(member_id, kind="expiry", points=points, available=-points,
                       occurred_at=as_of, takes=takes,
                       postings=[("member:available", member_id, None, -points),
                                 ("coalition:breakage", None, None, points)])
        except LedgerInconsistency:
            failures[member_id] = (f"member {member_id}: available short of the {points} "
                                   f"points in expiring lots")
        done.members_expired += 1
        done.lots_expired += len(takes)
        done.points_expired += points
    refuse(failures)
    journal.apply_takes(session, [t for takes in per_member.values() for t in takes])
    # points an open hold still reserves in these lots, if it is voided or partly
    # captured, come back to them as live points (apply_takes revives an expired lot) and
    # the next run expires them
    session.execute(update(Lot.__table__).where(_lot.id.in_([lot.id for lot in lots]))
                    .values(state="expired"))
