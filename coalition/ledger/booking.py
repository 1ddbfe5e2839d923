"""What every partner booking shares: the partner it is booked for, the check of
``occurred_at``, and the wallet change that refuses for want of points or room.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from coalition.db import read
from coalition.errors import BalanceLimit, InsufficientPoints, InvalidRequest
from coalition.ledger import journal
from coalition.ledger.journal import Balance
from coalition.ledger.lookup import MemberRef
from coalition.models import Partner

#: an ``occurred_at`` may run ahead of the server clock by this much (till clocks drift)
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class PartnerRef:
    id: int
    code: str
    currency: str


def partner_ref(session: Session, partner_id: int) -> PartnerRef:
    row = session.execute(select(Partner.id, Partner.code, Partner.currency)
                          .where(Partner.id == partner_id)).one()
    return PartnerRef(*row)


def partner_of(partner: int | PartnerRef) -> PartnerRef:
    if isinstance(partner, PartnerRef):
        return partner
    with read() as session:
        return partner_ref(session, partner)


def check_occurred(occurred_at: datetime | None, now: datetime) -> None:
    if occurred_at is not None and occurred_at > now + CLOCK_SKEW:
        raise InvalidRequest("occurred_at is in the future.",
                             errors={"occurred_at": ["Must not be in the future."]})


def debit_wallet(session: Session, member: MemberRef, now: datetime, available: int = 0,
           held: int = 0, pending: int = 0) -> Balance:
    balance = journal.change_wallet(session, member.id, available=available, held=held,
                                    pending=pending, activity_at=now)
    if balance is None:
        refuse_wallet_change(member, available, held, pending)
    return balance


def refuse_wallet_change(member: MemberRef, available: int = 0, held: int = 0,
                         pending: int = 0) -> NoReturn:
    """The refusal of a wallet change whose guard failed: a change that takes points (a
    hold moves them from available to held) is refused for want of them; only a pure
    credit can be refused by the limit."""
    if available >= 0 and pending >= 0 and held >= 0:
        raise BalanceLimit("The member's balance would exceed the largest allowed.")
    raise InsufficientPoints(f"Member {member.member_number} does not have enough points.")
