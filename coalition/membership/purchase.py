"""Buying a paid membership: with points by the member (page or API), or with money at a
partner that records the sale.

Journal (``coalition ledger check`` verifies both):

* **with points** n: one ``membership`` entry of the member, member:available −n,
  coalition:membership +n; lots are consumed earliest expiry first as for a burn, so the
  points are redeemed by the coalition itself (settlement and the liability count them as
  redeemed, at no partner). A member's ``Idempotency-Key`` is kept as the entry's
  ``partner_txn_id`` like a transfer's (:mod:`coalition.ledger.transfers`).
* **with money** at partner p: one ``membership`` entry at p that moves no points and
  carries the price (``spend_amount``, ``spend_currency``), keyed by p's
  ``partner_txn_id`` like every partner booking; settlement reads it as money p collected
  for the coalition (p owes it; its net goes down by it). p finds the sale in its history
  (``GET /v1/transactions``, type ``membership_sale``, the price as its ``spend``) and
  hears of it by its ``transaction.booked`` webhook.

Either way the period starts now and the member is told (one notification). A member holds
one plan at a time: a purchase while one is in force is refused with ``membership_active``
(the unique index on the current row backs the check made under the wallet lock).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition import clock, events
from coalition.clock import add_months
from coalition.db import UnitOfWork, Units, run_with_retries
from coalition.errors import InsufficientPoints, InvalidRequest, MembershipActive
from coalition.ledger import journal
from coalition.ledger.booking import PartnerRef, partner_of
from coalition.ledger.idempotency import (
    Outcome,
    first_read,
    idempotent,
    replay_keyed,
    request_hash,
    stored_key,
)
from coalition.ledger.lookup import (
    MemberRef,
    lock_members,
    locked_states,
    member_state,
    require_active,
)
from coalition.ledger.models import Entry
from coalition.ledger.rendering import TransactionEventSchema, balance_dict, render_transaction
from coalition.membership.models import Membership
from coalition.membership.plans import Plan, plan_of
from coalition.membership.queries import current_row, render
from coalition.notifications.service import notify
from coalition.program.service import rules_in_force

_e = Entry.__table__.c


def _make_room(session: Session, member: MemberRef, now: datetime) -> None:
    """Refuse a purchase while the member's current membership is in force; one whose
    period is over (the daily job has not ended it yet) lapses now."""
    current = current_row(session, member.id)
    if current is None:
        return
    if current.ends_at > now:
        message = (f"Member {member.member_number} already holds the {current.plan_name} "
                   f"membership until {current.ends_at:%Y-%m-%d}.")
        raise MembershipActive(message, errors={"plan": [message]})
    current.status, current.ended_at = "lapsed", current.ends_at
    session.flush()


def start(session: Session, member: MemberRef, plan: Plan, *, now: datetime,
          entry_id: int, auto_renew: bool, paid_with: str, partner_id: int | None = None,
          renews: Membership | None = None) -> Membership:
    """The row of a period that starts now (or where ``renews`` ended) and its notice."""
    starts_at = renews.ends_at if renews is not None else now
    row = Membership(
        member_id=member.id, plan=plan.code, plan_name=plan.name, multiplier=plan.multiplier,
        status="active", auto_renew=auto_renew, starts_at=starts_at,
        ends_at=add_months(starts_at, plan.period_months), period_months=plan.period_months,
        paid_with=paid_with, points=plan.price_points if paid_with == "points" else 0,
        price_amount=plan.price_amount if paid_with == "money" else None,
        price_currency=plan.price_currency if paid_with == "money" else None,
        partner_id=partner_id, entry_id=entry_id,
        renews_id=renews.id if renews is not None else None, created_at=now)
    session.add(row)
    session.flush()
    event = "renewed" if renews is not None else "bought"
    notify(session, member.id, "membership", f"membership:{row.id}:{event}", {
        "event": event, "plan": plan.code, "name": plan.name, "paid_with": paid_with,
        "points": row.points, "starts_at": row.starts_at.isoformat(),
        "ends_at": row.ends_at.isoformat(), "auto_renew": auto_renew}, now=now)
    return row


def pay_with_points(session: Session, member: MemberRef, plan: Plan, now: datetime,
                    key: str | None = None, digest: str | None = None) -> tuple[int, Any]:
    """Book the ``membership`` entry that spends the plan's points (the wallet is locked);
    ``insufficient_points`` when the member has too few. Returns the entry and balance."""
    points = plan.price_points
    assert points is not None
    balance = journal.change_wallet(session, member.id, available=-points, activity_at=now)
    if balance is None:
        message = f"The {plan.name} membership costs {points} points; you have fewer."
        raise InsufficientPoints(message, errors={"plan": [message]})
    takes = journal.take_from_live_lots(session, member.id, points)
    entry_id = journal.book_entry(
        session, kind="membership", booked_at=now, points=points, member_id=member.id,
        partner_txn_id=key, request_hash=digest if key else None, balance=balance,
        takes=takes, note=f"membership {plan.code}",
        postings=[("member:available", member.id, None, -points),
                  ("coalition:membership", None, None, points)])
    return entry_id, balance


def _answer(session: Session, row: Membership, now: datetime,
            balance: dict[str, int] | None) -> dict[str, Any]:
    return {**render(session, row, now), "balance": balance}


def _render_entry(session: Session, entry: Entry) -> dict[str, Any]:
    row = session.scalars(select(Membership).where(Membership.entry_id == entry.id)).one()
    balance = (None if entry.available_after is None else
               {"available": entry.available_after, "pending": entry.pending_after or 0,
                "held": entry.held_after or 0})
    return _answer(session, row, clock.utcnow(), balance)


def buy_with_points(member_id: int, plan_code: str, auto_renew: bool | None = None, *,
                    request_id: str | None = None, units: Units = UnitOfWork) -> Outcome:
    """The member buys ``plan_code`` with points; ``auto_renew`` (by default the plan's
    choice) renews it with points at the end of each period."""
    digest = request_hash("membership", {"plan": plan_code, "auto_renew": auto_renew})

    def attempt() -> Outcome:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            member = member_state(session, member_id)
            key = stored_key(member.member_number, request_id)
            (member,) = locked_states(session, member.id)
            if key is not None:
                entry = session.scalar(select(Entry).where(
                    _e.member_id == member.id, _e.partner_txn_id == key,
                    _e.kind == "membership"))
                if entry is not None:
                    return replay_keyed(session, entry, digest, _render_entry)
            require_active(session, member)
            plan = plan_of(rules_in_force(session), plan_code)
            if plan.price_points is None:
                message = f"The {plan.name} membership is sold for money, at a partner."
                raise InvalidRequest(message, errors={"plan": [message]})
            _make_room(session, member, now)
            entry_id, balance = pay_with_points(session, member, plan, now, key, digest)
            row = start(session, member, plan, now=now, entry_id=entry_id,
                        auto_renew=plan.auto_renew_default if auto_renew is None
                        else auto_renew, paid_with="points")
            body = _answer(session, row, now, balance_dict(balance))
            uow.commit()
            return Outcome(body, replayed=False)

    # with a key, a retry after a commit lost in a failover finds the entry and replays it
    return run_with_retries(attempt, replays=request_id is not None)


def record_money_purchase(partner_id: int | PartnerRef, data: dict[str, Any], *,
                          units: Units = UnitOfWork) -> Outcome:
    """A partner took the plan's price in money from the member and records the sale:
    ``data`` names the member (``member_number`` or ``partner_member_ref``), the ``plan``,
    the ``price`` paid (the plan's, in the partner's currency) and the ``partner_txn_id``."""
    partner = partner_of(partner_id)
    digest = request_hash("membership", data)

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        member, _ = first_read(session, partner, data["partner_txn_id"], data)
        lock_members(session, member.id)
        plan = plan_of(rules_in_force(session), data["plan"])
        price = data["price"]
        if plan.price_amount is None:
            message = f"The {plan.name} membership is sold for points only."
            raise InvalidRequest(message, errors={"plan": [message]})
        if plan.price_currency != partner.currency:
            message = (f"The {plan.name} membership is priced in {plan.price_currency}; "
                       f"this partner settles in {partner.currency}.")
            raise InvalidRequest(message, errors={"price": {"currency": [message]}})
        if (price["amount"], price["currency"]) != (plan.price_amount, plan.price_currency):
            message = (f"The {plan.name} membership costs {plan.price_amount} "
                       f"{plan.price_currency}.")
            raise InvalidRequest(message, errors={"price": {"amount": [message]}})
        _make_room(session, member, now)
        entry_id = journal.book_entry(
            session, kind="membership", booked_at=now, points=0, partner_id=partner.id,
            member_id=member.id, partner_txn_id=data["partner_txn_id"], request_hash=digest,
            spend_amount=plan.price_amount, spend_currency=plan.price_currency,
            note=f"membership {plan.code}", postings=[], money_only=True)
        auto_renew = data.get("auto_renew")
        row = start(session, member, plan, now=now, entry_id=entry_id, paid_with="money",
                    partner_id=partner.id,
                    auto_renew=plan.auto_renew_default if auto_renew is None else auto_renew)
        # the sale is in the partner's history as a membership_sale, and its systems hear
        # of it as of any booking
        sale = render_transaction(session, session.get_one(Entry, entry_id), partner.code)
        events.publish(session, partner.id, "transaction.booked",
                       TransactionEventSchema().dump(sale))
        return _answer(session, row, now, None)

    return idempotent(partner, data["partner_txn_id"], digest, work, _render_entry,
                      None, units, probe=False)
