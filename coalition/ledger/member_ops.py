"""Member operations on the ledger: transfers, donations, bonuses, the daily job (birthday
bonuses and tier downgrades), merges and closures.

Each operation is one unit of work, run again from the start on a deadlock or a
serialization failure. It locks the wallets it touches before it reads anything it decides
on (lowest member id first when there are two, as :mod:`coalition.ledger.journal` asks),
so a member's status, balances and lots cannot change under it.

Postings (``coalition ledger check`` verifies them):

* **transfer** A→B of n: member:available(A) −n, member:available(B) +n. A's lots are
  consumed earliest expiry first; B receives one new lot (source ``transfer``) per part
  consumed, with that part's origin partner and expiry and ``earned_at`` = now, so
  settlement still knows whose points they are. The entry is A's (``member_id``), with no
  partner; the receiver is the other posting (and the entry's note).
* **donation** of n to charity c: member:available −n, partner:redeemed(c) +n; lots are
  consumed like a burn (it is a redemption at the charity).
* **bonus** of n (coalition-funded): coalition:funded −n, member:available +n; a lot of
  source ``bonus`` with no origin partner and the program's expiry. Note ``welcome`` or
  ``birthday``. A bonus is not the member's activity (``last_activity_at`` stays).
  The welcome bonus goes to member:pending instead, in a pending lot with no release
  date: it cannot be farmed (enrol, burn the bonus at the enrolling partner) because it
  becomes spendable only with the member's first earn from a spend, at any partner
  (:func:`coalition.ledger.service.earn` releases it).
* **forfeiture** at closure: open holds are voided first, then member:available −a and
  member:pending −p against coalition:forfeited; every lot's remaining is taken (lot
  movements) and the lots are ``forfeited``.
* **merge** of X into S: X's open holds are voided first, then one ``merge`` entry (S's)
  moves member:available(X) −a → member:available(S) +a and the same for pending; X's
  lots and partner links are re-pointed to S (lots are working state: the journal keeps
  X's old entries under X, and :func:`member_ids_of` lets S's history include them).

Refusals (every one changes nothing):

* ``transfer_limit`` (409, :class:`~coalition.errors.TransferLimit`): transfers are
  disabled, the points are below ``min_points`` or above ``max_points``, or the sender's
  transfers booked since midnight UTC would exceed ``max_points_per_day``. A conflict with
  the program's current rules rather than malformed input, hence 409 (with the field error
  on ``points``).
* ``invalid_request`` (422): a transfer to oneself; a donation to a partner that is not an
  active charity (or no partner at all).
* ``not_found`` (404): no member has the receiver's number.
* ``member_closed`` / ``member_merged`` (409): either member is closed, or was merged (the
  error names the survivor).
* ``insufficient_points`` (409), ``balance_limit`` (409).

Idempotency of member requests. A transfer or donation may carry an ``Idempotency-Key``
(1 to 50 printable ASCII characters, no spaces). It is stored as the entry's
``partner_txn_id`` in the form ``"<member number> <key>"``: the member number makes it the
member's own namespace, and the space, which a partner's ``partner_txn_id`` never contains,
keeps it apart from partner ids (a donation's entry has the charity as its partner, so the
unique index on (partner, partner_txn_id) covers it too). The guarantee rests on the
sender's wallet lock: a keyed request takes it *before* it looks for an entry with its key,
and the entry is committed before the lock is released, so a duplicate, concurrent or late,
finds the first one's entry (READ COMMITTED reads a fresh snapshot per statement; SQLite
serialises writers) and answers with it: the original result (``replayed``) for the same
request, ``idempotency_conflict`` for a different one. Nothing else books entries keyed
this way, so for a transfer (no partner, where the unique index does not apply) the lock is
a complete guarantee. A request without a key is always a new transfer: the member app
should send one so that a retry after a timeout is safe.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, extract, func, or_, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from coalition.audit.service import Actor, record
from coalition.clock import add_months
from coalition.db import UnitOfWork, read, run_with_retries, utcnow
from coalition.errors import (
    BalanceLimit,
    CoalitionError,
    IdempotencyConflict,
    InsufficientPoints,
    InvalidRequest,
    MemberClosed,
    MemberMerged,
    NotFound,
    TransferLimit,
)
from coalition.ledger import journal, tiers
from coalition.ledger.journal import Balance, LedgerInconsistency, Take
from coalition.ledger.models import (
    Entry,
    Hold,
    Lot,
    Member,
    MemberConsent,
    MemberLink,
    Posting,
    Wallet,
)
from coalition.ledger.service import Outcome, request_hash, void_hold
from coalition.models import Partner
from coalition.program.service import Rules, rules_in_force

_m = Member.__table__.c
_e = Entry.__table__.c
_l = Lot.__table__.c
_w = Wallet.__table__.c
_p = Posting.__table__.c
_link = MemberLink.__table__.c

#: an ``Idempotency-Key``: stored after the member number and a space, within 64 characters
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,50}$")  # (also the OpenAPI pattern)
_KEY = re.compile(r"[\x21-\x7e]{1,50}")
IDEMPOTENCY_KEY_RULE = "1 to 50 printable ASCII characters, no spaces."

#: members handled per candidate query of the daily job (keyset pages)
PAGE = 500


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _State:
    id: int
    member_number: str
    status: str
    tier: str
    merged_into_id: int | None


def _state(session: Session, member_id: int) -> _State:
    row = session.execute(
        select(_m.id, _m.member_number, _m.status, _m.tier, _m.merged_into_id)
        .where(_m.id == member_id)).first()
    if row is None:
        raise NotFound(f"No member {member_id}.")
    return _State(*row)


def _by_number(session: Session, number: str, field_name: str) -> _State:
    row = session.execute(
        select(_m.id, _m.member_number, _m.status, _m.tier, _m.merged_into_id)
        .where(_m.member_number == number)).first()
    if row is None:
        raise NotFound(f"No member {number}.", errors={field_name: ["No such member."]})
    return _State(*row)


def _survivor_number(session: Session, state: _State) -> str | None:
    if state.merged_into_id is None:
        return None
    return session.scalar(select(_m.member_number).where(_m.id == state.merged_into_id))


def _require_active(session: Session, state: _State, field_name: str | None = None) -> None:
    """Refuse a closed or merged member (a merged one with a pointer to the survivor)."""
    if state.status == "closed":
        raise MemberClosed(f"Member {state.member_number} is closed.",
                           errors={field_name: ["The member is closed."]} if field_name
                           else None)
    if state.status == "merged":
        survivor = _survivor_number(session, state)
        raise MemberMerged(f"Member {state.member_number} was merged into {survivor}.",
                           errors={field_name or "member_number": [f"Use {survivor}."]})


def _lock(session: Session, *member_ids: int) -> None:
    """Lock the members' wallet rows, lowest member id first."""
    for member_id in sorted(set(member_ids)):
        try:
            journal.lock_wallet(session, member_id)
        except NoResultFound as exc:
            raise NotFound(f"Member {member_id} has no wallet.") from exc


