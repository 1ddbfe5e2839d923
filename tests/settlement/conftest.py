"""Fixtures of the settlement tests: the app's clock, held at T0 and moved by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from tests.factories.clock import clock_of
from tests.factories.settlement import T0, Clock
from tests.factories.tokens import tokens_outlive_the_clock


@pytest.fixture
def clock(app: Flask) -> Iterator[Clock]:
    """The app's clock, starting at T0 and moved on by hand: bookings, settlement runs and
    tokens all read it (tokens outlive the months a test moves it on)."""
    with tokens_outlive_the_clock(app), clock_of(app, Clock(T0)) as fake:
        yield fake
