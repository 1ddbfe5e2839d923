"""Fixtures of the settlement tests: a fake clock for the ledger (see support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coalition import clock as ledger_clock
from tests.factories.settlement import T0, Clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """The ledger's clock, starting at T0; the settlement service keeps the real one."""
    fake = Clock(T0)
    monkeypatch.setattr(ledger_clock, "utcnow", fake)
    yield fake
