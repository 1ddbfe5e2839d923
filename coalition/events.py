"""Events for a partner's own systems, published by the core without knowing how they are
delivered.

A use case in the core that a partner is told about (a voucher used at its till, a claim
opened against it) calls :func:`publish` in the transaction of what it reports; the package
that delivers partner events (``partners``, its webhook outbox) subscribes when it is
installed. The core so never imports the packages built on it, and an event exists exactly
when what it reports committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

#: ``(session, partner_id, event_type, data)``: writes the event in the caller's transaction
Subscriber = Callable[[Session, int, str, dict[str, Any]], object]

_KEY = "coalition.events"


def subscribe(app: Flask, subscriber: Subscriber) -> None:
    app.extensions.setdefault(_KEY, []).append(subscriber)


def publish(session: Session, partner_id: int, event_type: str, data: dict[str, Any]) -> None:
    """Hand the event to every subscriber, in the caller's transaction."""
    for subscriber in current_app.extensions.get(_KEY, ()):
        subscriber(session, partner_id, event_type, data)
