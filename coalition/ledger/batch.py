"""The batch writer: the bookings of many members in one transaction and a handful of
statements, for the jobs (expiry, birthdays, tier downgrades) that touch thousands of
members at a time. :mod:`coalition.ledger.journal` stays the writer of single bookings;
this one keeps the same rules for a batch:

* The batch's wallet rows are locked first, lowest member first, in one statement
  (:class:`Batch`), before any of their lots or holds are read; everything is then decided
  from that locked state, so a booking racing the job waits for the batch (or the batch
  for it) and neither is lost or doubled.
* Each booking moves the member's balances from the locked ones; one that would take a
  balance below zero or above :data:`~coalition.ledger.journal.MAX_BALANCE` refuses that
  member alone (:class:`Refused`): the batch is rolled back and run again without it.
* An entry's postings sum to zero and touch no partner account (the jobs book the
  coalition's own accounts and the members'; settlement prices nothing they write).
* The batch passes the settlement fence once, after the locks and before it writes, with
  the ``booked_at`` its entries all share: a batch whose moment falls into a period closed
  meanwhile is run again (:class:`~coalition.ledger.fence.BookingFenced`).
* :meth:`Batch.write` then writes wallets, entries (their ids taken in advance), postings,
  lot movements, new lots and closed holds: one statement (on PostgreSQL a ``COPY``) each
  for the whole batch.

:func:`run_batch` runs a job's work over a batch of members: a member refused is reported
and the others booked, and a database error the work did not foresee (a constraint the
member's rows break) is narrowed down to its member by running the batch member by member.
:func:`run_pages` runs the batches of a job, a few at once (each its own transaction on its
own connection; the batches hold disjoint members, so they never wait for each other).
:func:`windows` cuts a member id range into pages for a candidate query that reads one
window of ids at a time through the indexes (so a page costs what it holds, not what the
job has left).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import run_with_retries
from coalition.ledger import fence
from coalition.ledger.journal import Balance, LedgerInconsistency, Take, within_limits
from coalition.ledger.models import Entry, Hold, Lot, LotMovement, Posting, Wallet
from coalition.observability import note_booked

#: members per batch: one transaction, and a few statements, for this many members
BATCH = 500
#: batches in flight at once: one's Python overlaps the other's time in the database
WORKERS = 2

T = TypeVar("T")

_W = Wallet.__table__.c
_H = Hold.__table__.c

_LOCK = (select(_W.member_id, _W.available, _W.pending, _W.held)
         .where(_W.member_id.in_(bindparam("members", expanding=True)))
         .order_by(_W.member_id).with_for_update())
_WALLET = (update(Wallet.__table__).where(_W.member_id == bindparam("b_member"))
           .values(available=_W.available + bindparam("d_available"),
                   pending=_W.pending + bindparam("d_pending"),
                   held=_W.held + bindparam("d_held"), version=_W.version + 1))
_CLOSE_HOLD = (update(Hold.__table__).where(_H.id == bindparam("b_hold"))
               .values(status=bindparam("b_status"), closed_by_entry_id=bindparam("b_entry")))


class Refused(Exception):
    """Members whose state disagrees with itself, found under their locks: the batch is
    abandoned and run again without them."""

    def __init__(self, failures: dict[int, str]) -> None:
        super().__init__("; ".join(failures.values()))
        self.failures = failures


@dataclass(frozen=True)
class NewLot:
    """A lot the booking creates (a bonus's), live unless ``pending``."""

    source: str
    points: int
    earned_at: datetime
    expires_at: datetime | None
    origin_partner_id: int | None = None
    pending: bool = False


@dataclass(frozen=True)
class Booking:
    kind: str
    member_id: int
    points: int
    postings: Sequence[tuple[str, int | None, int | None, int]]
    balance: Balance
    occurred_at: datetime | None = None
    partner_id: int | None = None
    reference_id: int | None = None
    note: str | None = None
    takes: Sequence[Take] = ()
    lot: NewLot | None = None
    #: ``(hold id, status)``: the hold this entry closes
    closes_hold: tuple[int, str] | None = None


@dataclass
class Batch:
    """The locked wallets of a batch of members, and the bookings decided for them."""

    session: Session
    #: the balances under the lock, moved on by each booking
    balances: dict[int, Balance]
    #: every entry's ``booked_at``: the clock read once the locks are held
    now: datetime
    bookings: list[Booking] = field(default_factory=list)
    _deltas: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def lock(cls, session: Session, member_ids: Iterable[int]) -> Batch:
        """Lock the members' wallet rows, lowest member first, and read them; a member
        without a wallet is simply not in :attr:`balances`."""
        rows = session.execute(_LOCK, {"members": sorted(set(member_ids))}).all()
        balances = {member: Balance(a, p, h) for member, a, p, h in rows}
        return cls(session, balances, clock.utcnow())

    @property
    def members(self) -> list[int]:
        return list(self.balances)

    def book(self, member_id: int, *, kind: str, points: int,
             postings: Sequence[tuple[str, int | None, int | None, int]],
             available: int = 0, pending: int = 0, held: int = 0, **details: Any) -> Balance:
        """Decide one entry: move the member's balances by the deltas (refused with
        :class:`LedgerInconsistency` outside the limits, nothing recorded then) and
        remember the entry for :meth:`write`. Returns the balance after it."""
        postings = [p for p in postings if p[3] != 0]
        if len(postings) < 2 or sum(p[3] for p in postings) != 0:
            raise LedgerInconsistency(
                f"{kind}: an entry needs two or more postings summing to zero: {postings}")
        if any(account.startswith("partner:") for account, *_ in postings):
            raise LedgerInconsistency(f"{kind}: the batch writer books no partner account")
        before = self.balances[member_id]
        after = Balance(before.available + available, before.pending + pending,
                        before.held + held)
        if not within_limits(after):
            names = [name for name, value in zip(("available", "pending", "held"),
                                                 (available, pending, held), strict=True)
                     if value]
            raise LedgerInconsistency(
                f"member {member_id}: {' and '.join(names)} would leave the allowed range "
                f"({before} moved by {available}/{pending}/{held})")
        self.balances[member_id] = after
        delta = self._deltas.setdefault(member_id, [0, 0, 0])
        delta[0] += available
        delta[1] += pending
        delta[2] += held
        self.bookings.append(Booking(kind, member_id, points, postings, after, **details))
        return after

    def write(self) -> list[int]:
        """Write every booking decided; returns the entry ids, in booking order."""
        if not self.bookings:
            return []
        session, now, bookings = self.session, self.now, self.bookings
        fence.judge(now, *fence.read(session, None))
        session.execute(_WALLET, [
            {"b_member": member, "d_available": a, "d_pending": p, "d_held": h}
            for member, (a, p, h) in self._deltas.items() if a or p or h])
        ids = _entry_ids(session, len(bookings))
        _insert(session, Entry.__table__, _ENTRY_COLUMNS, [
            (entry_id, b.kind, now, b.occurred_at or now, b.partner_id, b.member_id, b.points,
             b.reference_id, b.balance.available, b.balance.pending, b.balance.held, b.note)
            for entry_id, b in zip(ids, bookings, strict=True)])
        _insert(session, Posting.__table__, _POSTING_COLUMNS, [
            (entry_id, account, member, partner, amount)
            for entry_id, b in zip(ids, bookings, strict=True)
            for account, member, partner, amount in b.postings])
        _insert(session, LotMovement.__table__, _MOVEMENT_COLUMNS, [
            (t.lot_id, entry_id, t.points, t.origin_partner_id, b.kind, b.partner_id, now)
            for entry_id, b in zip(ids, bookings, strict=True) for t in b.takes])
        _insert(session, Lot.__table__, _LOT_COLUMNS, [
            (b.member_id, b.lot.origin_partner_id, b.lot.source, entry_id, b.lot.points,
             b.lot.points, "pending" if b.lot.pending else "live", b.lot.earned_at,
             b.lot.expires_at)
            for entry_id, b in zip(ids, bookings, strict=True) if b.lot is not None])
        holds = [{"b_hold": b.closes_hold[0], "b_status": b.closes_hold[1], "b_entry": entry_id}
                 for entry_id, b in zip(ids, bookings, strict=True) if b.closes_hold]
        if holds:
            session.execute(_CLOSE_HOLD, holds)
        for b in bookings:
            note_booked(session, b.kind)
        return ids


_ENTRY_COLUMNS = ("id", "kind", "booked_at", "occurred_at", "partner_id", "member_id",
                  "points", "reference_id", "available_after", "pending_after", "held_after",
                  "note")
_POSTING_COLUMNS = ("entry_id", "account", "member_id", "partner_id", "points")
_MOVEMENT_COLUMNS = ("lot_id", "entry_id", "points", "origin_partner_id", "entry_kind",
                     "entry_partner_id", "entry_booked_at")
_LOT_COLUMNS = ("member_id", "origin_partner_id", "source", "entry_id", "points", "remaining",
                "state", "earned_at", "expires_at")
_E = Entry.__table__.c
_NEXT_ENTRY_IDS = text("SELECT nextval(pg_get_serial_sequence('entry', 'id')) "
                       "FROM generate_series(1, :n)")
_LAST_ENTRY_ID = select(func.coalesce(func.max(_E.id), 0))


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _entry_ids(session: Session, count: int) -> list[int]:
    """Ids for ``count`` new entries, known before they are written (so their postings and
    movements need no answer from the database): a block of the sequence on PostgreSQL;
    on SQLite, where the batch holds the database's write lock from its first statement,
    the ids after the last one."""
    if _postgres(session):
        return list(session.execute(_NEXT_ENTRY_IDS, {"n": count}).scalars())
    last = session.execute(_LAST_ENTRY_ID).scalar_one()
    return list(range(last + 1, last + 1 + count))


def _insert(session: Session, table: Any, columns: tuple[str, ...],
            rows: list[tuple[Any, ...]]) -> None:
    """Insert plain rows: PostgreSQL's COPY (one stream, no statement to parse per row);
    elsewhere an ``executemany``. The values are already what the columns hold (UTC
    timestamps, integers, text)."""
    if not rows:
        return
    if _postgres(session):
        raw = session.connection().connection.driver_connection
        command = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(command) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
        return
    session.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def refuse(failures: dict[int, str]) -> None:
    """Abandon the batch if any member was refused (:class:`Refused`)."""
    if failures:
        raise Refused(failures)


def _why(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]


def run_batch(members: Sequence[int], work: Callable[[list[int]], T]
              ) -> tuple[list[T], dict[int, str]]:
    """``work(members)`` (one unit of work, run again on a transient conflict) and what
    each successful run returned, with the members it could not settle and why.

    A member refused (:class:`Refused`) is left out and the rest run again; a database
    error the work did not foresee, or a :class:`LedgerInconsistency` it raised unnamed,
    runs the batch member by member so that it stops only the member it belongs to.
    """
    results: list[T] = []
    failures: dict[int, str] = {}
    groups = [list(members)]
    while groups:
        group = groups.pop()
        if not group:
            continue
        try:
            results.append(run_with_retries(lambda g=group: work(g)))  # type: ignore[misc]
        except Refused as refused:
            failures.update(refused.failures)
            groups.append([m for m in group if m not in refused.failures])
        except (IntegrityError, DataError, LedgerInconsistency) as exc:
            if len(group) == 1:
                failures[group[0]] = _why(exc)
            else:
                groups.extend([m] for m in reversed(group))
    return results, failures


Outcome = tuple[list[int], list[T], dict[int, str]]


def run_pages(pages: Iterable[list[int]], work: Callable[[list[int]], T], *,
              workers: int = 1) -> Iterator[Outcome[T]]:
    """:func:`run_batch` over each page, up to ``workers`` pages at once; yields
    ``(page, results, failures)`` as each page is done (in page order with one worker).
    An unexpected error stops the run (the pages in flight finish or roll back)."""
    if workers <= 1:
        for page in pages:
            yield (page, *run_batch(page, work))
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def one(page: list[int]) -> Outcome[T]:
        with app.app_context():
            return (page, *run_batch(page, work))

    with ThreadPoolExecutor(workers, thread_name_prefix="coalition-job") as pool:
        running: set[Future[Outcome[T]]] = set()
        for page in pages:
            running.add(pool.submit(one, page))
            if len(running) >= workers:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        for future in running:
            yield future.result()


def windows(top: int, width: int) -> Iterator[tuple[int, int]]:
    """``[low, high)`` member id windows of ``width`` ids covering ``1..top``."""
    for low in range(1, top + 1, width):
        yield low, low + width


def paged(candidates: Iterable[list[int]], size: int) -> Iterator[list[int]]:
    """The candidate ids of successive windows, regrouped into pages of ``size``."""
    page: list[int] = []
    for found in candidates:
        page += found
        while len(page) >= size:
            yield page[:size]
            page = page[size:]
    if page:
        yield page
