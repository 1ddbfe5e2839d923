"""What the outboxes share (partners' webhook deliveries, members' e-mails): when an
attempt that failed is tried again, and how a row moves on after an attempt."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any


def backoff(attempts: int, base: float, cap: float) -> float:
    """The wait before attempt ``attempts + 1``: doubling from ``base`` up to ``cap``, with
    jitter (between half and all of it), so that receivers coming back are not stampeded."""
    ceiling = min(cap, base * 2 ** max(attempts - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


def after_attempt(ok: bool, attempts: int, give_up_at: datetime, now: datetime, *,
                  base: float, cap: float, done: str, done_at: str) -> dict[str, Any]:
    """The row's new values after its attempt number ``attempts``: ``done`` (stamped in
    ``done_at``), due again after a backoff, or ``failed`` once that would pass
    ``give_up_at``."""
    values: dict[str, Any] = {"attempts": attempts}
    if ok:
        values.update({"status": done, done_at: now})
        return values
    retry_at = now + timedelta(seconds=backoff(attempts, base, cap))
    if retry_at > give_up_at:
        values["status"] = "failed"
    else:
        values.update(status="pending", next_attempt_at=retry_at)
    return values
