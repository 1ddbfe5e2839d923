"""Transfers between members and donations to a charity partner.

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
request, ``idempotency_conflict`` for a different one. Only member requests (these and
reward redemptions) book entries keyed this way, so for a transfer (no partner, where the
unique index does not apply) the lock is a complete guarantee. A request without a key is
always a new transfer: the member app should send one so that a retry after a timeout is
safe.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import UnitOfWork, Units, run_with_retries
from coalition.errors import BalanceLimit, InsufficientPoints, InvalidRequest, TransferLimit
from coalition.ledger import journal
from coalition.ledger.idempotency import (
    Outcome,
    keyed_entry,
    replay_keyed,
    request_hash,
    stored_key,
)
from coalition.ledger.journal import Balance, Take
from coalition.ledger.lookup import (
    MemberRef,
    locked_states,
    member_by_number,
    member_state,
    require_active,
)
from coalition.ledger.models import Entry, Lot, Member, Posting
from coalition.ledger.rendering import balance_after, balance_dict
from coalition.models import Partner
from coalition.program.service import Rules, rules_in_force

_m = Member.__table__.c
_e = Entry.__table__.c
_l = Lot.__table__.c
_p = Posting.__table__.c


def _transfer_body(entry_id: int, to_number: str, points: int, booked_at: datetime,
                   balance: dict[str, int]) -> dict[str, Any]:
    return {"id": entry_id, "type": "transfer", "to_member_number": to_number,
            "points": points, "booked_at": booked_at, "balance": balance}


def _render_transfer(session: Session, entry: Entry) -> dict[str, Any]:
    to_number = session.scalar(
        select(_m.member_number).join(Posting.__table__, _p.member_id == _m.id)
        .where(_p.entry_id == entry.id, _p.account == "member:available", _p.points > 0))
    return _transfer_body(entry.id, to_number or "", entry.points, entry.booked_at,
                          balance_after(entry))


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


def _keyed(session: Session, member_id: int,
           request_id: str | None) -> tuple[MemberRef, str | None]:
    """The member making the request and the ``partner_txn_id`` its key is kept as."""
    member = member_state(session, member_id)
    return member, stored_key(member.member_number, request_id)


def _spend(session: Session, member_id: int, points: int,
           now: datetime) -> tuple[Balance, list[Take]]:
    """Take ``points`` off the member's available points (one guarded statement) and from
    its live lots, earliest expiry first; under the member's wallet lock."""
    balance = journal.change_wallet(session, member_id, available=-points, activity_at=now)
    if balance is None:
        raise InsufficientPoints("You do not have enough points.",
                                 errors={"points": ["More than you have."]})
    return balance, journal.take_from_live_lots(session, member_id, points)


def transfer(member_id: int, to_member_number: str, points: int, *,
             request_id: str | None = None, share_name: bool = False,
             units: Units = UnitOfWork) -> Outcome:
    """Give ``points`` of the member's available points to another member.

    ``request_id`` is the member's ``Idempotency-Key`` (see the module doc). The receiver
    is shown the sender's first name if ``share_name``, otherwise only that the points
    came from a member (:func:`sender_label`).
    """
    digest = request_hash("transfer", {"to_member_number": to_member_number,
                                       "points": points,
                                       **({"share_name": True} if share_name else {})})

    def attempt() -> Outcome:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            sender, key = _keyed(session, member_id, request_id)
            if to_member_number == sender.member_number:
                message = "You cannot transfer points to yourself."
                raise InvalidRequest(message, errors={"to_member_number": [message]})
            receiver = member_by_number(session, to_member_number, "to_member_number")
            sender, receiver = locked_states(session, sender.id, receiver.id)
            existing = keyed_entry(session, sender.id, key)
            if existing is not None:
                return replay_keyed(session, existing, digest, _render_transfer)
            require_active(session, sender)
            require_active(session, receiver, "to_member_number")
            rules = rules_in_force(session)
            _check_transfer_rules(session, rules, sender.id, points, now)
            balance, takes = _spend(session, sender.id, points, now)
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
                                          balance_dict(balance)), replayed=False)

    # with a key, a retry after a commit lost in a failover finds the entry and replays it
    return run_with_retries(attempt, replays=request_id is not None)


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


def _donation_body(entry_id: int, partner_code: str, points: int, booked_at: datetime,
                   balance: dict[str, int]) -> dict[str, Any]:
    return {"id": entry_id, "type": "donation", "partner": partner_code, "points": points,
            "booked_at": booked_at, "balance": balance}


def _render_donation(session: Session, entry: Entry) -> dict[str, Any]:
    code = session.scalar(select(Partner.code).where(Partner.id == entry.partner_id))
    return _donation_body(entry.id, code or "", entry.points, entry.booked_at, balance_after(entry))


def donate(member_id: int, partner_code: str, points: int, *,
           request_id: str | None = None, units: Units = UnitOfWork) -> Outcome:
    """Give ``points`` to a charity partner: a redemption at the charity."""
    digest = request_hash("donation", {"partner": partner_code, "points": points})

    def attempt() -> Outcome:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            member, key = _keyed(session, member_id, request_id)
            (member,) = locked_states(session, member.id)
            existing = keyed_entry(session, member.id, key)
            if existing is not None:
                return replay_keyed(session, existing, digest, _render_donation)
            require_active(session, member)
            charity = session.execute(
                select(Partner.id, Partner.code, Partner.kind, Partner.status)
                .where(Partner.code == partner_code)).first()
            if charity is None or charity.kind != "charity" or charity.status != "active":
                message = (f"No partner {partner_code!r}." if charity is None else
                           f"{partner_code!r} is not an active charity.")
                raise InvalidRequest(message, errors={"partner": [
                    "Points can only be donated to an active charity partner."]})
            balance, takes = _spend(session, member.id, points, now)
            entry_id = journal.book_entry(
                session, kind="donation", booked_at=now, points=points,
                partner_id=charity.id, member_id=member.id, partner_txn_id=key,
                request_hash=digest if key else None, balance=balance, takes=takes,
                postings=[("member:available", member.id, None, -points),
                          ("partner:redeemed", None, charity.id, points)],
            )
            uow.commit()
            return Outcome(_donation_body(entry_id, charity.code, points, now,
                                          balance_dict(balance)), replayed=False)

    # with a key, a retry after a commit lost in a failover finds the entry and replays it
    return run_with_retries(attempt, replays=request_id is not None)
