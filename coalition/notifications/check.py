"""The ledger check the notifications add (``coalition ledger check``): every e-mail's
attempts are all recorded (the count on the e-mail and its attempt rows are written in one
transaction), and an e-mail marked sent has an attempt the relay took."""

from __future__ import annotations

from sqlalchemy import Connection, and_, func, select

from coalition.ledger.check import CheckResult
from coalition.notifications.models import NotificationEmail, NotificationEmailAttempt

_e = NotificationEmail.__table__.c
_a = NotificationEmailAttempt.__table__.c


def emails_accounted(conn: Connection, limit: int) -> CheckResult:
    result = CheckResult("emails_accounted",
                         "each member e-mail's attempts are all recorded, and one marked "
                         "sent has an attempt the relay took",
                         {"emails": conn.scalar(select(func.count()).select_from(
                             NotificationEmail.__table__)) or 0})
    recorded = (select(_a.email_id, func.count().label("recorded"),
                       func.count().filter(_a.error.is_(None)).label("taken"))
                .group_by(_a.email_id).subquery())
    recorded_n = func.coalesce(recorded.c.recorded, 0)
    taken_n = func.coalesce(recorded.c.taken, 0)
    wrong = (select(_e.id.label("email_id"), _e.status, _e.attempts,
                    recorded_n.label("recorded"), taken_n.label("taken"))
             .select_from(NotificationEmail.__table__.outerjoin(
                 recorded, recorded.c.email_id == _e.id))
             .where((_e.attempts != recorded_n)
                    | and_(_e.status == "sent", taken_n == 0)))
    count = conn.scalar(select(func.count()).select_from(wrong.subquery())) or 0
    rows = [dict(row) for row in conn.execute(wrong.order_by(_e.id).limit(limit)).mappings()]
    result.found(count, [{"problem": "an e-mail's attempts do not add up", **row}
                         for row in rows])
    return result
