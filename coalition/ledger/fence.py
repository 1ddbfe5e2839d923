"""The settlement fence: nothing is booked, and no rate card starts, inside a settlement
period that is closed or being closed.

On PostgreSQL the fence is one transaction-level advisory lock. A booking passes it shared
in the statement that writes its entry (``INSERT … RETURNING coalition_fence(…)``: no round
trip of its own, and after the member's wallet lock, so a booking waiting for a busy member
never holds up a close), which also reads the end of the latest closed period; a close
holds it exclusively for its whole transaction. So a close waits for the bookings in
flight and then sees them, and a booking that passes the fence after a close sees that
period closed: if its ``booked_at`` falls inside it, the booking is run again from the
start (:class:`BookingFenced`) with the clock read anew. On SQLite every writer already
holds the database's write lock from ``BEGIN IMMEDIATE``, which orders bookings and closes
the same way; there the end of the latest closed period is read before the entry is
written.

The same statement sees whether the entry's partner has a rate card in force at
``booked_at`` (settlement prices every entry on a partner's account).

A rate card passes the fence like a booking, so that a card and a close are ordered by
this one lock: either the card comes first and the close prices with it, or the close
comes first and the card is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, column, exists, func, select, table, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from coalition.db import Retry, UTCDateTime
from coalition.errors import NoRateCard, PeriodClosed
from coalition.models import RateCard

#: the advisory lock's key ("Coal"); the database function ``coalition_fence`` takes it
FENCE_KEY = 0x436F616C

#: what the fence reads of settlement's runs (the table is settlement's; the ledger only
#: needs the end of the latest closed period, and never imports settlement for it)
_RUN = table("settlement_run", column("status", String()),
             column("period_end", UTCDateTime())).c
_CARD = RateCard.__table__.c
_CLOSED_UNTIL = (select(func.max(_RUN.period_end)).where(_RUN.status == "closed")
                 .scalar_subquery())
# PostgreSQL: lock shared, then read with a fresh snapshot (the function is VOLATILE, so
# its second statement sees a close that committed while the lock was waited for)
_PASS_SHARED = func.coalition_fence(bindparam("fence_key"), type_=UTCDateTime())
_PRICED = exists().where(_CARD.partner_id == bindparam("fence_partner"),
                         _CARD.valid_from <= bindparam("fence_at"))
_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(:fence_key)")


class BookingFenced(PeriodClosed, Retry):
    """The clock was read before a close of the period it falls in: book again."""


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def in_statement(session: Session) -> bool:
    """Whether the entry's own statement passes the fence (:func:`returning`)."""
    return _postgres(session)


def returning(priced: bool) -> list[Any]:
    """What the entry's INSERT returns after its id to pass the fence: the end of the
    latest closed period, and with ``priced`` whether the partner's card is in force."""
    return [_PASS_SHARED, _PRICED] if priced else [_PASS_SHARED]


def parameters(partner_id: int | None, at: datetime | None) -> dict[str, Any]:
    params: dict[str, Any] = {"fence_key": FENCE_KEY}
    if partner_id is not None:
        params.update(fence_partner=partner_id, fence_at=at)
    return params


def read(session: Session, partner_id: int | None,
         at: datetime | None = None) -> tuple[datetime | None, bool]:
    """Pass the fence (lock shared on PostgreSQL) in a statement of its own, and read the
    end of the latest closed period and whether ``partner_id`` is priced at ``at``."""
    columns: list[ColumnElement[Any]] = [_PASS_SHARED if _postgres(session) else _CLOSED_UNTIL]
    if partner_id is not None:
        columns.append(_PRICED)
    row = session.execute(select(*columns), parameters(partner_id, at)).one()
    return row[0], bool(row[1]) if partner_id is not None else True


def judge(booked_at: datetime, closed_until: datetime | None, priced: bool) -> None:
    """Refuse an entry that would fall into a closed period (run it again) or that
    settlement could not price."""
    if closed_until is not None and booked_at < closed_until:
        raise BookingFenced(f"Settlement is closed until {closed_until.isoformat()}.")
    if not priced:
        raise NoRateCard("The partner has no rate card in force yet: settlement could not "
                         "price this booking.")


def pass_for_rate_card(session: Session) -> datetime | None:
    """Pass the fence and read the end of the latest closed period: a new rate card must
    not start before it."""
    return read(session, None)[0]


def hold_exclusive(session: Session) -> None:
    """Hold the fence for the rest of the transaction: a close of a period."""
    if _postgres(session):
        session.execute(_EXCLUSIVE, {"fence_key": FENCE_KEY})
