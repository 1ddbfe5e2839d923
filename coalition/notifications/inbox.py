"""A member's inbox: their notifications, newest first, and marking them read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from coalition import clock, cursor
from coalition.db import UnitOfWork, Units, affected_rows, read
from coalition.errors import NotFound
from coalition.ledger.models import Member
from coalition.notifications.messages import text, title
from coalition.notifications.models import Notification

_n = Notification.__table__.c
#: the letter of the inbox's cursors
TAG = "n"


def unread_count(member_id: int) -> int:
    with read() as session:
        return session.scalar(select(func.count())
                              .where(_n.member_id == member_id, _n.read_at.is_(None))) or 0


def listing(member_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/me/notifications``: a page of notifications, newest first, with how many
    are unread in all."""
    limit = args.get("limit", 50)
    with read() as session:
        if session.get(Member, member_id) is None:
            raise NotFound("No such member.")
        query = select(_n.id, _n.kind, _n.key, _n.data, _n.created_at, _n.read_at).where(
            _n.member_id == member_id)
        if args.get("unread"):
            query = query.where(_n.read_at.is_(None))
        if args.get("cursor"):
            query = query.where(_n.id < cursor.decode(TAG, args["cursor"]))
        rows = session.execute(query.order_by(_n.id.desc()).limit(limit + 1)).all()
        unread = session.scalar(select(func.count())
                                .where(_n.member_id == member_id, _n.read_at.is_(None))) or 0
    page = rows[:limit]
    return {
        "items": [{"id": row.id, "kind": row.kind, "key": row.key, "data": row.data,
                   "title": title(row.kind, row.data), "text": text(row.kind, row.data),
                   "created_at": row.created_at, "read": row.read_at is not None,
                   "read_at": row.read_at} for row in page],
        "unread": unread,
        "next_cursor": cursor.encode(TAG, page[-1].id) if len(rows) > limit else None,
    }


def mark_read(member_id: int, *, up_to_id: int | None = None, ids: list[int] | None = None,
              units: Units = UnitOfWork) -> dict[str, Any]:
    """Mark read the member's notifications up to ``up_to_id`` (and every older one) or
    the ones named; another member's ids are not theirs to mark, and are ignored. Marking
    again changes nothing. Returns how many are marked now and how many stay unread."""
    with units() as uow:
        session = uow.session
        if session.get(Member, member_id) is None:
            raise NotFound("No such member.")
        which = [_n.member_id == member_id, _n.read_at.is_(None)]
        if up_to_id is not None:
            which.append(_n.id <= up_to_id)
        if ids is not None:
            which.append(_n.id.in_(ids))
        marked = affected_rows(session.execute(update(Notification.__table__).where(*which)
                                               .values(read_at=clock.utcnow())))
        unread = session.scalar(select(func.count())
                                .where(_n.member_id == member_id, _n.read_at.is_(None))) or 0
        uow.commit()
    return {"marked": marked, "unread": unread}
