"""Fixtures of the settlement tests: a fake clock for the ledger (see support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.settlement.support import T0, Clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """The ledger's clock, starting at T0; the settlement service keeps the real one."""
    from coalition.ledger import jobs, members, service

    fake = Clock(T0)
    for module in (service, members, jobs):
        monkeypatch.setattr(module, "utcnow", fake)
    yield fake
