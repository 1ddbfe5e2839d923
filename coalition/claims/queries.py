"""Reading claims: a member's own (with those of members merged into them), a partner's
(filtered by status), one by id; each as :class:`~coalition.claims.schemas.ClaimSchema`
shows it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coalition import cursor as paging
from coalition.claims.models import Claim
from coalition.db import read
from coalition.errors import NotFound
from coalition.ledger.lookup import member_ids_of
from coalition.ledger.models import Member
from coalition.models import Partner

_C = Claim.__table__.c
_CLAIMS = (select(Claim, Partner.code, Partner.name, Member.member_number)
           .join(Partner, Partner.id == Claim.partner_id)
           .join(Member, Member.id == Claim.member_id))


def booking_txn_id(claim: Claim) -> str:
    """The ``partner_txn_id`` a confirmation books the earn under: the member's own
    reference of the sale, else one derived from the claim (a retried confirmation, or
    one racing another, finds it booked)."""
    return claim.partner_txn_id or f"claim-{claim.id}"


def render(claim: Claim, partner_code: str, partner_name: str,
           member_number: str) -> dict[str, Any]:
    return {
        "id": claim.id, "partner": partner_code, "partner_name": partner_name,
        "member_number": member_number, "receipt": claim.receipt,
        "partner_txn_id": booking_txn_id(claim),
        "spend": {"amount": claim.spend_amount, "currency": claim.spend_currency},
        "occurred_at": claim.occurred_at, "status": claim.status,
        "opened_at": claim.opened_at, "answered_at": claim.answered_at,
        "reason": claim.reason, "points": claim.points, "transaction_id": claim.entry_id,
    }


def claim_of(session: Session, claim_id: int) -> dict[str, Any]:
    row = session.execute(_CLAIMS.where(_C.id == claim_id)).one()
    return render(*row)


def _page(session: Session, query: Any, filters: dict[str, Any]) -> dict[str, Any]:
    limit = filters.get("limit", 50)
    if filters.get("status"):
        query = query.where(_C.status == filters["status"])
    if filters.get("cursor"):
        query = query.where(_C.id < paging.decode("c", filters["cursor"]))
    rows = session.execute(query.order_by(_C.id.desc()).limit(limit + 1)).all()
    items = [render(*row) for row in rows[:limit]]
    more = len(rows) > limit
    return {"items": items,
            "next_cursor": paging.encode("c", items[-1]["id"]) if more else None}


def member_claims(member_id: int, filters: dict[str, Any]) -> dict[str, Any]:
    """The member's claims, newest first (those of members merged into them too)."""
    with read() as session:
        ids = member_ids_of(member_id, session)
        return _page(session, _CLAIMS.where(_C.member_id.in_(ids)), filters)


def partner_claims(partner_id: int, filters: dict[str, Any]) -> dict[str, Any]:
    """Members' claims at this partner, newest first, by status if asked."""
    with read() as session:
        return _page(session, _CLAIMS.where(_C.partner_id == partner_id), filters)


def partner_claim(partner_id: int, claim_id: int) -> dict[str, Any]:
    with read() as session:
        row = session.execute(_CLAIMS.where(_C.id == claim_id,
                                            _C.partner_id == partner_id)).first()
        if row is None:
            raise NotFound(f"No claim {claim_id}.")
        return render(*row)


def open_count(session: Session, member_id: int) -> int:
    return session.scalar(select(func.count()).where(_C.member_id == member_id,
                                                     _C.status == "open")) or 0