def _balance_dict(balance: Balance) -> dict[str, int]:
    return {"available": balance.available, "pending": balance.pending,
            "held": balance.held}


def _expires_at(rules: Rules, now: datetime) -> datetime | None:
    expiry = rules["expiry"]
    return add_months(now, expiry["months"]) if expiry["policy"] == "fixed" else None


def stored_key(member_number: str, idempotency_key: str | None) -> str | None:
    """The ``partner_txn_id`` a member's ``Idempotency-Key`` is kept as (module doc)."""
    if idempotency_key is None:
        return None
    if not _KEY.fullmatch(idempotency_key):
        raise InvalidRequest("The Idempotency-Key header is not valid.",
                             errors={"Idempotency-Key": [IDEMPOTENCY_KEY_RULE]})
    return f"{member_number} {idempotency_key}"


def _keyed_entry(session: Session, member_id: int, key: str | None) -> Entry | None:
    """The member's entry booked under ``key``; read under the member's wallet lock."""
    if key is None:
        return None
    entry_id = session.scalar(select(_e.id).where(
        _e.member_id == member_id, _e.partner_txn_id == key,
        _e.kind.in_(("transfer", "donation"))))
    return None if entry_id is None else session.get_one(Entry, entry_id)


def _replay(session: Session, entry: Entry, digest: str,
            render: Callable[[Session, Entry], dict[str, Any]]) -> Outcome:
    if entry.request_hash != digest:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used for a different request.",
            errors={"Idempotency-Key": ["Already used for a different request."]})
    return Outcome(render(session, entry), replayed=True)


