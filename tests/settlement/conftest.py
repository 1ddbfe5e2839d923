"""Fixtures of the settlement tests: the app's clock, held at T0 and moved by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from tests.factories.clock import clock_of
from tests.factories.settlement import T0, Clock

#: an access token that outlives the months a test moves its clock on by
TOKEN_LIFETIME = 20 * 366 * 24 * 3600


@pytest.fixture
def clock(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """The app's clock, starting at T0 and moved on by hand: bookings, settlement runs and
    tokens all read it."""
    monkeypatch.setitem(app.config, "ACCESS_TOKEN_LIFETIME", TOKEN_LIFETIME)
    with clock_of(app, Clock(T0)) as fake:
        yield fake
