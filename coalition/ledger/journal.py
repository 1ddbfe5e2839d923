"""Booking primitives: the writer of a member's single bookings (wallet, lots, entries,
postings, lot movements, and the hold a booking closes).

The one other writer of those tables is :mod:`coalition.ledger.batch`, for the jobs that
book thousands of members in one transaction; it shares with this module the wallet's
limits (:func:`within_limits`, the Python form of the guard below, for changes decided
before they are written), the release of pending lots (:class:`Release`,
:func:`make_live`), the lot takes (:class:`Take`, :func:`apply_takes`) and the settlement
fence, and keeps the same rules. (Transfers, merges, closures and bonuses book through
the functions here.)

Rules every caller keeps:

* The member's wallet row is changed (or locked) first, in the caller's transaction, before
  any of that member's lots are read for their points; so all changes to one member's
  points are serialised by that row, and lots never need locks of their own. A lot's fixed
  columns (its member, origin, expiry) and the append-only rows (entries, movements) may be
  read before. A read of anything else made before the lock is used only through
  :func:`change_and_book`'s ``version``: every change of the wallet, and every lock of it
  (:func:`lock_wallet`), moves its version, so a booking made at the version read was
  decided on the member's state as it still is. (The batch writer's lock does not move
  it; the one thing a batch changes without changing the wallet, a pending lot emptied
  by a reversal becoming live, changes nothing a booking decides on.)
* Each wallet change is one guarded ``UPDATE … WHERE <no balance goes negative> RETURNING``;
  no row back means the change is refused and nothing was written.
* An entry's postings sum to zero (checked here before anything is written).
* An entry passes the settlement fence (:mod:`coalition.ledger.fence`) with the
  ``booked_at`` the caller read: one that falls into a period closed meanwhile is run again,
  and one on a partner's account needs that partner's rate card in force, so that
  settlement can price every entry the ledger accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, insert, select, true, union_all, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from coalition.errors import HoldNotOpen
from coalition.ledger import fence
from coalition.ledger.models import IS_LIVE_LOT, Entry, Hold, Lot, LotMovement, Posting, Wallet
from coalition.observability import note_booked
from coalition.prepared import Prepared, prepared
from coalition.schemas import MAX_POINTS

#: a balance never exceeds what a JSON number carries exactly
MAX_BALANCE = MAX_POINTS


@dataclass(frozen=True)
class Balance:
    available: int
    pending: int
    held: int


@dataclass(frozen=True)
class Take:
    """Points taken from (negative) or returned to (positive) one lot."""

    lot_id: int
    origin_partner_id: int | None
    points: int


_W = Wallet.__table__.c
_BALANCES = (_W.available, _W.pending, _W.held)
_wallet_updates: dict[tuple[int, int, int, bool, bool], Any] = {}


def _wallet_update(signs: tuple[int, int, int], activity: bool, versioned: bool = False) -> Any:
    """The guarded UPDATE for one pattern of signs, built once: a negative delta needs
    the points there, a positive one room below :data:`MAX_BALANCE`; ``versioned``, the
    wallet still at the version the caller read (``b_version``)."""
    key = (*signs, activity, versioned)
    statement = _wallet_updates.get(key)
    if statement is None:
        names = ("available", "pending", "held")
        conditions = [_W.member_id == bindparam("b_member")]
        if versioned:
            conditions.append(_W.version == bindparam("b_version"))
        for column, name, sign in zip(_BALANCES, names, signs, strict=True):
            if sign < 0:
                conditions.append(column >= -bindparam(f"d_{name}"))
            elif sign > 0:
                conditions.append(column <= MAX_BALANCE - bindparam(f"d_{name}"))
        values = {name: column + bindparam(f"d_{name}")
                  for column, name in zip(_BALANCES, names, strict=True)}
        values["version"] = _W.version + 1
        if activity:
            values["last_activity_at"] = bindparam("b_activity_at")
        statement = (update(Wallet.__table__).where(and_(*conditions)).values(**values)
                     .returning(*_BALANCES))
        _wallet_updates[key] = statement
    return statement


def within_limits(balance: Balance) -> bool:
    """The wallet's rule in Python, for a writer that decides many changes before it writes
    them (:mod:`coalition.ledger.batch`): every balance in ``0 … MAX_BALANCE``. It is what
    :func:`_wallet_update`'s guard keeps for a change in SQL, from the balances as they are
    under the lock."""
    return all(0 <= value <= MAX_BALANCE
               for value in (balance.available, balance.pending, balance.held))


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


def change_wallet(
    session: Session,
    member_id: int,
    available: int = 0,
    pending: int = 0,
    held: int = 0,
    activity_at: datetime | None = None,
    version: int | None = None,
) -> Balance | None:
    """Apply the deltas in one guarded statement; ``None`` if a balance would go below
    zero or above :data:`MAX_BALANCE`, or with ``version`` if the wallet is no longer at
    it (nothing changed then)."""
    statement = _wallet_update((_sign(available), _sign(pending), _sign(held)),
                               activity_at is not None, version is not None)
    params: dict[str, Any] = {"b_member": member_id, "d_available": available,
                              "d_pending": pending, "d_held": held}
    if activity_at is not None:
        params["b_activity_at"] = activity_at
    if version is not None:
        params["b_version"] = version
    row = prepared(statement).first(session, params)
    return Balance(*row) if row else None


# a lock is an UPDATE of the version: so a member's wallet version moves whenever anyone
# takes the member's lock, and a read made before taking it is current if the version is
# the same under the lock (see :func:`change_and_book`'s ``version``)
_LOCK_WALLET = (update(Wallet.__table__).where(_W.member_id == bindparam("b_member"))
                .values(version=_W.version + 1).returning(*_BALANCES))


def lock_wallet(session: Session, member_id: int) -> Balance:
    """Lock the member's wallet row for the rest of the transaction and read it."""
    row = session.execute(_LOCK_WALLET, {"b_member": member_id}).all()
    if not row:
        raise NoResultFound(f"member {member_id} has no wallet")
    return Balance(*row[0])


