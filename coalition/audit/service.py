"""Recording and reading the audit log.

A service that changes operator or finance data calls :func:`record` inside its own unit
of work, before it commits: the event is written in the same transaction as the change, so
an action that fails records nothing and a recorded action always happened. Who acted is
an :class:`Actor` that the view or the command passes in; services never read it from the
request themselves.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from coalition import cursor as paging
from coalition.audit.models import AuditEvent
from coalition.db import read, utcnow

ACTIONS = (
    "partner.created",
    "partner.rate_card_added",
    "partner.funding_changed",
    "partner.suspended",
    "partner.reactivated",
    "client.issued",
    "client.rotated",
    "client.revoked",
    "program.published",
    "offer.published",
    "reward.published",
    "reward.changed",
    "member.merged",
    "finance_user.created",
    "finance_user.disabled",
    "partner_user.created",
    "partner_user.disabled",
    "partner_user.role_changed",
    "batch.uploaded",
    "webhook_endpoint.created",
    "webhook_endpoint.deleted",
    "webhook_delivery.replayed",
    "settlement.run_created",
    "settlement.run_recomputed",
    "settlement.run_deleted",
    "settlement.reconciliation_uploaded",
    "settlement.break_accepted",
    "settlement.break_adjusted",
    "settlement.run_closed",
)


@dataclass(frozen=True)
class Actor:
    """Who acts: an OAuth client id (``cli`` at the command line, ``system`` for the
    application itself), the person behind it when known, and the request it came in."""

    client_id: str
    user: str | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        return f"{self.client_id} ({self.user})" if self.user else self.client_id


#: the application acting on its own (the member page registering its client) and callers
#: that name nobody: test fixtures and benchmarks
SYSTEM = Actor("system")


def cli_actor() -> Actor:
    """The command line, with the login that ran it when the system knows one."""
    try:
        login: str | None = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        login = None
    return Actor("cli", login)


def as_actor(who: Actor | str) -> Actor:
    """An :class:`Actor` from one, or from a bare client id."""
    return who if isinstance(who, Actor) else Actor(who)


def _plain(value: Any) -> Any:
    """JSON for the details: decimals as exact strings, timestamps in RFC 3339."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def record(session: Session, actor: Actor, action: str, target: str,
           details: dict[str, Any] | None = None, *, partner_id: int | None = None) -> None:
    """Add an audit event to ``session``'s transaction; it is written when (and only if)
    the caller's unit of work commits. ``details`` must never hold a secret. ``partner_id``
    puts the event in that partner's own audit trail (the portal shows it)."""
    if action not in ACTIONS:
        raise ValueError(f"not an audit action: {action}")
    session.add(AuditEvent(
        occurred_at=utcnow(), action=action, actor=actor.client_id[:64],
        actor_user=actor.user[:200] if actor.user else None, target=target[:200],
        details=_plain(details or {}), request_id=actor.request_id, partner_id=partner_id))


# --------------------------------------------------------------------------- reading


def _encode_cursor(event_id: int) -> str:
    return paging.encode("a", event_id)


def _decode_cursor(text: str) -> int:
    return paging.decode("a", text)


def view(event: AuditEvent) -> dict[str, Any]:
    return {"id": event.id, "occurred_at": event.occurred_at, "action": event.action,
            "actor": event.actor, "actor_user": event.actor_user, "target": event.target,
            "details": event.details, "request_id": event.request_id}


def list_events(*, action: str | None = None, actor: str | None = None,
                occurred_from: datetime | None = None, occurred_to: datetime | None = None,
                partner_id: int | None = None, cursor: str | None = None,
                limit: int = 50) -> dict[str, Any]:
    """Audit events, newest first, a page at a time. ``actor`` matches the client id or
    the person; ``occurred_from`` is inclusive, ``occurred_to`` exclusive; ``partner_id``
    keeps that partner's trail alone."""
    query = select(AuditEvent)
    if partner_id is not None:
        query = query.where(AuditEvent.partner_id == partner_id)
    if action:
        query = query.where(AuditEvent.action == action)
    if actor:
        query = query.where(or_(AuditEvent.actor == actor, AuditEvent.actor_user == actor))
    if occurred_from is not None:
        query = query.where(AuditEvent.occurred_at >= occurred_from)
    if occurred_to is not None:
        query = query.where(AuditEvent.occurred_at < occurred_to)
    if cursor:
        query = query.where(AuditEvent.id < _decode_cursor(cursor))
    with read() as session:
        rows = session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)).all()
        items = [view(e) for e in rows[:limit]]
    more = len(rows) > limit
    return {"items": items, "next_cursor": _encode_cursor(rows[limit - 1].id) if more else None}
