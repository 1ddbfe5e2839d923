"""``audit_event``: one row per operator or finance action, never changed or removed (the
database refuses UPDATE and DELETE, like the journal's)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from coalition.db import PK, Base, BigId, Timestamp, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_action_id", "action", "id"),
        Index("ix_audit_event_actor_id", "actor", "id"),
        Index("ix_audit_event_occurred_at", "occurred_at"),
        Index("ix_audit_event_partner_id_id", "partner_id", "id"),
    )

    id: Mapped[PK]
    occurred_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    #: e.g. ``partner.created``; :data:`coalition.audit.service.ACTIONS`
    action: Mapped[str] = mapped_column(String(48))
    #: the OAuth client that acted, ``cli`` for the command line, ``system`` for the
    #: application itself
    actor: Mapped[str] = mapped_column(String(64))
    #: the person behind the client: a finance user's name; at the command line, the login
    actor_user: Mapped[str | None] = mapped_column(String(200))
    #: what was acted on, as ``kind:id`` (``partner:acme``, ``run:12``, ``client:pt_…``)
    target: Mapped[str] = mapped_column(String(200))
    #: what changed; never a secret
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: the partner whose staff acted, or whose objects were acted on, through the partner
    #: portal: that partner's audit trail (no foreign key: like ``target``, the log outlives
    #: what it names)
    partner_id: Mapped[int | None] = mapped_column(BigId)
    #: the request that did it (the ``X-Request-ID`` of its access log line)
    request_id: Mapped[str | None] = mapped_column(String(128))
