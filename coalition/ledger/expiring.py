"""Points about to expire, as a member reads them: one row per date (UTC)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, bindparam, func, literal_column, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from coalition.ledger.models import IS_LIVE_LOT, Lot

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


class day_after(FunctionElement[Any]):
    """The start of the UTC date after a timestamp's: a ``timestamptz`` on PostgreSQL, the
    date's text on SQLite (which keeps naive UTC text, so the date compares with the
    timestamps of that date as their start)."""

    inherit_cache = True


@compiles(day_after, "postgresql")
def _day_after_postgresql(element: day_after, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    return f"(date_trunc('day', {moment}, 'UTC') + interval '1 day')"


@compiles(day_after, "sqlite")
def _day_after_sqlite(element: day_after, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)}, '+1 day')"


def dates_of(member: Any) -> Any:
    """The first ``:dates`` dates on which some of ``member``'s live points expire (the
    member's id: a parameter, or a scalar subquery that finds it): a recursive walk from
    date to date, each step one probe of ``ix_lot_live`` for the first moment after the date
    before; and the points of each date, summed from the index over that date alone. What
    it reads is the lots of those dates, whatever the history."""
    lot = Lot.__table__.c
    of_member = (lot.member_id == member, IS_LIVE_LOT)
    first: Any = select(func.min(lot.expires_at).label("moment"),
                        literal_column("1").label("n")).where(*of_member)
    day = first.cte("day", recursive=True)
    after = (select(func.min(lot.expires_at))
             .where(*of_member, lot.expires_at >= day_after(day.c.moment)).scalar_subquery())
    day = day.union_all(select(after, day.c.n + literal_column("1"))
                        .where(day.c.moment.is_not(None),
                               day.c.n < bindparam("dates", type_=Integer)))
    points = (select(func.sum(lot.remaining))
              .where(*of_member, lot.expires_at >= day.c.moment,
                     lot.expires_at < day_after(day.c.moment)).scalar_subquery())
    return select(day.c.moment, points.label("points")).where(day.c.moment.is_not(None))