#: the first page of live lots read for a consumption; each further page is 16 times larger
FIRST_PAGE = 16


def _live_lots(exclude: bool) -> Any:
    """A member's live lots with points left, in consumption order (earliest expiry
    first), at most ``page`` of them: read from the partial index ``ix_lot_live``, so the
    cost is that of the lots read, whatever the member's history."""
    lot = Lot.__table__.c
    conditions = [lot.member_id == bindparam("member_id"), IS_LIVE_LOT]
    if exclude:
        conditions.append(lot.id != bindparam("exclude"))
    return (select(lot.id, lot.origin_partner_id, lot.remaining).where(*conditions)
            .order_by(lot.expires_at.asc().nulls_last(), lot.id).limit(bindparam("page")))


_LIVE_LOTS = {False: Prepared(_live_lots(False)), True: Prepared(_live_lots(True))}


def take_from_live_lots(
    session: Session, member_id: int, points: int, exclude_lot: int | None = None,
    apply: bool = True,
) -> list[Take]:
    """Take ``points`` from the member's live lots, earliest expiry first.

    The caller has already debited the wallet (so the points are there) and holds its
    lock (so the lots do not change under this read). Lots are read a page at a time and
    the reading stops once the points are covered: usually one short page. Without
    ``apply``, the takes are only read: the caller's :func:`book_entry` applies them
    (``apply_to_lots``), in the entry's own statement on PostgreSQL.
    """
    params: dict[str, Any] = {"member_id": member_id, "page": FIRST_PAGE}
    if exclude_lot is not None:
        params["exclude"] = exclude_lot
    while True:
        rows = _LIVE_LOTS[exclude_lot is not None].rows(session, params)
        takes: list[Take] = []
        left = points
        for lot_id, origin, remaining in rows:
            if not left:
                break
            taken = min(remaining, left)
            takes.append(Take(lot_id, origin, -taken))
            left -= taken
        if not left or len(rows) < params["page"]:
            break
        params["page"] *= 16
    if left:
        raise LedgerInconsistency(f"member {member_id}: lots short of the wallet by {left}")
    if apply:
        apply_takes(session, takes)
    return takes


_L = Lot.__table__


def _take_values(delta: Any) -> dict[str, Any]:
    """What a take of ``delta`` points (negative: taken) changes in its lot. Points
    returned to a lot that expired meanwhile make it live again with its original expiry,
    so the next expiry run takes them as breakage like any other late points."""
    return {"remaining": _L.c.remaining + delta,
            "state": case((and_(delta > 0, _L.c.state == "expired"), "live"),
                          else_=_L.c.state)}


_APPLY_TAKE = update(_L).where(_L.c.id == bindparam("lot")).values(
    **_take_values(bindparam("delta")))


def apply_takes(session: Session, takes: Sequence[Take]) -> None:
    """Change each lot's remaining points by its take (negative: taken)."""
    if not takes:
        return
    session.execute(_APPLY_TAKE, [{"lot": t.lot_id, "delta": t.points} for t in takes])


