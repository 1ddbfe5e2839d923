"""A clock a test moves by hand, handed to the app through its own seam
(:func:`coalition.clock.use`): nothing sleeps, and no module global is patched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from flask import Flask, current_app

from coalition import clock as app_clock

#: any clock the app can be handed: a :class:`HandClock`, or a test's own model of time
AnyClock = TypeVar("AnyClock", bound=app_clock.Clock)


class HandClock:
    """The system's time moved on by what the test added (:meth:`advance`), or held at
    one moment once :meth:`set` (or made with one)."""

    def __init__(self, held: datetime | None = None) -> None:
        self.held = held
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return self.held if self.held is not None else datetime.now(UTC) + self.offset

    @property
    def now(self) -> datetime:
        """The clock's time; set, it holds the clock there."""
        return self()

    @now.setter
    def now(self, moment: datetime) -> None:
        self.held = moment

    def set(self, moment: datetime) -> datetime:
        self.held = moment
        return moment

    def advance(self, **delta: float) -> datetime:
        if self.held is not None:
            self.held += timedelta(**delta)
        else:
            self.offset += timedelta(**delta)
        return self()


@contextmanager
def clock_of(app: Flask, clock: AnyClock) -> Iterator[AnyClock]:
    """``app`` reads its time from ``clock`` inside the block."""
    app_clock.use(app, clock)
    try:
        yield clock
    finally:
        app_clock.use(app, None)


@contextmanager
def held_at(moment: datetime) -> Iterator[HandClock]:
    """The current app's clock held at ``moment`` inside the block."""
    with clock_of(current_app._get_current_object(), HandClock(moment)) as clock:  # type: ignore[attr-defined]
        yield clock