def _after(entry: Entry) -> dict[str, int]:
    return {"available": entry.available_after or 0, "pending": entry.pending_after or 0,
            "held": entry.held_after or 0}


def member_ids_of(member_id: int, session: Session | None = None) -> list[int]:
    """The member and everyone merged into it, lowest id first: whose entries make up the
    member's history (a merge leaves the absorbed member's entries under its own id)."""
    query = (select(_m.id).where(or_(_m.id == member_id, _m.merged_into_id == member_id))
             .order_by(_m.id))
    if session is not None:
        return list(session.scalars(query))
    with read() as s:
        return list(s.scalars(query))


def member_entries(member_ids: list[int]) -> Any:
    """A condition on :class:`Entry` for the entries in the history of ``member_ids``:
    those booked for them, and those that credited them without being theirs (transfers
    received, merges that brought points in)."""
    credited = select(_p.entry_id).where(_p.member_id.in_(member_ids))
    return or_(Entry.member_id.in_(member_ids), Entry.id.in_(credited))


# --------------------------------------------------------------------------- transfers


def _transfer_body(entry_id: int, to_number: str, points: int, booked_at: datetime,
                   balance: dict[str, int]) -> dict[str, Any]:
    return {"id": entry_id, "type": "transfer", "to_member_number": to_number,
            "points": points, "booked_at": booked_at, "balance": balance}


def _render_transfer(session: Session, entry: Entry) -> dict[str, Any]:
    to_number = session.scalar(
        select(_m.member_number).join(Posting.__table__, _p.member_id == _m.id)
        .where(_p.entry_id == entry.id, _p.account == "member:available", _p.points > 0))
    return _transfer_body(entry.id, to_number or "", entry.points, entry.booked_at,
                          _after(entry))


def _check_transfer_rules(session: Session, rules: Rules, sender_id: int, points: int,
                          now: datetime) -> None:
    limits = rules["transfers"]
    if not limits["enabled"]:
        raise TransferLimit("The program does not allow transfers at the moment.")
    if points < limits["min_points"]:
        message = f"At least {limits['min_points']} points per transfer."
        raise TransferLimit(message, errors={"points": [message]})
    if points > limits["max_points"]:
        message = f"At most {limits['max_points']} points per transfer."
        raise TransferLimit(message, errors={"points": [message]})
    midnight = datetime.combine(now.date(), time(), UTC)
    today = int(session.scalar(select(func.coalesce(func.sum(_e.points), 0)).where(
        _e.member_id == sender_id, _e.kind == "transfer", _e.booked_at >= midnight)) or 0)
    allowance = limits["max_points_per_day"]
    if today + points > allowance:
        message = (f"At most {allowance} points a day (UTC); {today} already "
                   f"transferred today.")
        raise TransferLimit(message, errors={"points": [message]})


