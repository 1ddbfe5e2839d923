"""The member's changes to their current membership: cancel it, or choose whether it
renews. Neither touches the journal (nothing is paid or refunded).

Cancelling keeps the benefits to the end of the period paid for and stops renewal; there
is no refund, in points or money (the terms say so; a partner that sold the plan for money
refunds under its own terms and its own books). A cancelled membership cannot be renewed
again: the member buys a new one when it has ended.
"""

from __future__ import annotations

from typing import Any

from coalition import clock
from coalition.db import UnitOfWork, Units, run_with_retries
from coalition.errors import InvalidRequest, NotFound
from coalition.ledger.lookup import locked_states, require_active
from coalition.membership.queries import current_row, render
from coalition.notifications.service import notify


def cancel(member_id: int, *, units: Units = UnitOfWork) -> dict[str, Any]:
    """Cancel the member's current membership (again: the same answer)."""

    def attempt() -> dict[str, Any]:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            (member,) = locked_states(session, member_id)
            require_active(session, member)
            row = current_row(session, member.id)
            if row is None or row.ends_at <= now:
                raise NotFound("You hold no membership in force.")
            if row.status == "active":
                row.status, row.cancelled_at = "cancelled", now
                session.flush()
                notify(session, member.id, "membership", f"membership:{row.id}:cancelled", {
                    "event": "cancelled", "plan": row.plan, "name": row.plan_name,
                    "ends_at": row.ends_at.isoformat()}, now=now)
            body = render(session, row, now)
            uow.commit()
            return body

    return run_with_retries(attempt)


def set_auto_renew(member_id: int, auto_renew: bool, *,
                   units: Units = UnitOfWork) -> dict[str, Any]:
    """Choose whether the current membership renews with points at the end of its period."""

    def attempt() -> dict[str, Any]:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            (member,) = locked_states(session, member_id)
            require_active(session, member)
            row = current_row(session, member.id)
            if row is None or row.ends_at <= now:
                raise NotFound("You hold no membership in force.")
            if row.status == "cancelled":
                message = "A cancelled membership does not renew; buy a new one when it ends."
                raise InvalidRequest(message, errors={"auto_renew": [message]})
            row.auto_renew = auto_renew
            session.flush()
            body = render(session, row, now)
            uow.commit()
            return body

    return run_with_retries(attempt)
