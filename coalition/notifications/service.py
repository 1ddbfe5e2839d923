"""Telling a member: :func:`notify` writes the notification in the transaction of what it
reports, once per member and event however often that is reported (a retried job, a
replayed request)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coalition import clock
from coalition.notifications.models import KINDS, Notification

_TABLE = Notification.__table__


def notify(session: Session, member_id: int, kind: str, key: str, data: dict[str, Any],
           now: datetime | None = None) -> bool:
    """Write the notification unless this member was already told of ``key``; whether it
    was written."""
    assert kind in KINDS, kind
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    written = session.execute(
        dialect.insert(_TABLE).values(member_id=member_id, kind=kind, key=key, data=data,
                                      created_at=now or clock.utcnow())
        .on_conflict_do_nothing(index_elements=["member_id", "key"])
        .returning(_TABLE.c.id)).first()
    return written is not None