@dataclass(frozen=True)
class Release:
    """What releasing pending lots books for their member: the lots become live
    (:func:`make_live`) and their points move from pending to available in one ``release``
    entry, none when nothing is left in them (as after a reversal in full while pending).
    One rule for the single booking (:func:`release_lots`) and the expiry job's batches."""

    member_id: int
    points: int

    @property
    def postings(self) -> list[tuple[str, int | None, int | None, int]]:
        return [("member:pending", self.member_id, None, -self.points),
                ("member:available", self.member_id, None, self.points)]

    @property
    def refusal(self) -> str:
        return (f"member {self.member_id}: pending short of {self.points} points in pending "
                f"lots (or available would overflow)")


def release(member_id: int, remaining: Iterable[int]) -> Release | None:
    """The release of pending lots with these points left in them; ``None``: no entry."""
    points = sum(remaining)
    return Release(member_id, points) if points else None


def make_live(session: Session, lot_ids: Sequence[int]) -> None:
    """Pending lots become live (their members' wallets are locked)."""
    if lot_ids:
        session.execute(update(_L).where(_L.c.id.in_(list(lot_ids))).values(state="live"))


def release_lots(session: Session, member_id: int, lots: Sequence[tuple[int, int]],
                 booked_at: datetime, occurred_at: datetime | None = None,
                 note: str | None = None) -> int:
    """Release pending lots ``(lot id, remaining points)`` (:class:`Release`); the wallet
    is already locked. Returns the points released."""
    make_live(session, [lot_id for lot_id, _ in lots])
    released = release(member_id, (remaining for _, remaining in lots))
    if released is None:
        return 0
    balance = change_wallet(session, member_id, pending=-released.points,
                            available=released.points)
    if balance is None:
        raise LedgerInconsistency(released.refusal)
    book_entry(session, kind="release", booked_at=booked_at, occurred_at=occurred_at,
               points=released.points, member_id=member_id, balance=balance, note=note,
               postings=released.postings)
    return released.points


_INSERT_ENTRY = insert(Entry.__table__).returning(Entry.__table__.c.id)
_INSERT_ENTRY_FENCED = {
    priced: insert(Entry.__table__).returning(Entry.__table__.c.id, *fence.returning(priced))
    for priced in (False, True)}
_INSERT_POSTING = insert(Posting.__table__)
_INSERT_MOVEMENT = insert(LotMovement.__table__)
_INSERT_LOT = insert(Lot.__table__).returning(Lot.__table__.c.id)


def _priced_at(kind: str, postings: list[tuple[str, int | None, int | None, int]]) -> int | None:
    """Check an entry's postings (two or more, summing to zero, at one partner at most)
    and return the partner whose accounts they touch (settlement prices those)."""
    if len(postings) < 2 or sum(p[3] for p in postings) != 0:
        raise LedgerInconsistency(
            f"{kind}: an entry needs two or more postings summing to zero: {postings}")
    priced = {partner for account, _, partner, _ in postings
              if partner is not None and account.startswith("partner:")}
    if len(priced) > 1:
        raise LedgerInconsistency(f"{kind}: an entry is at one partner at most: {postings}")
    return next(iter(priced), None)


def _entry_values(kind: str, booked_at: datetime, points: int, occurred_at: datetime | None,
                  partner_id: int | None, member_id: int | None, partner_txn_id: str | None,
                  request_hash: str | None, reference_id: int | None,
                  spend_amount: Decimal | None, spend_currency: str | None,
                  note: str | None, sender_named: bool | None) -> dict[str, Any]:
    return {
        "kind": kind, "booked_at": booked_at, "occurred_at": occurred_at or booked_at,
        "partner_id": partner_id, "member_id": member_id, "partner_txn_id": partner_txn_id,
        "request_hash": request_hash, "points": points, "reference_id": reference_id,
        "spend_amount": spend_amount, "spend_currency": spend_currency,
        "note": note, "sender_named": sender_named,
    }


_POSTING_FIELDS = ("account", "member_id", "partner_id", "points")


def _param(table: Any, name: str, prefix: str) -> Any:
    return bindparam(prefix + name, type_=table.c[name].type)


#: lot movements an entry writes within its own statement on PostgreSQL; more (a burn
#: across many lots) are written by a statement of their own
MOVES_IN_STATEMENT = 8
_ENTRY_COLUMNS = ("kind", "booked_at", "occurred_at", "partner_id", "member_id",
                  "partner_txn_id", "request_hash", "points", "reference_id", "spend_amount",
                  "spend_currency", "note", "sender_named", "available_after",
                  "pending_after", "held_after")
_MOVE_FIELDS = ("lot_id", "points", "origin_partner_id")
_entries: dict[tuple[bool, int, int, bool, bool], Prepared] = {}


