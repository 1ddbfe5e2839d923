"""Calendar months of UTC timestamps, in SQL, the same on PostgreSQL and SQLite.

Analytics and the points liability group by month (of booking, of earning); the grouping
is done by the database, and each month comes back as ``YYYY-MM``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, literal
from sqlalchemy.orm import Session


def month_of(session: Session, column: Any) -> Any:
    """The month of a UTC timestamp column, as a value to group by (:func:`month_name`
    reads it back)."""
    if session.get_bind().dialect.name == "postgresql":
        # date_trunc in UTC: a plain truncation, cheaper per row than formatting text
        return func.date_trunc("month", column, literal("UTC"))
    return func.strftime("%Y-%m", column)  # SQLite keeps naive UTC text


def month_name(value: Any) -> str:
    """``YYYY-MM`` from what :func:`month_of` grouped by."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is None else value.astimezone(UTC)
        return f"{moment.year:04d}-{moment.month:02d}"
    return str(value)[:7]


def month_start(month: str) -> datetime:
    """The first moment of ``YYYY-MM`` in UTC (``ValueError`` if it is no month)."""
    year, _, number = month.partition("-")
    if len(year) != 4 or len(number) != 2 or not (year + number).isdigit():
        raise ValueError(f"not a month: {month!r}")
    return datetime(int(year), int(number), 1, tzinfo=UTC)


def next_month(month: str) -> str:
    start = month_start(month)
    return f"{start.year + start.month // 12:04d}-{start.month % 12 + 1:02d}"