def transfer(member_id: int, to_member_number: str, points: int, *,
             request_id: str | None = None, share_name: bool = False) -> Outcome:
    """Give ``points`` of the member's available points to another member.

    ``request_id`` is the member's ``Idempotency-Key`` (see the module doc). The receiver
    is shown the sender's first name if ``share_name``, otherwise only that the points
    came from a member (:func:`sender_label`).
    """
    digest = request_hash("transfer", {"to_member_number": to_member_number,
                                       "points": points,
                                       **({"share_name": True} if share_name else {})})

    def attempt() -> Outcome:
        with UnitOfWork() as uow:
            session = uow.session
            now = utcnow()
            sender = _state(session, member_id)
            key = stored_key(sender.member_number, request_id)
            if to_member_number == sender.member_number:
                message = "You cannot transfer points to yourself."
                raise InvalidRequest(message, errors={"to_member_number": [message]})
            receiver = _by_number(session, to_member_number, "to_member_number")
            _lock(session, sender.id, receiver.id)
            existing = _keyed_entry(session, sender.id, key)
            if existing is not None:
                return _replay(session, existing, digest, _render_transfer)
            # read again under the locks: a closure or merge takes them too
            sender, receiver = _state(session, sender.id), _state(session, receiver.id)
            _require_active(session, sender)
            _require_active(session, receiver, "to_member_number")
            rules = rules_in_force(session)
            _check_transfer_rules(session, rules, sender.id, points, now)

            balance = journal.change_wallet(session, sender.id, available=-points,
                                            activity_at=now)
            if balance is None:
                raise InsufficientPoints("You do not have enough points.",
                                         errors={"points": ["More than you have."]})
            takes = journal.take_from_live_lots(session, sender.id, points)
            if journal.change_wallet(session, receiver.id, available=points) is None:
                raise BalanceLimit("The receiver's balance would exceed the largest allowed.")
            entry_id = journal.book_entry(
                session, kind="transfer", booked_at=now, points=points,
                member_id=sender.id, partner_txn_id=key,
                request_hash=digest if key else None, balance=balance, takes=takes,
                note=f"to {receiver.member_number}", sender_named=share_name,
                postings=[("member:available", sender.id, None, -points),
                          ("member:available", receiver.id, None, points)],
            )
            _mirror_lots(session, takes, receiver.id, entry_id, now)
            uow.commit()
            return Outcome(_transfer_body(entry_id, receiver.member_number, points, now,
                                          _balance_dict(balance)), replayed=False)

    return run_with_retries(attempt)


def sender_label(session: Session, entry: Entry) -> str:
    """How a received transfer names its sender to the receiver: the sender's first name
    if the sender chose to share it (and has one on record), otherwise "a member"; never
    the sender's number or keys."""
    if entry.sender_named and entry.member_id is not None:
        name = session.scalar(select(_m.name).where(_m.id == entry.member_id))
        if name and name.split():
            return name.split()[0]
    return "a member"


def _mirror_lots(session: Session, takes: list[Take], receiver_id: int, entry_id: int,
                 now: datetime) -> None:
    """One lot for the receiver per part taken from the sender's lots: same origin partner
    and expiry, earned now."""
    expiry = dict(session.execute(select(_l.id, _l.expires_at).where(
        _l.id.in_([t.lot_id for t in takes]))).all())
    for take in takes:
        journal.create_lot(
            session, member_id=receiver_id, origin_partner_id=take.origin_partner_id,
            source="transfer", entry_id=entry_id, points=-take.points, earned_at=now,
            expires_at=expiry[take.lot_id])


# --------------------------------------------------------------------------- donations


def _donation_body(entry_id: int, partner_code: str, points: int, booked_at: datetime,
                   balance: dict[str, int]) -> dict[str, Any]:
    return {"id": entry_id, "type": "donation", "partner": partner_code, "points": points,
            "booked_at": booked_at, "balance": balance}


def _render_donation(session: Session, entry: Entry) -> dict[str, Any]:
    code = session.scalar(select(Partner.code).where(Partner.id == entry.partner_id))
    return _donation_body(entry.id, code or "", entry.points, entry.booked_at, _after(entry))


def donate(member_id: int, partner_code: str, points: int, *,
           request_id: str | None = None) -> Outcome:
    """Give ``points`` to a charity partner: a redemption at the charity."""
    digest = request_hash("donation", {"partner": partner_code, "points": points})

    def attempt() -> Outcome:
        with UnitOfWork() as uow:
            session = uow.session
            now = utcnow()
            member = _state(session, member_id)
            key = stored_key(member.member_number, request_id)
            _lock(session, member.id)
            existing = _keyed_entry(session, member.id, key)
            if existing is not None:
                return _replay(session, existing, digest, _render_donation)
            member = _state(session, member.id)
            _require_active(session, member)
            charity = session.execute(
                select(Partner.id, Partner.code, Partner.kind, Partner.status)
                .where(Partner.code == partner_code)).first()
            if charity is None or charity.kind != "charity" or charity.status != "active":
                message = (f"No partner {partner_code!r}." if charity is None else
                           f"{partner_code!r} is not an active charity.")
                raise InvalidRequest(message, errors={"partner": [
                    "Points can only be donated to an active charity partner."]})
            balance = journal.change_wallet(session, member.id, available=-points,
                                            activity_at=now)
            if balance is None:
                raise InsufficientPoints("You do not have enough points.",
                                         errors={"points": ["More than you have."]})
            takes = journal.take_from_live_lots(session, member.id, points)
            entry_id = journal.book_entry(
                session, kind="donation", booked_at=now, points=points,
                partner_id=charity.id, member_id=member.id, partner_txn_id=key,
                request_hash=digest if key else None, balance=balance, takes=takes,
                postings=[("member:available", member.id, None, -points),
                          ("partner:redeemed", None, charity.id, points)],
            )
            uow.commit()
            return Outcome(_donation_body(entry_id, charity.code, points, now,
                                          _balance_dict(balance)), replayed=False)

    return run_with_retries(attempt)


