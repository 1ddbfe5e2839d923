"""The clock of Coalition: the one ``utcnow`` every booking, job and page reads the time
from, and the calendar arithmetic of the program's windows (expiry months, the tier year).

The time is the system's, unless the app was handed another clock with :func:`use` (a
test's, which it moves on by hand rather than sleeping).
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask, current_app, has_app_context

#: where an app keeps the clock it was handed
EXTENSION = "coalition.clock"

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    if has_app_context():
        given: Clock | None = current_app.extensions.get(EXTENSION)
        if given is not None:
            return given()
    return datetime.now(UTC)


def use(app: Flask, clock: Clock | None) -> None:
    """Read the time of ``app`` from ``clock`` (timezone-aware UTC); ``None``: the
    system's again."""
    if clock is None:
        app.extensions.pop(EXTENSION, None)
    else:
        app.extensions[EXTENSION] = clock


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` later, clamped to the month's last day."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