def _applied(e: Any, takes: int) -> Any:
    """The CTE that changes each taken lot (:func:`_take_values`)
    once the entry ``e`` is written. The lots by id in the statement itself, not joined to
    a CTE: a lot changed by a booking that committed while this one waited for the wallet
    is re-read by the UPDATE (and its WHERE checked again), which a join to a CTE's rows
    does not survive."""
    movement = LotMovement.__table__
    lot_ids = [_param(movement, "lot_id", f"m{i}_") for i in range(takes)]
    delta = case(*[(_L.c.id == lot_id, _param(movement, "points", f"m{i}_"))
                   for i, lot_id in enumerate(lot_ids)])
    return (update(_L).where(_L.c.id.in_(lot_ids), exists(select(e.c.entry_id)))
            .values(**_take_values(delta)).cte("t_applied"))


def _children(e: Any, postings: int, moves: int) -> list[Any]:
    """The CTEs that write an entry's postings and lot movements, reading the id that the
    entry's INSERT (the CTE ``e``) returned."""
    entry, posting, movement = Entry.__table__, Posting.__table__, LotMovement.__table__
    ctes = [insert(posting).from_select(["entry_id", *_POSTING_FIELDS], union_all(*[
        select(e.c.entry_id, *[_param(posting, f, f"p{i}_") for f in _POSTING_FIELDS])
        for i in range(postings)])).cte("p")]
    if moves:
        ctes.append(insert(movement).from_select(
            ["entry_id", *_MOVE_FIELDS, "entry_kind", "entry_partner_id", "entry_booked_at"],
            union_all(*[select(e.c.entry_id,
                               *[_param(movement, f, f"m{i}_") for f in _MOVE_FIELDS],
                               _param(entry, "kind", "e_"), _param(entry, "partner_id", "e_"),
                               _param(entry, "booked_at", "e_"))
                        for i in range(moves)])).cte("m"))
    return ctes


def _entry_statement(priced: bool, postings: int, moves: int, applied: bool,
                     opens: bool) -> Prepared:
    """PostgreSQL: the entry (passing the fence), its postings and its lot movements (and,
    ``applied``, the lots changed by them; ``opens``, the hold it opens) as one statement of
    data-modifying CTEs, the postings, movements and hold reading the id that the entry's
    INSERT returned."""
    key = (priced, postings, moves, applied, opens)
    statement = _entries.get(key)
    if statement is not None:
        return statement
    entry = Entry.__table__
    e = (insert(entry).values({f: _param(entry, f, "e_") for f in _ENTRY_COLUMNS})
         .returning(entry.c.id.label("entry_id"),
                    *[c.label(n) for c, n in zip(fence.returning(priced),
                                                 ("closed_until", "priced"), strict=False)])
         .cte("e"))
    ctes = _children(e, postings, moves)
    if applied and moves:
        ctes.append(_applied(e, moves))
    columns = [e.c.entry_id, e.c.closed_until, *([e.c.priced] if priced else [])]
    if opens:
        hold = (insert(_H).from_select(
            ["entry_id", *_HOLD_FIELDS],
            select(e.c.entry_id, *[_param(_H, f, "h_") for f in _HOLD_FIELDS]))
            .returning(_H.c.id.label("hold_id")).cte("h"))
        columns.append(hold.c.hold_id)
    statement = Prepared(select(*columns).add_cte(*ctes))
    _entries[key] = statement
    return statement


@dataclass
class NewHold:
    """The hold an authorisation's entry opens: its points held until ``expires_at``;
    ``id`` is set once it is written (:func:`book_entry`)."""

    expires_at: datetime
    id: int | None = field(default=None, init=False)

    def values(self, member_id: int | None, partner_id: int | None,
               points: int) -> dict[str, Any]:
        return {"member_id": member_id, "partner_id": partner_id, "points": points,
                "captured": 0, "status": "open", "expires_at": self.expires_at}


_HOLD_FIELDS = ("member_id", "partner_id", "points", "captured", "status", "expires_at")
_INSERT_HOLD = Prepared(
    insert(Hold.__table__)
    .values({name: bindparam(name) for name in ("entry_id", *_HOLD_FIELDS)})
    .returning(Hold.__table__.c.id))


def _book_in_one_statement(session: Session, values: dict[str, Any],
                           postings: list[tuple[str, int | None, int | None, int]],
                           takes: Sequence[Take], priced_at: int | None,
                           applied: bool, opens: NewHold | None) -> int:
    params: dict[str, Any] = {**{f"e_{name}": value for name, value in values.items()},
                              **fence.parameters(priced_at, values["booked_at"])}
    if opens is not None:
        params.update({f"h_{name}": value for name, value in opens.values(
            values["member_id"], values["partner_id"], values["points"]).items()})
    for i, posting in enumerate(postings):
        params.update({f"p{i}_{name}": value
                       for name, value in zip(_POSTING_FIELDS, posting, strict=True)})
    for i, take in enumerate(takes):
        params.update({f"m{i}_lot_id": take.lot_id, f"m{i}_points": take.points,
                       f"m{i}_origin_partner_id": take.origin_partner_id})
    row = _entry_statement(priced_at is not None, len(postings), len(takes),
                           applied, opens is not None).rows(session, params)[0]
    fence.judge(values["booked_at"], row.closed_until,
                bool(row.priced) if priced_at is not None else True)
    if opens is not None:
        opens.id = int(row.hold_id)
    return int(row.entry_id)