# --------------------------------------------------------------------------- bonuses


def book_bonus(session: Session, member_id: int, points: int, note: str, now: datetime,
               rules: Rules, occurred_at: datetime | None = None,
               pending: bool = False) -> int:
    """Credit coalition-funded points in the caller's transaction (the wallet change is
    the member's lock), spendable at once or ``pending`` until released. Returns the
    entry id."""
    account = "member:pending" if pending else "member:available"
    balance = journal.change_wallet(session, member_id, **{account.split(":")[1]: points})
    if balance is None:
        raise BalanceLimit("The member's balance would exceed the largest allowed.")
    entry_id = journal.book_entry(
        session, kind="bonus", booked_at=now, occurred_at=occurred_at, points=points,
        member_id=member_id, balance=balance, note=note,
        postings=[("coalition:funded", None, None, -points),
                  (account, member_id, None, points)],
    )
    journal.create_lot(session, member_id=member_id, origin_partner_id=None, source="bonus",
                       entry_id=entry_id, points=points, earned_at=now,
                       expires_at=_expires_at(rules, now), pending=pending)
    return entry_id


def book_welcome_bonus(session: Session, member_id: int, rules: Rules) -> int | None:
    """The welcome bonus, in the enrolment's own unit of work (none if the rules give 0):
    pending until the member's first earn from a spend (module doc)."""
    points = rules["bonuses"]["welcome"]
    if not points:
        return None
    return book_bonus(session, member_id, points, "welcome", utcnow(), rules, pending=True)


# --------------------------------------------------------------------------- the daily job


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
    #: members the job could not handle, with why
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def daily(as_of: date, progress: Progress | None = None) -> DailySummary:
    """Birthday bonuses and tier downgrades for ``as_of`` (a UTC date); safe to rerun.

    Candidates are found with set-based queries; each member is then handled in a
    transaction of its own under the member's wallet lock, where the decision is made
    again from what is committed, so a second run (or two runs at once) changes nothing
    twice and a crash loses at most the member in hand.
    """
    summary = DailySummary(as_of=as_of)
    _birthdays(as_of, summary, progress)
    _downgrades(as_of, summary, progress)
    return summary


def _birthday_days(as_of: date) -> list[int]:
    """The birth days (of as_of's month) celebrated on ``as_of``: 29 February is
    celebrated on the 28th in years without one."""
    if as_of.month == 2 and as_of.day == 28 and not calendar.isleap(as_of.year):
        return [28, 29]
    return [as_of.day]


def _birthday_conditions(as_of: date) -> list[Any]:
    year = as_of.year
    end_of_day = datetime.combine(as_of + timedelta(days=1), time(), UTC)
    return [
        _m.status == "active",
        _m.birth_date.is_not(None),
        extract("month", _m.birth_date) == as_of.month,
        extract("day", _m.birth_date).in_(_birthday_days(as_of)),
        or_(_m.birthday_bonus_year.is_(None), _m.birthday_bonus_year < year),
        _m.created_at < end_of_day,  # a rerun for a past day skips later enrolments
    ]


def _birthdays(as_of: date, summary: DailySummary, progress: Progress | None) -> None:
    with read() as session:
        rules = rules_in_force(session)
    points = rules["bonuses"]["birthday"]
    if not points:
        return
    conditions = _birthday_conditions(as_of)
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
            try:
                granted = run_with_retries(
                    lambda m=member_id: _grant_birthday(m, as_of, points))
            except (CoalitionError, LedgerInconsistency) as exc:
                summary.failures.append({"member_id": member_id, "step": "birthday",
                                         "error": str(exc)})
                granted = False
            if granted:
                summary.birthday_members += 1
                summary.birthday_points += points
            done += 1
            if progress:
                progress("birthdays", done, max(total, done))
        after = page[-1]


