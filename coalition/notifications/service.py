"""Telling a member: :func:`notify` writes the notification in the transaction of what it
reports, once per member and event however often that is reported (a retried job, a
replayed request), and, when e-mail is configured (``SMTP_URL``), its e-mail in the outbox
in the same statement's transaction.

Whether that e-mail is sent (the member has an address, wants this kind, has an open
account) is decided by the sender when it takes it (:mod:`coalition.notifications.sender`),
so a choice made after the event still counts. One notification per member and event and
one e-mail per notification (a unique key on each) is what makes "never twice per member
and event" hold; the sender's lease and retries make "at least once" hold.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coalition import clock
from coalition.notifications.models import KINDS, Notification, NotificationEmail

_TABLE = Notification.__table__


def email_configured() -> bool:
    return has_app_context() and bool(current_app.config.get("SMTP_URL"))


def notify(session: Session, member_id: int, kind: str, key: str, data: dict[str, Any],
           now: datetime | None = None) -> bool:
    """Write the notification unless this member was already told of ``key`` (and its
    e-mail with it when e-mail is configured); whether it was written."""
    return notify_many(session, [(member_id, kind, key, data)], now) == 1


def notify_many(session: Session, told: list[tuple[int, str, str, dict[str, Any]]],
                now: datetime | None = None) -> int:
    """:func:`notify` for many ``(member_id, kind, key, data)`` at once, as a job's batch
    does: one statement for the notifications (and one for their e-mails), whatever their
    number; how many were written."""
    if not told:
        return 0
    assert all(kind in KINDS for _, kind, _, _ in told), told
    now = now or clock.utcnow()
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    written = session.execute(
        dialect.insert(_TABLE).on_conflict_do_nothing(index_elements=["member_id", "key"])
        .returning(_TABLE.c.id),
        [{"member_id": member_id, "kind": kind, "key": key, "data": data, "created_at": now}
         for member_id, kind, key, data in told]).scalars().all()
    if written and email_configured():
        give_up = now + timedelta(seconds=current_app.config["MAIL_RETRY_FOR"])
        session.execute(insert(NotificationEmail.__table__), [
            {"notification_id": notification_id, "status": "pending", "attempts": 0,
             "created_at": now, "next_attempt_at": now, "give_up_at": give_up}
            for notification_id in written])
    return len(written)
