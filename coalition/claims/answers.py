"""A partner answers a missing-points claim: confirms it (the earn is booked) or refuses
it (with a reason the member sees). Either answer is final, and the member is told.

Each answer locks the claim's row first, so two answers at once (two confirmations, or a
confirmation and a refusal) decide once: the second finds the claim answered. Answering
again as it was answered returns the claim as it stands (a retried request changes
nothing); answering the other way is refused (``claim_answered``).

A confirmation books the earn through the same use case as ``POST /v1/earn`` (``book``,
which the partner API hands in to add its funding and webhook), priced as any earn now
(rate card, tier multiplier, pending days), under the claim's ``partner_txn_id``: the
member's own reference of the sale when given, else ``claim-<id>``. If the partner has
meanwhile booked an earn under that id for the same member (or a member merged with
them), the confirmation matches it rather than booking again; under that id for anyone
else, or anything but an earn, it is refused (``already_booked``). A later ``POST
/v1/earn`` with that id finds it used (a replay or ``idempotency_conflict``), so the
sale is never credited twice.

A member merged since the claim was opened gets the points (and the answer) in the
surviving account; a closed member's claim can only be refused (the confirmation is
refused with ``member_closed``), and a closed member is not told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.claims import queries
from coalition.claims.models import Claim
from coalition.db import UnitOfWork, Units, run_with_retries
from coalition.errors import ClaimAnswered, NotFound, SaleAlreadyBooked
from coalition.ledger import earn_burn
from coalition.ledger.booking import PartnerRef
from coalition.ledger.idempotency import Outcome
from coalition.ledger.lookup import MemberRef, member_ids_of, member_state, require_active
from coalition.ledger.models import Entry
from coalition.notifications.service import notify

#: books the earn of a confirmed claim in the caller's transaction
Book = Callable[[Session, PartnerRef, dict[str, Any]], Outcome]

_E = Entry.__table__.c


def book_earn(session: Session, partner: PartnerRef, data: dict[str, Any]) -> Outcome:
    return earn_burn.earn(partner, data, session=session)


def _locked(session: Session, partner_id: int, claim_id: int) -> Claim:
    claim = session.scalar(select(Claim).where(Claim.id == claim_id,
                                               Claim.partner_id == partner_id)
                           .with_for_update())
    if claim is None:
        raise NotFound(f"No claim {claim_id}.")
    return claim


def _holder(session: Session, member_id: int) -> MemberRef:
    """The account a claim's answer goes to: the member's, or the one it was merged into."""
    member = member_state(session, member_id)
    while member.status == "merged" and member.merged_into_id is not None:
        member = member_state(session, member.merged_into_id)
    return member


def _answered(claim: Claim, wanted: str) -> ClaimAnswered:
    return ClaimAnswered(f"Claim {claim.id} was {claim.status} already; the answer is "
                         f"final (it cannot be {wanted} now).")


def _tell(session: Session, member: MemberRef, claim: Claim, partner: PartnerRef) -> None:
    if member.status == "closed":
        return
    notify(session, member.id, "claim_answered", f"claim:{claim.id}", {
        "claim_id": claim.id, "partner": partner.code, "receipt": claim.receipt,
        "status": claim.status, "points": claim.points, "reason": claim.reason})


def confirm(partner: PartnerRef, claim_id: int, answered_by: str, *, book: Book = book_earn,
            units: Units = UnitOfWork) -> tuple[dict[str, Any], bool]:
    """Confirm the claim and book its earn; the claim, and whether it was confirmed
    before (nothing done now)."""

    def attempt() -> tuple[dict[str, Any], bool]:
        with units() as uow:
            session = uow.session
            claim = _locked(session, partner.id, claim_id)
            if claim.status == "confirmed":
                return queries.claim_of(session, claim.id), True
            if claim.status != "open":
                raise _answered(claim, "confirmed")
            member = _holder(session, claim.member_id)
            require_active(session, member)
            txn = queries.booking_txn_id(claim)
            booked = session.execute(select(_E.id, _E.kind, _E.member_id, _E.points).where(
                _E.partner_id == partner.id, _E.partner_txn_id == txn)).first()
            if booked is not None:
                if (booked.kind != "earn"
                        or booked.member_id not in member_ids_of(member.id, session)
                        or session.scalar(select(Claim.id).where(
                            Claim.entry_id == booked.id)) is not None):
                    message = (f"{txn} is booked already, and not as this member's earn "
                               f"of no other claim: refuse the claim.")
                    raise SaleAlreadyBooked(message)
                entry_id, points = booked.id, booked.points
            else:
                body = book(session, partner, {
                    "member_number": member.member_number, "partner_txn_id": txn,
                    "spend": {"amount": claim.spend_amount,
                              "currency": claim.spend_currency},
                    "occurred_at": claim.occurred_at}).body
                entry_id, points = body["id"], body["points"]
            claim.status, claim.entry_id, claim.points = "confirmed", entry_id, points
            claim.answered_at, claim.answered_by = clock.utcnow(), answered_by
            session.flush()
            _tell(session, member, claim, partner)
            answer = queries.claim_of(session, claim.id)
            uow.commit()
            return answer, False

    return run_with_retries(attempt)


def refuse(partner: PartnerRef, claim_id: int, reason: str, answered_by: str, *,
           units: Units = UnitOfWork) -> tuple[dict[str, Any], bool]:
    """Refuse the claim, saying why; the claim, and whether it was refused before."""

    def attempt() -> tuple[dict[str, Any], bool]:
        with units() as uow:
            session = uow.session
            claim = _locked(session, partner.id, claim_id)
            if claim.status == "refused":
                return queries.claim_of(session, claim.id), True
            if claim.status != "open":
                raise _answered(claim, "refused")
            claim.status, claim.reason = "refused", reason
            claim.answered_at, claim.answered_by = clock.utcnow(), answered_by
            session.flush()
            _tell(session, _holder(session, claim.member_id), claim, partner)
            answer = queries.claim_of(session, claim.id)
            uow.commit()
            return answer, False

    return run_with_retries(attempt)