def book_entry(
    session: Session,
    *,
    kind: str,
    booked_at: datetime,
    points: int,
    postings: Iterable[tuple[str, int | None, int | None, int]],
    occurred_at: datetime | None = None,
    partner_id: int | None = None,
    member_id: int | None = None,
    partner_txn_id: str | None = None,
    request_hash: str | None = None,
    reference_id: int | None = None,
    spend_amount: Decimal | None = None,
    spend_currency: str | None = None,
    balance: Balance | None = None,
    note: str | None = None,
    takes: Sequence[Take] = (),
    sender_named: bool | None = None,
    money_only: bool = False,
    apply_to_lots: bool = False,
    opens: NewHold | None = None,
) -> int:
    """Write one entry with its postings ``(account, member_id, partner_id, points)`` and
    the lot movements of ``takes``; returns the entry id. With ``apply_to_lots``, the
    takes also change the lots (:func:`apply_takes`), in the same statement on
    PostgreSQL: for takes read without ``apply`` (:func:`take_from_live_lots`).

    With ``opens``, the entry (an authorisation's) opens that hold, in the same statement
    on PostgreSQL; the hold's id is set on it.

    With ``money_only``, an entry that moves no points and carries money instead (a
    membership a partner sold for money): no postings, no lots, and a spend."""
    postings = [p for p in postings if p[3] != 0]
    if money_only:
        if postings or takes or points or not spend_amount or spend_currency is None:
            raise LedgerInconsistency(f"{kind}: a money-only entry moves no points and "
                                      f"carries an amount: {postings}, {spend_amount}")
        priced_at = None
    else:
        priced_at = _priced_at(kind, postings)
    in_statement = fence.in_statement(session)
    values = {
        **_entry_values(kind, booked_at, points, occurred_at, partner_id, member_id,
                        partner_txn_id, request_hash, reference_id, spend_amount,
                        spend_currency, note, sender_named),
        "available_after": balance.available if balance else None,
        "pending_after": balance.pending if balance else None,
        "held_after": balance.held if balance else None,
    }
    if in_statement and postings and len(takes) <= MOVES_IN_STATEMENT:
        entry_id = _book_in_one_statement(session, values, postings, takes, priced_at,
                                          apply_to_lots, opens)
        note_booked(session, kind)
        return entry_id
    if apply_to_lots:
        apply_takes(session, takes)
    if not in_statement:
        fence.judge(booked_at, *fence.read(session, priced_at, booked_at))
    statement = _INSERT_ENTRY_FENCED[priced_at is not None] if in_statement else _INSERT_ENTRY
    row = session.execute(statement, {
        **values, **(fence.parameters(priced_at, booked_at) if in_statement else {}),
    }).one()
    entry_id = row[0]
    if in_statement:
        fence.judge(booked_at, row[1], bool(row[2]) if priced_at is not None else True)
    if postings:
        session.execute(_INSERT_POSTING, [
            {"entry_id": entry_id, "account": account, "member_id": member,
             "partner_id": partner, "points": amount}
            for account, member, partner, amount in postings
        ])
    if takes:
        session.execute(_INSERT_MOVEMENT, [
            {"lot_id": t.lot_id, "entry_id": entry_id, "points": t.points,
             "origin_partner_id": t.origin_partner_id, "entry_kind": kind,
             "entry_partner_id": partner_id, "entry_booked_at": booked_at} for t in takes
        ])
    if opens is not None:
        opens.id = int(_INSERT_HOLD.scalar(session, {
            "entry_id": entry_id, **opens.values(member_id, partner_id, points)}))
    # counted in the metrics when (and only if) the transaction commits
    note_booked(session, kind)
    return entry_id


def create_lot(
    session: Session,
    *,
    member_id: int,
    origin_partner_id: int | None,
    source: str,
    entry_id: int,
    points: int,
    earned_at: datetime,
    expires_at: datetime | None,
    pending_until: datetime | None = None,
    pending: bool = False,
) -> int:
    """A new lot: pending until ``pending_until``, or (``pending`` without a date) until
    something releases it; otherwise live."""
    return session.execute(_INSERT_LOT, {
        "member_id": member_id, "origin_partner_id": origin_partner_id, "source": source,
        "entry_id": entry_id, "points": points, "remaining": points,
        "state": "pending" if pending_until or pending else "live",
        "earned_at": earned_at, "expires_at": expires_at, "pending_until": pending_until,
    }).scalar_one()


