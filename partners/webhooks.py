"""Webhooks: the endpoints a partner registers, the outbox its events are written to, and
the deliveries it can list and replay.

An event is written with one delivery per subscribed endpoint by :func:`emit`, in the
transaction of what it reports, so an event exists exactly when its booking committed. The
body is serialised once, there: every attempt of every delivery sends the same bytes, and a
receiver tells duplicates apart by the event's ``id`` (also in ``Coalition-Event-Id``).
Sending is :mod:`partners.delivery`'s, in the worker process.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.audit.service import Actor, record
from coalition.cursor import decode, encode
from coalition.db import UnitOfWork, read
from coalition.errors import InvalidRequest, NotFound
from coalition.schemas import rfc3339
from partners.models import (
    EVENT_TYPES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

#: endpoints a partner may have at once
MAX_ENDPOINTS = 10
_LOOPBACK_NAMES = ("localhost", "localhost.")

_EP = WebhookEndpoint.__table__.c
_DL = WebhookDelivery.__table__.c
_AT = WebhookAttempt.__table__.c
_EV = WebhookEvent.__table__


def check_url(url: str) -> str:
    """HTTPS, or plain HTTP to this machine only (tests and development)."""
    def refuse(why: str) -> InvalidRequest:
        return InvalidRequest(f"The endpoint URL {why}.", errors={"url": [f"URL {why}."]})

    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise refuse("is not valid") from None
    if not host or parts.scheme not in ("https", "http"):
        raise refuse("must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not carry credentials (deliveries are signed instead)")
    if parts.fragment:
        raise refuse("must not have a fragment")
    if parts.scheme == "http" and not _loopback(host):
        raise refuse("must use https (plain http only to 127.0.0.1, ::1 or localhost)")
    if _internal(host):
        raise refuse("must not name a private, link-local or reserved address")
    return url


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _internal(host: str) -> bool:
    """An address of a network a partner has no business sending the coalition's requests
    into (loopback aside, which plain-http development uses)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_loopback and (address.is_private or address.is_link_local
                                         or address.is_reserved or address.is_multicast
                                         or address.is_unspecified)


def _endpoint(row: Any) -> dict[str, Any]:
    return {"id": row.id, "url": row.url, "events": list(row.events),
            "created_at": row.created_at}


def create_endpoint(partner_id: int, url: str, events: list[str], *,
                    actor: Actor | None = None) -> dict[str, Any]:
    """Register an endpoint; the answer carries its signing secret, shown this once.
    ``actor``: who registered it, in the partner's audit trail."""
    check_url(url)
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown or not events:
        message = f"Event types are {', '.join(EVENT_TYPES)}."
        raise InvalidRequest(message, errors={"events": [message]})
    secret = "whsec_" + secrets.token_urlsafe(32)
    with UnitOfWork() as uow:
        live = uow.session.scalar(select(_EP.id).where(
            _EP.partner_id == partner_id, _EP.deleted_at.is_(None)).offset(MAX_ENDPOINTS - 1)
            .limit(1))
        if live is not None:
            message = f"A partner has at most {MAX_ENDPOINTS} webhook endpoints."
            raise InvalidRequest(message, errors={"url": [message]})
        endpoint = WebhookEndpoint(partner_id=partner_id, url=url,
                                   events=sorted(set(events)), secret=secret,
                                   created_at=clock.utcnow())
        uow.session.add(endpoint)
        uow.session.flush()
        body = {**_endpoint(endpoint), "secret": secret}
        if actor is not None:
            record(uow.session, actor, "webhook_endpoint.created",
                   f"webhook_endpoint:{endpoint.id}", {"url": url, "events": endpoint.events},
                   partner_id=partner_id)
        uow.commit()
    return body


def list_endpoints(partner_id: int) -> list[dict[str, Any]]:
    with read() as session:
        rows = session.execute(select(_EP.id, _EP.url, _EP.events, _EP.created_at).where(
            _EP.partner_id == partner_id, _EP.deleted_at.is_(None)).order_by(_EP.id))
        return [_endpoint(row) for row in rows]


def _own_endpoint(session: Session, partner_id: int, endpoint_id: int) -> Any:
    row = session.execute(select(_EP.id, _EP.url, _EP.events, _EP.created_at).where(
        _EP.id == endpoint_id, _EP.partner_id == partner_id,
        _EP.deleted_at.is_(None))).first()
    if row is None:
        raise NotFound("No such webhook endpoint of yours.")
    return row


def delete_endpoint(partner_id: int, endpoint_id: int, *, actor: Actor | None = None) -> None:
    """Stop sending to the endpoint: its pending deliveries are given up, its history
    kept. ``actor``: who deleted it, in the partner's audit trail."""
    with UnitOfWork() as uow:
        endpoint = _own_endpoint(uow.session, partner_id, endpoint_id)
        if actor is not None:
            record(uow.session, actor, "webhook_endpoint.deleted",
                   f"webhook_endpoint:{endpoint_id}", {"url": endpoint.url},
                   partner_id=partner_id)
        now = clock.utcnow()
        uow.session.execute(WebhookEndpoint.__table__.update()
                            .where(_EP.id == endpoint_id).values(deleted_at=now))
        uow.session.execute(WebhookDelivery.__table__.update()
                            .where(_DL.endpoint_id == endpoint_id, _DL.status == "pending")
                            .values(status="failed"))
        uow.commit()


