"""A member opens a missing-points claim: an earn the partner did not post.

Refused at once (and nothing written) when the purchase is outside the program's claim
window or older than its late-posting limit (whichever is shorter), in the future, at a
partner that is not an active merchant, in another currency than the partner's, already
booked by the partner (the member gave its ``partner_txn_id``), claimed before (one claim
per partner and receipt, whatever became of it), or when the member already has as many
open claims as the program allows (``claims.max_open``: a cap against abuse, counted under
the member's wallet lock so two claims at once cannot both pass it). The partner is told
with the ``claim.opened`` event, in the same transaction.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coalition import clock, events
from coalition.claims import queries
from coalition.claims.models import Claim
from coalition.claims.schemas import ClaimSchema
from coalition.db import UnitOfWork, Units, run_with_retries
from coalition.errors import AlreadyExists, ClaimLimit, InvalidRequest, SaleAlreadyBooked
from coalition.ledger.booking import check_occurred
from coalition.ledger.lookup import locked_states, require_active
from coalition.ledger.models import Entry
from coalition.models import Partner
from coalition.program.service import rules_in_force

_E = Entry.__table__.c
_C = Claim.__table__.c


def _partner(session: Session, code: str) -> Partner:
    partner = session.scalar(select(Partner).where(Partner.code == code))
    if partner is None or partner.status != "active" or partner.kind != "merchant":
        message = f"No partner {code!r} takes missing-points claims."
        raise InvalidRequest(message, errors={"partner": [message]})
    return partner


def _check_window(session: Session, data: dict[str, Any]) -> None:
    now = clock.utcnow()
    occurred = data["occurred_at"]
    check_occurred(occurred, now)
    rules = rules_in_force(session)
    days = min(rules["claims"]["window_days"], rules["late_posting_days"])
    if occurred < now - timedelta(days=days):
        message = (f"Missing points are claimed within {days} days of the purchase; this "
                   f"one was on {occurred:%-d %b %Y}.")
        raise InvalidRequest(message, errors={"occurred_at": [message]})


def open_claim(member_id: int, data: dict[str, Any], *, units: Units = UnitOfWork
               ) -> dict[str, Any]:
    """Open the member's claim (``ClaimRequestSchema``); the claim as the member sees it."""
    receipt = data.get("receipt") or data["partner_txn_id"]

    def attempt() -> dict[str, Any]:
        with units() as uow:
            session = uow.session
            (member,) = locked_states(session, member_id)
            require_active(session, member)
            partner = _partner(session, data["partner"])
            if data["spend"]["currency"] != partner.currency:
                message = f"{partner.name} sells in {partner.currency}."
                raise InvalidRequest(message, errors={"spend": {"currency": [message]}})
            _check_window(session, data)
            txn = data.get("partner_txn_id")
            if txn and session.scalar(select(_E.id).where(_E.partner_id == partner.id,
                                                          _E.partner_txn_id == txn)):
                message = f"{partner.name} has booked {txn} already: see your history."
                raise SaleAlreadyBooked(message, errors={"partner_txn_id": [message]})
            if session.scalar(select(_C.id).where(_C.partner_id == partner.id,
                                                  _C.receipt == receipt)):
                raise _claimed_before(partner.name, receipt)
            limit = rules_in_force(session)["claims"]["max_open"]
            if queries.open_count(session, member.id) >= limit:
                raise ClaimLimit(f"You have {limit} open claims: wait for the partners' "
                                 f"answers before claiming more.")
            claim = Claim(member_id=member.id, partner_id=partner.id, receipt=receipt,
                          partner_txn_id=txn, spend_amount=data["spend"]["amount"],
                          spend_currency=data["spend"]["currency"],
                          occurred_at=data["occurred_at"], status="open",
                          opened_at=clock.utcnow())
            session.add(claim)
            session.flush()
            body = queries.render(claim, partner.code, partner.name, member.member_number)
            events.publish(session, partner.id, "claim.opened", ClaimSchema().dump(body))
            uow.commit()
            return body

    try:
        return run_with_retries(attempt)
    except IntegrityError:
        # another member claimed the same receipt at the same moment, and won
        with UnitOfWork(readonly=True) as uow:
            name = uow.session.scalar(select(Partner.name).where(
                Partner.code == data["partner"]))
        raise _claimed_before(name or data["partner"], receipt) from None


def _claimed_before(partner_name: str, receipt: str) -> AlreadyExists:
    message = f"Receipt {receipt} at {partner_name} was claimed before."
    return AlreadyExists(message, errors={"receipt": [message]})