@dataclass(frozen=True)
class NewLot:
    """The lot that an entry's points go into (see :func:`create_lot`)."""

    origin_partner_id: int | None
    source: str
    points: int
    earned_at: datetime
    expires_at: datetime | None
    pending_until: datetime | None = None
    pending: bool = False

    def values(self, member_id: int) -> dict[str, Any]:
        return {"member_id": member_id, "origin_partner_id": self.origin_partner_id,
                "source": self.source, "points": self.points, "remaining": self.points,
                "state": "pending" if self.pending_until or self.pending else "live",
                "earned_at": self.earned_at, "expires_at": self.expires_at,
                "pending_until": self.pending_until}


_ENTRY_FIELDS = ("kind", "booked_at", "occurred_at", "partner_id", "member_id",
                 "partner_txn_id", "request_hash", "points", "reference_id", "spend_amount",
                 "spend_currency", "note", "sender_named")
_LOT_FIELDS = ("member_id", "origin_partner_id", "source", "points", "remaining", "state",
               "earned_at", "expires_at", "pending_until")
_credits: dict[tuple[Any, ...], Prepared] = {}


def _credit_statement(signs: tuple[int, int, int], priced: bool, postings: int) -> Prepared:
    """PostgreSQL: the guarded wallet UPDATE, the entry with the balances it returned, the
    postings and the lot, as one statement of data-modifying CTEs: each INSERT reads the
    row the step before returned, so a wallet change refused by its guard writes nothing."""
    key = (signs, priced, postings)
    statement = _credits.get(key)
    if statement is not None:
        return statement
    entry, posting = Entry.__table__, Posting.__table__
    w = _wallet_update(signs, True).cte("w")
    e = (insert(entry)
         .from_select([*_ENTRY_FIELDS, "available_after", "pending_after", "held_after"],
                      select(*[_param(entry, f, "e_") for f in _ENTRY_FIELDS],
                             w.c.available, w.c.pending, w.c.held))
         .returning(entry.c.id.label("entry_id"),
                    *[c.label(n) for c, n in zip(fence.returning(priced),
                                                 ("closed_until", "priced"), strict=False)])
         .cte("e"))
    p = (insert(posting)
         .from_select(["entry_id", *_POSTING_FIELDS], union_all(*[
             select(e.c.entry_id, *[_param(posting, f, f"p{i}_") for f in _POSTING_FIELDS])
             for i in range(postings)]))
         .cte("p"))
    lot = (insert(_L)
           .from_select([*_LOT_FIELDS, "entry_id"],
                        select(*[_param(_L, f, "l_") for f in _LOT_FIELDS], e.c.entry_id))
           .returning(_L.c.id.label("lot_id"))
           .cte("l"))
    columns = [w.c.available, w.c.pending, w.c.held, e.c.entry_id, e.c.closed_until,
               *([e.c.priced] if priced else []), lot.c.lot_id]
    statement = Prepared(select(*columns).select_from(w.join(e, true()).join(lot, true()))
                         .add_cte(p))
    _credits[key] = statement
    return statement


def credit_with_lot(
    session: Session,
    *,
    member_id: int,
    activity_at: datetime,
    available: int = 0,
    pending: int = 0,
    kind: str,
    booked_at: datetime,
    points: int,
    postings: Iterable[tuple[str, int | None, int | None, int]],
    lot: NewLot,
    occurred_at: datetime | None = None,
    partner_id: int | None = None,
    partner_txn_id: str | None = None,
    request_hash: str | None = None,
    spend_amount: Decimal | None = None,
    spend_currency: str | None = None,
    note: str | None = None,
) -> tuple[Balance, int] | None:
    """Change the member's wallet (:func:`change_wallet`), write the entry that explains it
    (:func:`book_entry`, with the balances after the change) and the lot its points are in
    (:func:`create_lot`); ``None`` (nothing written) when the wallet refused the change.
    Returns the balances and the entry id.

    On PostgreSQL it is one statement, one round trip (:func:`_credit_statement`); elsewhere
    the three steps run one after the other, with the same answers.
    """
    postings = [p for p in postings if p[3] != 0]
    priced_at = _priced_at(kind, postings)
    entry = _entry_values(kind, booked_at, points, occurred_at, partner_id, member_id,
                          partner_txn_id, request_hash, None, spend_amount, spend_currency,
                          note, None)
    if not fence.in_statement(session):
        balance = change_wallet(session, member_id, available=available, pending=pending,
                                activity_at=activity_at)
        if balance is None:
            return None
        entry_id = book_entry(session, postings=postings, balance=balance, **entry)
        create_lot(session, member_id=member_id, origin_partner_id=lot.origin_partner_id,
                   source=lot.source, entry_id=entry_id, points=lot.points,
                   earned_at=lot.earned_at, expires_at=lot.expires_at,
                   pending_until=lot.pending_until, pending=lot.pending)
        return balance, entry_id
    params: dict[str, Any] = {
        "b_member": member_id, "d_available": available, "d_pending": pending, "d_held": 0,
        "b_activity_at": activity_at, **fence.parameters(priced_at, booked_at),
        **{f"e_{name}": value for name, value in entry.items()},
        **{f"l_{name}": value for name, value in lot.values(member_id).items()}}
    for i, posting in enumerate(postings):
        params.update({f"p{i}_{name}": value
                       for name, value in zip(_POSTING_FIELDS, posting, strict=True)})
    statement = _credit_statement((_sign(available), _sign(pending), 0),
                                  priced_at is not None, len(postings))
    row = statement.first(session, params)
    if row is None:
        return None
    fence.judge(booked_at, row.closed_until, bool(row.priced) if priced_at else True)
    note_booked(session, kind)
    return Balance(row.available, row.pending, row.held), row.entry_id


