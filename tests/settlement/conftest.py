"""Fixtures of the settlement tests: the app's clock, held at T0 and moved by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from tests.factories.clock import HandClock, clock_of
from tests.factories.settlement import T0
from tests.factories.tokens import tokens_outlive_the_clock


@pytest.fixture
def clock(app: Flask) -> Iterator[HandClock]:
    """The app's clock, starting at T0 and moved on by hand: bookings, settlement runs and
    tokens all read it (tokens outlive the months a test moves it on)."""
    with tokens_outlive_the_clock(app), clock_of(app, HandClock(T0)) as fake:
        yield fake
