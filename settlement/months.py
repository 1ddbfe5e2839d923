"""Calendar months of UTC timestamps, grouped by in SQL, on PostgreSQL and SQLite alike.

Analytics and the points liability group rows by month (of booking, of earning). On
PostgreSQL a row's month is found by ``width_bucket`` over the month starts of the span
asked for (a binary search over a short array: a third of the cost of ``date_trunc`` in a
named time zone, per row); SQLite formats its UTC text. Either way each month reads back
as ``YYYY-MM``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import cast

from coalition.db import UTCDateTime


def month_start(month: str) -> datetime:
    """The first moment of ``YYYY-MM`` in UTC (``ValueError`` if it is no month)."""
    year, _, number = month.partition("-")
    if len(year) != 4 or len(number) != 2 or not (year + number).isdigit():
        raise ValueError(f"not a month: {month!r}")
    return datetime(int(year), int(number), 1, tzinfo=UTC)


def next_month(month: str) -> str:
    start = month_start(month)
    return f"{start.year + start.month // 12:04d}-{start.month % 12 + 1:02d}"


def month_of_moment(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


class Months:
    """The months from ``first`` (a month, ``YYYY-MM``) to the one holding the moment just
    before ``end``: :meth:`of` a timestamp column within them, :meth:`name` of what it
    gave."""

    def __init__(self, session: Session, first: str, end: datetime) -> None:
        self.names = [first]
        while month_start(next_month(self.names[-1])) < end:
            self.names.append(next_month(self.names[-1]))
        self.postgresql = session.get_bind().dialect.name == "postgresql"

    def of(self, column: Any) -> Any:
        if not self.postgresql:
            return func.strftime("%Y-%m", column)  # SQLite keeps naive UTC text
        starts = [month_start(m) for m in [*self.names, next_month(self.names[-1])]]
        bounds = cast(array(starts, type_=UTCDateTime()), ARRAY(UTCDateTime()))
        # 0 before the first month, n + 1 after the last: neither is asked for
        return func.width_bucket(column, bounds)

    def name(self, value: Any) -> str:
        if not self.postgresql:
            return str(value)
        index = int(value)
        if not 1 <= index <= len(self.names):
            raise ValueError(f"a row outside the months {self.names[0]} … {self.names[-1]}")
        return self.names[index - 1]
