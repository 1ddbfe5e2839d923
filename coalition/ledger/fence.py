"""The settlement fence: nothing is booked, and no rate card starts, inside a settlement
period that is closed or being closed.

On PostgreSQL the fence is one transaction-level advisory lock. A booking passes it shared
when it writes its entry (after the member's wallet lock, so a booking waiting for a busy
member never holds up a close), in the same round trip that reads the end of the latest
closed period; a close holds it exclusively for its whole transaction. So a close waits
for the bookings in flight and then sees them, and a booking that passes the fence after
a close sees that period closed: if its ``booked_at`` falls inside it, the booking is run
again from the start (:class:`BookingFenced`) with the clock read anew. On SQLite every
writer already holds the database's write lock from ``BEGIN IMMEDIATE``, which orders
bookings and closes the same way.

A rate card passes the fence like a booking, so that a card and a close are ordered by
this one lock: either the card comes first and the close prices with it, or the close
comes first and the card is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, select, text
from sqlalchemy.orm import Session

from coalition.db import Retry, UTCDateTime
from coalition.errors import NoRateCard, PeriodClosed
from coalition.models import RateCard
from settlement.models import SettlementRun

#: the advisory lock's key ("Coal"); the database function ``coalition_fence`` takes it
FENCE_KEY = 0x436F616C

_INFO_KEY = "coalition.fence"
_RUN = SettlementRun.__table__.c
_CARD = RateCard.__table__.c
_CLOSED_UNTIL = (select(func.max(_RUN.period_end)).where(_RUN.status == "closed")
                 .scalar_subquery())
# PostgreSQL: lock shared, then read with a fresh snapshot (the function is VOLATILE, so
# its second statement sees a close that committed while the lock was waited for)
_PASS_SHARED = func.coalition_fence(bindparam("fence_key"), type_=UTCDateTime())
_PRICED = exists().where(_CARD.partner_id == bindparam("partner"),
                         _CARD.valid_from <= bindparam("at"))
_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(:fence_key)")


class BookingFenced(PeriodClosed, Retry):
    """The clock was read before a close of the period it falls in: book again."""


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _passed(session: Session) -> tuple[bool, datetime | None]:
    """Whether this transaction has passed the fence, and what it read then."""
    state = session.info.get(_INFO_KEY)
    if state is not None and state[0] is session.get_transaction():
        return True, state[1]
    return False, None


def pass_shared(session: Session, priced_at: int | None = None,
                at: datetime | None = None) -> tuple[datetime | None, bool]:
    """Pass the fence (once per transaction) and, with ``priced_at``, see whether that
    partner has a rate card in force at ``at``; one round trip for both.

    Returns the end of the latest closed period and whether the partner is priced.
    """
    passed, closed_until = _passed(session)
    columns: list[Any] = []
    params: dict[str, Any] = {}
    if not passed:
        columns.append(_PASS_SHARED if _postgres(session) else _CLOSED_UNTIL)
        params["fence_key"] = FENCE_KEY
    if priced_at is not None:
        columns.append(_PRICED)
        params.update(partner=priced_at, at=at)
    if not columns:
        return closed_until, True
    row = session.execute(select(*columns), params).one()
    if not passed:
        closed_until = row[0]
        session.info[_INFO_KEY] = (session.get_transaction(), closed_until)
    return closed_until, bool(row[-1]) if priced_at is not None else True


def check_booking(session: Session, booked_at: datetime, priced_at: int | None) -> None:
    """Refuse an entry that would fall into a closed period (run it again) or that
    settlement could not price at ``priced_at``'s rate card."""
    closed_until, priced = pass_shared(session, priced_at, booked_at)
    if closed_until is not None and booked_at < closed_until:
        raise BookingFenced(f"Settlement is closed until {closed_until.isoformat()}.")
    if not priced:
        raise NoRateCard("The partner has no rate card in force yet: settlement could not "
                         "price this booking.")


def pass_for_rate_card(session: Session) -> datetime | None:
    """Pass the fence and read the end of the latest closed period: a new rate card must
    not start before it."""
    return pass_shared(session)[0]


def hold_exclusive(session: Session) -> None:
    """Hold the fence for the rest of the transaction: a close of a period."""
    if _postgres(session):
        session.execute(_EXCLUSIVE, {"fence_key": FENCE_KEY})
