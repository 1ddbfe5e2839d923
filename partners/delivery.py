"""Sending webhook deliveries: at least once, signed, retried with backoff, every attempt
recorded.

A worker takes due deliveries in a short transaction that pushes their ``next_attempt_at``
past the longest an attempt can take (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
workers share the queue), sends them outside any transaction, then records each attempt
and its outcome. A worker killed between sending and recording leaves the delivery due
again once that time has passed: the receiver may get the event twice, with the same
``Coalition-Event-Id``, and never not at all.

The signature (API.md): ``Coalition-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` with the endpoint's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import insert, select, update

from coalition import clock
from coalition.db import UnitOfWork
from coalition.outbox import after_attempt
from partners.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

_DL = WebhookDelivery.__table__.c
_EP = WebhookEndpoint.__table__.c
_EV = WebhookEvent.__table__.c
USER_AGENT = "Coalition-Webhooks/1"
#: what an attempt keeps of the receiver's answer
KEEP = 500


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is the receiver's answer, not a place to send the event to (it could
    point anywhere, and a POST followed by a redirect turns into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                      hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class Due:
    delivery_id: int
    event_id: str
    url: str
    secret: str
    body: str
    attempts: int
    give_up_at: datetime


@dataclass(frozen=True)
class Result:
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim(limit: int) -> list[Due]:
    """Take up to ``limit`` due deliveries, oldest first, out of the others' reach for
    as long as an attempt may take."""
    config = current_app.config
    with UnitOfWork() as uow:
        now = clock.utcnow()
        ids = uow.session.scalars(
            select(_DL.id).where(_DL.status == "pending", _DL.next_attempt_at <= now)
            .order_by(_DL.next_attempt_at, _DL.id).limit(limit)
            .with_for_update(skip_locked=True)).all()
        if not ids:
            return []
        lease = now + timedelta(seconds=config["WEBHOOK_TIMEOUT"] + 30)
        uow.session.execute(update(WebhookDelivery.__table__).where(_DL.id.in_(ids))
                            .values(next_attempt_at=lease))
        rows = uow.session.execute(
            select(_DL.id, _DL.event_id, _EP.url, _EP.secret, _EV.body, _DL.attempts,
                   _DL.give_up_at)
            .join(WebhookEndpoint.__table__, _EP.id == _DL.endpoint_id)
            .join(WebhookEvent.__table__, _EV.id == _DL.event_id)
            .where(_DL.id.in_(ids)).order_by(_DL.id)).all()
        uow.commit()
    return [Due(*row) for row in rows]


def send(due: Due, timeout: float) -> Result:
    """POST the event once; never raises for what the receiver or the network does."""
    body = due.body.encode()
    stamp = int(time.time())
    request = urllib.request.Request(due.url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT,
        "Coalition-Event-Id": due.event_id,
        "Coalition-Signature": signature(due.secret, stamp, body),
    })
    started_at = clock.utcnow()
    began = time.monotonic()
    status: int | None = None
    error: str | None = None
    answer: bytes = b""
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status = response.status
            answer = response.read(KEEP)
    except urllib.error.HTTPError as exc:
        status = exc.code
        try:
            answer = exc.read(KEEP)
        except OSError:
            answer = b""
    except Exception as exc:  # noqa: BLE001 - any failure to reach the receiver
        error = f"{type(exc).__name__}: {exc}"[:KEEP]
    duration = int((time.monotonic() - began) * 1000)
    return Result(started_at, duration, status, error,
                  answer.decode("utf-8", "replace")[:KEEP] or None)


def record(due: Due, result: Result) -> str:
    """Keep the attempt and move the delivery on: delivered, due again later, or failed
    once its retry time is spent. Returns the new status."""
    config = current_app.config
    values = after_attempt(result.ok, due.attempts + 1, due.give_up_at, clock.utcnow(),
                           base=config["WEBHOOK_BACKOFF"], cap=config["WEBHOOK_MAX_BACKOFF"],
                           done="delivered", done_at="delivered_at")
    with UnitOfWork() as uow:
        uow.session.execute(insert(WebhookAttempt.__table__), {
            "delivery_id": due.delivery_id, "started_at": result.started_at,
            "duration_ms": result.duration_ms, "status_code": result.status_code,
            "error": result.error, "response": result.response})
        # only a delivery still pending moves (a deleted endpoint's were given up)
        uow.session.execute(update(WebhookDelivery.__table__)
                            .where(_DL.id == due.delivery_id, _DL.status == "pending")
                            .values(**values))
        uow.commit()
    return str(values["status"])