def _grant_birthday(member_id: int, as_of: date, points: int) -> bool:
    with UnitOfWork() as uow:
        session = uow.session
        _lock(session, member_id)
        # the guard that makes the bonus once a year: only one run can move the year on
        claimed = session.execute(
            update(Member.__table__)
            .where(_m.id == member_id, *_birthday_conditions(as_of))
            .values(birthday_bonus_year=as_of.year)
        ).rowcount
        if claimed != 1:
            return False
        now = utcnow()
        book_bonus(session, member_id, points, "birthday", now, rules_in_force(session),
                   occurred_at=min(now, datetime.combine(as_of, time(), UTC)))
        uow.commit()
        return True


def _downgrades(as_of: date, summary: DailySummary, progress: Progress | None) -> None:
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
        try:
            moved = run_with_retries(lambda m=member_id: _downgrade(m, rules, now))
        except (CoalitionError, LedgerInconsistency) as exc:
            summary.failures.append({"member_id": member_id, "step": "tier",
                                     "error": str(exc)})
            moved = None
        if moved:
            summary.tier_downgrades += 1
            step = f"{moved[0]}>{moved[1]}"
            summary.downgrades[step] = summary.downgrades.get(step, 0) + 1
        if progress:
            progress("tiers", done, len(candidates))


def _downgrade(member_id: int, rules: Rules, now: datetime) -> tuple[str, str] | None:
    """Under the wallet lock (which every earn takes before it upgrades), decide again
    from the committed earns, and move the member down if they no longer qualify."""
    with UnitOfWork() as uow:
        session = uow.session
        _lock(session, member_id)
        member = _state(session, member_id)
        if member.status != "active":
            return None
        reached = tiers.downgrade(session, member_id, member.tier, rules, now)
        if reached is None:
            return None
        uow.commit()
        return member.tier, reached


# --------------------------------------------------------------------------- merge


def merge(absorbed_number: str, survivor_number: str, operator: str, *,
          actor: Actor | None = None) -> dict[str, Any]:
    """Merge the member found twice: everything of ``absorbed`` moves to ``survivor``.

    Balances (one ``merge`` entry), lots and partner links move; the survivor keeps the
    higher tier and gains personal data it lacks, erased from the absorbed row, which keeps
    its journal entries, with status ``merged`` and a pointer to the survivor. Merging
    again into the same survivor answers with the merge as it stands (``already_merged``).
    """
    if absorbed_number == survivor_number:
        message = "A member cannot be merged into itself."
        raise InvalidRequest(message, errors={"survivor": [message]})

    def attempt() -> dict[str, Any]:
        with UnitOfWork() as uow:
            session = uow.session
            now = utcnow()
            absorbed = _by_number(session, absorbed_number, "absorbed")
            survivor = _by_number(session, survivor_number, "survivor")
            _lock(session, absorbed.id, survivor.id)
            absorbed, survivor = _state(session, absorbed.id), _state(session, survivor.id)
            if absorbed.status == "merged" and absorbed.merged_into_id == survivor.id:
                return _merge_body(session, absorbed, survivor, None, {}, already=True)
            _require_active(session, absorbed, "absorbed")
            _require_active(session, survivor, "survivor")
            rules = rules_in_force(session)

            holds = session.scalars(select(Hold).where(
                Hold.member_id == absorbed.id, Hold.status == "open").order_by(Hold.id)).all()
            for hold in holds:
                void_hold(session, hold, now, status="voided", note="merge")
            available, pending, held = session.execute(
                select(_w.available, _w.pending, _w.held)
                .where(_w.member_id == absorbed.id)).one()
            if held:
                raise LedgerInconsistency(f"member {absorbed.id}: {held} held points "
                                          f"without an open hold")
            entry_id = None
            if available or pending:
                if journal.change_wallet(session, absorbed.id, available=-available,
                                         pending=-pending) is None:
                    raise LedgerInconsistency(f"member {absorbed.id}: wallet changed "
                                              f"under its lock")
                balance = journal.change_wallet(session, survivor.id, available=available,
                                                pending=pending)
                if balance is None:
                    raise BalanceLimit("The survivor's balance would exceed the largest "
                                       "allowed.")
                entry_id = journal.book_entry(
                    session, kind="merge", booked_at=now, points=available + pending,
                    member_id=survivor.id, balance=balance,
                    note=f"merged {absorbed.member_number} into "
                         f"{survivor.member_number} by {operator}",
                    postings=[("member:available", absorbed.id, None, -available),
                              ("member:available", survivor.id, None, available),
                              ("member:pending", absorbed.id, None, -pending),
                              ("member:pending", survivor.id, None, pending)],
                )
            lots = session.execute(update(Lot.__table__).where(_l.member_id == absorbed.id)
                                   .values(member_id=survivor.id)).rowcount
            links = session.execute(
                update(MemberLink.__table__).where(_link.member_id == absorbed.id)
                .values(member_id=survivor.id)).rowcount
            _move_consents(session, absorbed.id, survivor.id)
            # members merged into the absorbed one point at the survivor now (one hop)
            session.execute(update(Member.__table__)
                            .where(_m.merged_into_id == absorbed.id)
                            .values(merged_into_id=survivor.id))
            _absorb_member_row(session, rules, absorbed.id, survivor.id)
            moved = {"available": available, "pending": pending, "lots": lots,
                     "links": links, "holds_voided": len(holds)}
            body = _merge_body(session, _state(session, absorbed.id),
                               _state(session, survivor.id), entry_id, moved)
            record(session, actor or Actor(operator), "member.merged",
                   f"member:{absorbed_number}",
                   {"absorbed": absorbed_number, "survivor": survivor_number,
                    "moved": moved, "entry_id": entry_id})
            uow.commit()
            return body

    return run_with_retries(attempt)


