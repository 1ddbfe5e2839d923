"""The clock of Coalition: the one ``utcnow`` every booking, job and page reads the time
from, and the calendar arithmetic of the program's windows (expiry months, the tier year).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` later, clamped to the month's last day."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