@dataclass(frozen=True)
class HoldClose:
    """The hold an entry closes: still open when the entry is written, it becomes
    ``status`` with ``captured`` points captured and the entry as the one that closed it."""

    hold_id: int
    status: str
    captured: int = 0


@dataclass(frozen=True)
class Booked:
    balance: Balance
    entry_id: int


_H = Hold.__table__
_CLOSE_HOLD = (update(_H).where(_H.c.id == bindparam("h_id"), _H.c.status == "open")
               .values(status=bindparam("h_status"), captured=bindparam("h_captured"),
                       closed_by_entry_id=bindparam("h_entry"))
               .returning(_H.c.id))
_NEXT_ENTRY_ID = func.nextval(func.pg_get_serial_sequence("entry", "id"))
_HOLD_STATUS = select(_H.c.status).where(_H.c.id == bindparam("h_id"))
_changes: dict[tuple[Any, ...], Prepared] = {}


def _change_statement(signs: tuple[int, int, int], activity: bool, versioned: bool,
                      priced: bool, postings: int, takes: int, closes: bool) -> Prepared:
    """PostgreSQL: the guarded wallet UPDATE (first: the member's row lock), the hold it
    closes if still open, the entry with the balances the wallet returned, its postings and
    lot movements, and the takes applied to the lots, as one statement of data-modifying
    CTEs. Each write reads a row the step before returned, so a wallet change refused by its
    guard writes nothing, and a hold no longer open writes nothing but the wallet change
    (the caller then abandons the transaction, see :func:`change_and_book`). The closed
    hold names its entry by the id the entry is then written with (a value of the entry
    id sequence)."""
    key = (signs, activity, versioned, priced, postings, takes, closes)
    statement = _changes.get(key)
    if statement is not None:
        return statement
    entry = Entry.__table__
    w = _wallet_update(signs, activity, versioned).cte("w")
    fields = [*_ENTRY_FIELDS, "available_after", "pending_after", "held_after"]
    values = [*[_param(entry, f, "e_") for f in _ENTRY_FIELDS],
              w.c.available, w.c.pending, w.c.held]
    source: Any = w
    if closes:
        n = select(_NEXT_ENTRY_ID.label("id")).cte("n")
        h = (update(_H).where(_H.c.id == bindparam("h_id"), _H.c.status == "open",
                              exists(select(w.c.held)))
             .values(status=bindparam("h_status"), captured=bindparam("h_captured"),
                     closed_by_entry_id=select(n.c.id).scalar_subquery())
             .returning(_H.c.id.label("hold_id")).cte("h"))
        fields, values = ["id", *fields], [n.c.id, *values]
        source = w.join(n, true()).join(h, true())
    e = (insert(entry)
         .from_select(fields, select(*values).select_from(source))
         .returning(entry.c.id.label("entry_id"),
                    *[c.label(n) for c, n in zip(fence.returning(priced),
                                                 ("closed_until", "priced"), strict=False)])
         .cte("e"))
    ctes = _children(e, postings, takes)
    if takes:
        ctes.append(_applied(e, takes))
    columns = [w.c.available, w.c.pending, w.c.held, e.c.entry_id, e.c.closed_until,
               *([e.c.priced] if priced else [])]
    statement = Prepared(select(*columns).select_from(w.join(e, true())).add_cte(*ctes))
    _changes[key] = statement
    return statement


