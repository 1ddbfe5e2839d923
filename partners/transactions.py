"""A partner's bookings (earn, burn, capture, reversal) with what partner operations add
to each, in the booking's own transaction: the funding a prepaid partner's earn uses up
(its own points: a promotion's are charged to its funders in settlement), and the webhook
event in the outbox.

The ledger's use cases take the unit of work they book in (``units``) and keep their own
idempotency and retries; the one given here does this work just before it commits, so a
replay (which commits nothing) adds nothing, and a refusal here (``insufficient_funding``)
rolls the booking back whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, bindparam, cast, exists, func, select, update
from sqlalchemy.orm import Session

from coalition.db import UnitOfWork
from coalition.ledger import earn_burn, holds, reversals
from coalition.ledger.booking import PartnerRef
from coalition.ledger.idempotency import Outcome
from coalition.ledger.models import Entry, Posting
from coalition.ledger.rendering import render_transaction
from coalition.prepared import Prepared
from partners import funding, webhooks
from partners.api_schemas import TransactionSchema
from partners.models import FundingSlot, PartnerFunding, WebhookEndpoint

_E = Entry.__table__.c
_F = PartnerFunding.__table__.c
_S = FundingSlot.__table__.c
_EP = WebhookEndpoint.__table__.c
_EVENTS = {"earn": "transaction.booked", "burn": "transaction.booked",
           "hold_capture": "transaction.booked", "earn_reversal": "transaction.reversed",
           "burn_reversal": "transaction.reversed"}

_P = Posting.__table__.c
#: the points the partner itself issued (or took back) in the entry: an earn's own points,
#: without the promotions' that their funders pay for in settlement
_OWN_POINTS = (select(cast(func.abs(func.sum(_P.points)), BigInteger))
               .where(_P.entry_id == _E.id, _P.account == "partner:issued")
               .scalar_subquery())

# the entry just booked, the partner's funding and whether anything listens: one round trip
_BOOKED = (
    select(_E.id, _E.kind, _OWN_POINTS.label("points"), _F.model, _F.credit_limit_points,
           _F.low_threshold_points, _F.low_raised,
           exists().where(_EP.partner_id == bindparam("partner"), _EP.deleted_at.is_(None))
           .label("listened"))
    .select_from(Entry.__table__.outerjoin(PartnerFunding.__table__,
                                           _F.partner_id == _E.partner_id))
    .where(_E.partner_id == bindparam("partner"), _E.partner_txn_id == bindparam("txn"))
)


def _booked_and_taken() -> Any:
    """On PostgreSQL, :data:`_BOOKED` and a prepaid earn's take of its points in the same
    round trip: a slot that has them and that no other earn holds (``SKIP LOCKED``, as
    :func:`partners.funding.change` picks one) is locked and takes them, and the answer
    carries what that slot has left (``NULL``: nothing was taken, because the booking is
    no prepaid earn or no free slot had enough; :func:`report` then does what any other
    booking does). A prepaid earn is then as many statements as a post-paid one."""
    booked = _BOOKED.cte("booked")
    free = (select(_S.slot)
            .where(_S.partner_id == bindparam("partner"), booked.c.kind == "earn",
                   booked.c.model == "prepaid", booked.c.points > 0,
                   _S.remaining >= booked.c.points)
            .order_by(func.random()).limit(1)
            .with_for_update(of=FundingSlot.__table__, skip_locked=True)
            .cte("free"))
    points = select(booked.c.points).scalar_subquery()
    took = (update(FundingSlot.__table__)
            .where(_S.partner_id == bindparam("partner"), _S.slot == free.c.slot,
                   _S.remaining >= points)
            .values(remaining=_S.remaining - points)
            .returning(_S.remaining).cte("took"))
    return select(*booked.c, select(took.c.remaining).scalar_subquery().label("slot_left"))


_BOOKED_AND_TAKEN = Prepared(_booked_and_taken())
_BOOKED_ALONE = Prepared(_BOOKED)

#: more work for the same transaction, given the booked entry's id (a batch row's outcome)
Then = Callable[[Session, int], None]


def report(session: Session, partner: PartnerRef, partner_txn_id: str) -> int | None:
    """Use the funding and write the event of the entry booked as ``partner_txn_id``, in
    the caller's transaction; the entry's id."""
    together = session.get_bind().dialect.name == "postgresql"
    row = (_BOOKED_AND_TAKEN if together else _BOOKED_ALONE).first(
        session, {"partner": partner.id, "txn": partner_txn_id})
    if row is None:
        return None
    entry_id, kind, points, model, credit_limit, low_threshold, low_raised, listened = row[:8]
    slot_left = row.slot_left if together else None
    metered = model == "prepaid" or (model == "postpaid" and credit_limit is not None)
    if slot_left is not None:  # a prepaid earn, its points taken in the read
        funding.taken(session, partner.id, int(slot_left), low_threshold, bool(low_raised))
    elif metered and kind in ("earn", "earn_reversal"):
        funding.change(session, partner.id, -points if kind == "earn" else points, model,
                       low_threshold, bool(low_raised))
    if listened and kind in _EVENTS:
        entry = session.get_one(Entry, entry_id)
        body = TransactionSchema().dump(render_transaction(session, entry, partner.code))
        webhooks.emit(session, partner.id, _EVENTS[kind], body)
    return int(entry_id)


class Reported(UnitOfWork):
    """The unit of work a partner's booking runs in: it reports the booking as it
    commits (see :func:`report`), then runs ``then``."""

    def __init__(self, partner: PartnerRef, partner_txn_id: str, then: Then | None = None):
        super().__init__()
        self.partner = partner
        self.partner_txn_id = partner_txn_id
        self.then = then

    def commit(self) -> None:
        entry_id = report(self.session, self.partner, self.partner_txn_id)
        if self.then is not None and entry_id is not None:
            self.then(self.session, entry_id)
        super().commit()


def units(partner: PartnerRef, data: dict[str, Any],
          then: Then | None = None) -> Callable[[], UnitOfWork]:
    return lambda: Reported(partner, data["partner_txn_id"], then)


def earn(partner: PartnerRef, data: dict[str, Any], then: Then | None = None) -> Outcome:
    return earn_burn.earn(partner, data, units=units(partner, data, then))


def burn(partner: PartnerRef, data: dict[str, Any], then: Then | None = None) -> Outcome:
    return earn_burn.burn(partner, data, units=units(partner, data, then))


def capture(partner: PartnerRef, hold_id: int, data: dict[str, Any]) -> Outcome:
    return holds.capture_hold(partner, hold_id, data, units=units(partner, data))


def reverse(partner: PartnerRef, transaction_id: int, data: dict[str, Any],
            may_reverse: set[str] | None, then: Then | None = None) -> Outcome:
    return reversals.reverse(partner, transaction_id, data, may_reverse=may_reverse,
                             units=units(partner, data, then))