# --------------------------------------------------------------------------- the outbox


def _subscribers(session: Session, partner_id: int, event_type: str) -> list[int]:
    rows = session.execute(select(_EP.id, _EP.events).where(
        _EP.partner_id == partner_id, _EP.deleted_at.is_(None)))
    return [row.id for row in rows if event_type in row.events]


def emit(session: Session, partner_id: int, event_type: str, data: dict[str, Any],
         now: datetime | None = None) -> str | None:
    """Write an event and its deliveries in the caller's transaction; the event's id, or
    ``None`` when no endpoint of the partner wants this type (nothing is written)."""
    assert event_type in EVENT_TYPES, event_type
    endpoints = _subscribers(session, partner_id, event_type)
    if not endpoints:
        return None
    now = now or clock.utcnow()
    event_id = str(uuid.uuid4())
    body = json.dumps({"id": event_id, "type": event_type, "created_at": rfc3339(now),
                       "data": data}, separators=(",", ":"), ensure_ascii=False)
    session.execute(insert(_EV), {"id": event_id, "partner_id": partner_id,
                                                "type": event_type, "created_at": now,
                                                "body": body})
    give_up = now + timedelta(seconds=current_app.config["WEBHOOK_RETRY_FOR"])
    session.execute(insert(WebhookDelivery.__table__), [
        {"event_id": event_id, "endpoint_id": endpoint, "status": "pending", "attempts": 0,
         "created_at": now, "next_attempt_at": now, "give_up_at": give_up}
        for endpoint in endpoints])
    return event_id


# --------------------------------------------------------------------------- deliveries

_DELIVERY_COLUMNS = (_DL.id, _DL.event_id, _DL.status, _DL.attempts, _DL.created_at,
                     _DL.next_attempt_at, _DL.give_up_at, _DL.delivered_at, _DL.replay_of)


def _delivery(session: Session, row: Any) -> dict[str, Any]:
    from_event = session.execute(select(_EV.c.type)
                                 .where(_EV.c.id == row.event_id)).scalar_one()
    attempts = session.execute(
        select(_AT.started_at, _AT.duration_ms, _AT.status_code, _AT.error, _AT.response)
        .where(_AT.delivery_id == row.id).order_by(_AT.id)).all()
    return {
        "id": row.id, "event_id": row.event_id, "event_type": from_event,
        "status": row.status, "created_at": row.created_at, "delivered_at": row.delivered_at,
        "next_attempt_at": row.next_attempt_at if row.status == "pending" else None,
        "give_up_at": row.give_up_at, "replay_of": row.replay_of,
        "attempts": [{"at": a.started_at, "duration_ms": a.duration_ms,
                      "status_code": a.status_code, "error": a.error, "response": a.response}
                     for a in attempts],
    }


def list_deliveries(partner_id: int, endpoint_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, with their attempts and answers."""
    limit = args.get("limit", 50)
    with read() as session:
        _own_endpoint(session, partner_id, endpoint_id)
        query = (select(*_DELIVERY_COLUMNS).where(_DL.endpoint_id == endpoint_id)
                 .order_by(_DL.id.desc()).limit(limit + 1))
        if args.get("cursor"):
            query = query.where(_DL.id < decode("w", args["cursor"]))
        if args.get("status"):
            query = query.where(_DL.status == args["status"])
        rows = session.execute(query).all()
        items = [_delivery(session, row) for row in rows[:limit]]
    more = len(rows) > limit
    return {"items": items, "next_cursor": encode("w", rows[limit - 1].id) if more else None}


def replay(partner_id: int, endpoint_id: int, delivery_id: int, *,
           actor: Actor | None = None) -> dict[str, Any]:
    """Send a delivery's event to its endpoint again, now, as a new delivery. ``actor``:
    who asked, in the partner's audit trail."""
    with UnitOfWork() as uow:
        session = uow.session
        _own_endpoint(session, partner_id, endpoint_id)
        original = session.execute(select(_DL.id, _DL.event_id).where(
            _DL.id == delivery_id, _DL.endpoint_id == endpoint_id)).first()
        if original is None:
            raise NotFound("No such delivery of this endpoint of yours.")
        now = clock.utcnow()
        new_id = session.execute(insert(WebhookDelivery.__table__).returning(_DL.id), {
            "event_id": original.event_id, "endpoint_id": endpoint_id, "status": "pending",
            "attempts": 0, "created_at": now, "next_attempt_at": now,
            "give_up_at": now + timedelta(seconds=current_app.config["WEBHOOK_RETRY_FOR"]),
            "replay_of": original.id}).scalar_one()
        row = session.execute(select(*_DELIVERY_COLUMNS).where(_DL.id == new_id)).one()
        body = _delivery(session, row)
        if actor is not None:
            record(session, actor, "webhook_delivery.replayed", f"webhook_delivery:{new_id}",
                   {"endpoint": endpoint_id, "replay_of": original.id,
                    "event_id": original.event_id}, partner_id=partner_id)
        uow.commit()
    return body