def _absorb_member_row(session: Session, rules: Rules, absorbed_id: int,
                       survivor_id: int) -> None:
    x = session.get_one(Member, absorbed_id)
    s = session.get_one(Member, survivor_id)
    if tiers.rank(rules, x.tier, unknown=-1) > tiers.rank(rules, s.tier, unknown=-1):
        s.tier = x.tier
    # the survivor gains the personal data it lacks; the absorbed row keeps none of it
    s.email = s.email or x.email
    s.name = s.name or x.name
    s.birth_date = s.birth_date or x.birth_date
    x.email = x.name = x.birth_date = None
    years = [y for y in (s.birthday_bonus_year, x.birthday_bonus_year) if y is not None]
    s.birthday_bonus_year = max(years) if years else None
    x.status, x.merged_into_id = "merged", survivor_id
    session.flush()
    # the later activity of the two governs expiry by inactivity of the moved lots
    last = session.scalar(select(func.max(_w.last_activity_at))
                          .where(_w.member_id.in_((absorbed_id, survivor_id))))
    if last is not None:
        session.execute(update(Wallet.__table__).where(_w.member_id == survivor_id)
                        .values(last_activity_at=last))


def _move_consents(session: Session, absorbed_id: int, survivor_id: int) -> None:
    """The partners the absorbed member shared its personal data with see the survivor's
    (the data moved to it); a consent the survivor already gave stays as it was."""
    consent = MemberConsent.__table__.c
    given = select(consent.partner_id).where(consent.member_id == survivor_id)
    session.execute(update(MemberConsent.__table__).where(
        consent.member_id == absorbed_id, consent.partner_id.not_in(given))
        .values(member_id=survivor_id))
    session.execute(delete(MemberConsent.__table__)
                    .where(consent.member_id == absorbed_id))


def _merge_body(session: Session, absorbed: _State, survivor: _State,
                entry_id: int | None, moved: dict[str, int],
                already: bool = False) -> dict[str, Any]:
    wallet = session.execute(select(_w.available, _w.pending, _w.held)
                             .where(_w.member_id == survivor.id)).one()
    return {
        "absorbed": {"member_number": absorbed.member_number, "status": absorbed.status,
                     "merged_into": survivor.member_number},
        "survivor": {"member_number": survivor.member_number, "status": survivor.status,
                     "tier": survivor.tier,
                     "balance": {"available": wallet.available, "pending": wallet.pending,
                                 "held": wallet.held}},
        "moved": {"available": 0, "pending": 0, "lots": 0, "links": 0, "holds_voided": 0,
                  **moved},
        "entry_id": entry_id,
        "already_merged": already,
    }