def change_and_book(
    session: Session,
    *,
    member_id: int,
    available: int = 0,
    pending: int = 0,
    held: int = 0,
    activity_at: datetime | None,
    kind: str,
    booked_at: datetime,
    points: int,
    postings: Iterable[tuple[str, int | None, int | None, int]],
    takes: Sequence[Take] = (),
    closes: HoldClose | None = None,
    version: int | None = None,
    occurred_at: datetime | None = None,
    partner_id: int | None = None,
    partner_txn_id: str | None = None,
    request_hash: str | None = None,
    reference_id: int | None = None,
    spend_amount: Decimal | None = None,
    spend_currency: str | None = None,
    note: str | None = None,
) -> Booked | None:
    """Change the member's wallet (:func:`change_wallet`), apply ``takes`` to their lots
    (:func:`apply_takes`), write the entry that explains both (:func:`book_entry`, with the
    balances after the change) and close the hold it ``closes``; ``None`` (nothing written)
    when the wallet refused the change.

    A hold that is no longer open is refused with :class:`~coalition.errors.HoldNotOpen`,
    and so is a wallet change refused while the hold was closed meanwhile (its held points
    went with it); the wallet may have been changed by then, so the transaction is
    abandoned, as after any domain error.

    The takes' lots are the caller's to have read: only their immutable columns may be read
    before this call, which takes the member's wallet lock; their points are changed here.
    With ``version``, the caller read more before the lock (the lots' points, the
    member's bookings): the change is made only if the wallet is still at that version
    (every change and every lock of it moves the version), and ``None`` answers a wallet
    that moved as well as one that refused; the caller then locks it and reads again.
    On PostgreSQL it is one statement, one round trip (:func:`_change_statement`), unless
    the takes are more than :data:`MOVES_IN_STATEMENT`; elsewhere the steps run one after
    the other, with the same answers.
    """
    postings = [p for p in postings if p[3] != 0]
    priced_at = _priced_at(kind, postings)
    entry = _entry_values(kind, booked_at, points, occurred_at, partner_id, member_id,
                          partner_txn_id, request_hash, reference_id, spend_amount,
                          spend_currency, note, None)
    if not fence.in_statement(session) or len(takes) > MOVES_IN_STATEMENT:
        balance = change_wallet(session, member_id, available=available, pending=pending,
                                held=held, activity_at=activity_at, version=version)
        if balance is None:
            _refused_close(session, closes)
            return None
        apply_takes(session, takes)
        entry_id = book_entry(session, postings=postings, balance=balance, takes=takes,
                              **entry)
        # (all(): on SQLite, first() of this UPDATE … RETURNING comes back empty)
        if closes is not None and not session.execute(_CLOSE_HOLD, {
                "h_id": closes.hold_id, "h_status": closes.status,
                "h_captured": closes.captured, "h_entry": entry_id}).all():
            _refused_close(session, closes)
        return Booked(balance, entry_id)
    params: dict[str, Any] = {
        "b_member": member_id, "d_available": available, "d_pending": pending, "d_held": held,
        **fence.parameters(priced_at, booked_at),
        **{f"e_{name}": value for name, value in entry.items()}}
    if activity_at is not None:
        params["b_activity_at"] = activity_at
    if version is not None:
        params["b_version"] = version
    for i, posting in enumerate(postings):
        params.update({f"p{i}_{name}": value
                       for name, value in zip(_POSTING_FIELDS, posting, strict=True)})
    for i, take in enumerate(takes):
        params.update({f"m{i}_lot_id": take.lot_id, f"m{i}_points": take.points,
                       f"m{i}_origin_partner_id": take.origin_partner_id})
    if closes is not None:
        params.update(h_id=closes.hold_id, h_status=closes.status,
                      h_captured=closes.captured)
    statement = _change_statement(
        (_sign(available), _sign(pending), _sign(held)), activity_at is not None,
        version is not None, priced_at is not None, len(postings), len(takes), closes is not None)
    row = statement.first(session, params)
    if row is None:
        _refused_close(session, closes)
        return None
    fence.judge(booked_at, row.closed_until, bool(row.priced) if priced_at else True)
    note_booked(session, kind)
    return Booked(Balance(row.available, row.pending, row.held), row.entry_id)


def _refused_close(session: Session, closes: HoldClose | None) -> None:
    """Refuse the booking when the hold it closes is no longer open (nothing to say
    otherwise: the caller answers for a refused wallet change)."""
    if closes is None:
        return
    status = session.execute(_HOLD_STATUS, {"h_id": closes.hold_id}).scalar()
    if status != "open":
        raise HoldNotOpen(f"Hold {closes.hold_id} is {status}.")
    raise LedgerInconsistency(f"hold {closes.hold_id}: open, yet its points are not held")


class LedgerInconsistency(RuntimeError):
    """The working state disagrees with itself; the transaction is abandoned."""
