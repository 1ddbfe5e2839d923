"""Points about to expire, as a member reads them: one row per date (UTC)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

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