# --------------------------------------------------------------------------- closure


#: what a closure erases from every row of the member (the journal keeps its numbers)
_ERASED: dict[str, Any] = {"name": None, "email": None, "birth_date": None,
                           "password_hash": None, "activation_code_hash": None,
                           "locked_until": None}


def close(member_id: int) -> dict[str, Any]:
    """Close the member's account: open holds are voided, the remaining points forfeited
    (one ``forfeiture`` entry), personal data erased and partner links removed, sign-in
    ended. The row and its number stay, so the number is never given out again and the
    journal keeps its numbers."""
    from coalition.oauth.models import OAuthAuthorizationCode, OAuthToken

    def attempt() -> dict[str, Any]:
        with UnitOfWork() as uow:
            session = uow.session
            now = utcnow()
            _lock(session, member_id)
            member = _state(session, member_id)
            _require_active(session, member)
            holds = session.scalars(select(Hold).where(
                Hold.member_id == member_id, Hold.status == "open").order_by(Hold.id)).all()
            for hold in holds:
                void_hold(session, hold, now, status="voided", note="closure")
            available, pending, held = session.execute(
                select(_w.available, _w.pending, _w.held)
                .where(_w.member_id == member_id)).one()
            if held:
                raise LedgerInconsistency(f"member {member_id}: {held} held points "
                                          f"without an open hold")
            entry_id = None
            if available or pending:
                balance = journal.change_wallet(session, member_id, available=-available,
                                                pending=-pending)
                if balance is None:
                    raise LedgerInconsistency(f"member {member_id}: wallet changed under "
                                              f"its lock")
                lots = session.execute(
                    select(_l.id, _l.origin_partner_id, _l.remaining)
                    .where(_l.member_id == member_id, _l.state.in_(("live", "pending")),
                           _l.remaining > 0)
                    .order_by(_l.id)).all()
                takes = [Take(lot_id, origin, -remaining) for lot_id, origin, remaining in lots]
                if -sum(t.points for t in takes) != available + pending:
                    raise LedgerInconsistency(
                        f"member {member_id}: lots hold {-sum(t.points for t in takes)} "
                        f"points, the wallet {available + pending}")
                journal.apply_takes(session, takes)
                entry_id = journal.book_entry(
                    session, kind="forfeiture", booked_at=now, points=available + pending,
                    member_id=member_id, balance=balance, takes=takes, note="closure",
                    postings=[("member:available", member_id, None, -available),
                              ("coalition:forfeited", None, None, available),
                              ("member:pending", member_id, None, -pending),
                              ("coalition:forfeited", None, None, pending)],
                )
            session.execute(update(Lot.__table__).where(
                _l.member_id == member_id, _l.state.in_(("live", "pending")))
                .values(state="forfeited"))
            # the links go with what each partner supplied on them, and every consent
            links = session.execute(delete(MemberLink.__table__)
                                    .where(_link.member_id == member_id)).rowcount
            session.execute(delete(MemberConsent.__table__)
                            .where(MemberConsent.member_id == member_id))
            session.execute(update(Member.__table__).where(_m.id == member_id).values(
                status="closed", closed_at=now, **_ERASED))
            # and on the rows of members merged into this one
            session.execute(update(Member.__table__)
                            .where(_m.merged_into_id == member_id).values(**_ERASED))
            session.execute(update(OAuthToken.__table__).where(
                OAuthToken.member_id == member_id, OAuthToken.revoked_at.is_(None))
                .values(revoked_at=now))
            session.execute(delete(OAuthAuthorizationCode.__table__).where(
                OAuthAuthorizationCode.member_id == member_id))
            uow.commit()
            return {"member_number": member.member_number, "status": "closed",
                    "closed_at": now,
                    "forfeited": {"available": available, "pending": pending},
                    "holds_voided": len(holds), "links_removed": links,
                    "entry_id": entry_id}

    return run_with_retries(attempt)


__all__ = ["DailySummary", "book_bonus", "book_welcome_bonus", "close", "daily", "donate",
           "member_entries", "member_ids_of", "merge", "sender_label", "stored_key",
           "transfer"]
