"""Points about to expire, as a member reads them: one row per date (UTC)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from coalition.ledger.models import Lot

#: dates listed at most
DATES = 12


def by_date(moments: Iterable[tuple[datetime, int]], limit: int = DATES) -> list[dict[str, Any]]:
    """``(expires_at, points)`` in time order → ``[{date, points, expires_at}]``, one row per
    UTC date: the points that expire on that date, and the first moment of the date at
    which some of them do."""
    rows: list[dict[str, Any]] = []
    for moment, points in moments:
        day = moment.astimezone(UTC).date()
        if rows and rows[-1]["date"] == day:
            rows[-1]["points"] += int(points)
        elif len(rows) == limit:
            break
        else:
            rows.append({"date": day, "points": int(points), "expires_at": moment})
    return rows


_lot = Lot.__table__.c
_MOMENTS = (select(_lot.expires_at, func.sum(_lot.remaining))
            .where(_lot.member_id == bindparam("member_id"), _lot.state == "live",
                   _lot.remaining > 0, _lot.expires_at.is_not(None))
            .group_by(_lot.expires_at).order_by(_lot.expires_at).limit(bindparam("page")))

#: moments read in the first page; each further page is 16 times larger
FIRST_PAGE = 64


def expiring_dates(session: Session, member_id: int,
                   limit: int = DATES) -> list[dict[str, Any]]:
    """:func:`by_date` of the member's live points, reading only the first dates from the
    partial index ``ix_lot_live``: a page of moments at a time, until ``limit`` whole
    dates are in (a date cut by the end of a page is read again in a larger one)."""
    page = FIRST_PAGE
    while True:
        moments = session.execute(_MOMENTS, {"member_id": member_id, "page": page}).all()
        rows = by_date(moments, limit)
        if len(moments) < page:
            return rows
        last_read = moments[-1][0].astimezone(UTC).date()
        if len(rows) == limit and rows[-1]["date"] < last_read:
            return rows
        page *= 16
