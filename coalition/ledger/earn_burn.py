"""Earn and burn: a partner credits points for a spend (or as given) and redeems them.
Each is one unit of work keyed by the partner's ``partner_txn_id``
(:mod:`coalition.ledger.idempotency`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.clock import add_months
from coalition.db import UnitOfWork, Units
from coalition.errors import InvalidRequest, NoRateCard
from coalition.ledger import journal, tiers
from coalition.ledger.bonuses import release_welcome_bonus
from coalition.ledger.booking import (
    PartnerRef,
    check_occurred,
    debit_wallet,
    partner_of,
    refuse_wallet_change,
)
from coalition.ledger.idempotency import Outcome, first_read, idempotent, request_hash
from coalition.ledger.models import Member, Wallet
from coalition.ledger.rendering import render_transaction, transaction_body
from coalition.membership.models import multiplier_in_force
from coalition.models import RateCard
from coalition.money import floor_points
from coalition.offers import earning as promotions
from coalition.program.service import latest_version_columns, rules_of_version

_EARN_RATE = (select(RateCard.__table__.c.earn_rate)
              .where(RateCard.__table__.c.partner_id == bindparam("partner"),
                     RateCard.__table__.c.valid_from <= bindparam("now"))
              .order_by(RateCard.__table__.c.valid_from.desc()).limit(1))
_W = Wallet.__table__.c
_m = Member.__table__.c


def _earn_needs() -> list[Any]:
    """What an earn reads with its member, in its first statement: the rules' version, the
    partner's earn rate in force now, the member's pending points (none pending: no
    welcome bonus waits, :func:`~coalition.ledger.bonuses.release_welcome_bonus`), the
    multiplier of the member's paid membership in force (NULL: none), the member's
    enrolment (promotions for new members) and the promotions' version."""
    return [*latest_version_columns(), _EARN_RATE.scalar_subquery(),
            select(_W.pending).where(_W.member_id == _m.id).scalar_subquery(),
            multiplier_in_force(_m.id), _m.created_at, *promotions.version_columns()]


def earn(partner_id: int | PartnerRef, data: dict[str, Any], *,
         session: Session | None = None, units: Units = UnitOfWork) -> Outcome:
    """Credit points for a spend (× earn rate × tier multiplier × the multiplier of the
    member's paid membership in force, rounded down, and what the promotions in force add)
    or as given."""
    partner = partner_of(partner_id)
    digest = request_hash("earn", data)

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        check_occurred(data.get("occurred_at"), now)
        member, (version, published_at, earn_rate, pending, plan_multiplier, enrolled_at,
                 offers_version, offers_created_at) = first_read(
            session, partner, data["partner_txn_id"], data, ("earn", _earn_needs),
            {"now": now})
        rules = rules_of_version(session, version, published_at)
        spend = data.get("spend")
        if spend is not None:
            if spend["currency"] != partner.currency:
                message = f"This partner earns in {partner.currency}."
                raise InvalidRequest(message, errors={"spend": {"currency": [message]}})
            if earn_rate is None:
                raise NoRateCard("The partner has no rate card in force yet: settlement "
                                 "could not price this booking.")
            points = floor_points(spend["amount"] * earn_rate
                                  * tiers.multiplier(rules, member.tier)
                                  * (plan_multiplier or 1))
            if points < 1:
                raise InvalidRequest("The spend earns no points.",
                                     errors={"spend": {"amount": ["Earns no points."]}})
            # a welcome bonus waits as pending points, booked with the member: none pending
            # in the first read, none waiting (one moved in by a merge since is released
            # by the member's next earn from a spend)
            if pending:
                release_welcome_bonus(session, member.id, now)
            applied = promotions.apply(
                session, promotions.promotions_of_version(session, offers_version,
                                                          offers_created_at),
                partner_id=partner.id, member_id=member.id, tier=member.tier,
                enrolled_at=enrolled_at, base=points, now=now)
        else:
            points = data["points"]
            applied = promotions.Applied()
        base, points = points, points + applied.points
        pending_days = rules["pending_days"]
        pending_until = now + timedelta(days=pending_days) if pending_days else None
        expiry = rules["expiry"]
        expires_at = add_months(now, expiry["months"]) if expiry["policy"] == "fixed" else None
        available, pending_points = (0, points) if pending_until else (points, 0)
        booked = journal.credit_with_lot(
            session, member_id=member.id, activity_at=now,
            available=available, pending=pending_points,
            kind="earn", booked_at=now, occurred_at=data.get("occurred_at"),
            points=points, partner_id=partner.id, partner_txn_id=data["partner_txn_id"],
            request_hash=digest, spend_amount=spend["amount"] if spend else None,
            spend_currency=spend["currency"] if spend else None,
            postings=[("partner:issued", None, partner.id, -base), *applied.postings(),
                      ("member:pending" if pending_until else "member:available",
                       member.id, None, points)],
            lot=journal.NewLot(origin_partner_id=partner.id, source="earn", points=points,
                               earned_at=now, expires_at=expires_at,
                               pending_until=pending_until),
        )
        if booked is None:
            refuse_wallet_change(member, available=available, pending=pending_points)
        balance, entry_id = booked
        applied.record(session, entry_id)
        tiers.upgrade(session, member.id, member.tier, rules, now)
        body = transaction_body(
            entry_id=entry_id, kind="earn", partner_code=partner.code,
            member_number=member.member_number, partner_txn_id=data["partner_txn_id"],
            points=points, pending=pending_until is not None, booked_at=now,
            occurred_at=data.get("occurred_at") or now, reference=None, balance=balance,
            spend_amount=spend["amount"] if spend else None,
            spend_currency=spend["currency"] if spend else None,
        )
        body["lines"] = applied.lines(base)
        return body

    return idempotent(partner, data["partner_txn_id"], digest, work,
                      lambda s, e: render_transaction(s, e, partner.code), session, units,
                      probe=False)


def burn(partner_id: int | PartnerRef, data: dict[str, Any], *,
         session: Session | None = None, units: Units = UnitOfWork) -> Outcome:
    """Spend points at this partner, from the member's earliest-expiring lots."""
    partner = partner_of(partner_id)
    digest = request_hash("burn", data)

    def work(session: Session) -> dict[str, Any]:
        now = clock.utcnow()
        check_occurred(data.get("occurred_at"), now)
        member, _ = first_read(session, partner, data["partner_txn_id"], data)
        points = data["points"]
        balance = debit_wallet(session, member, now, available=-points)
        takes = journal.take_from_live_lots(session, member.id, points, apply=False)
        entry_id = journal.book_entry(
            session, kind="burn", booked_at=now, occurred_at=data.get("occurred_at"),
            points=points, partner_id=partner.id, member_id=member.id,
            partner_txn_id=data["partner_txn_id"], request_hash=digest, balance=balance,
            postings=[("member:available", member.id, None, -points),
                      ("partner:redeemed", None, partner.id, points)],
            takes=takes, apply_to_lots=True,
        )
        return transaction_body(
            entry_id=entry_id, kind="burn", partner_code=partner.code,
            member_number=member.member_number, partner_txn_id=data["partner_txn_id"],
            points=points, pending=False, booked_at=now,
            occurred_at=data.get("occurred_at") or now, reference=None, balance=balance,
        )

    return idempotent(partner, data["partner_txn_id"], digest, work,
                      lambda s, e: render_transaction(s, e, partner.code), session, units,
                      probe=False)
