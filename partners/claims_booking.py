"""The earn of a confirmed missing-points claim as a partner's booking: the ledger's earn,
then what partner operations add to it (funding used, ``transaction.booked``), in the
claim's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from coalition.claims.answers import book_earn
from coalition.ledger.booking import PartnerRef
from coalition.ledger.idempotency import Outcome
from partners.transactions import report


def book_reported(session: Session, partner: PartnerRef, data: dict[str, Any]) -> Outcome:
    outcome = book_earn(session, partner, data)
    if not outcome.replayed:
        report(session, partner, data["partner_txn_id"])
    return outcome
