"""A partner's till: checking a voucher it fulfils and marking it used.

Marking it used is one guarded ``UPDATE … WHERE status = 'issued' AND expires_at > now``:
of two tills redeeming one voucher at once, the row lock lets exactly one through; the
other finds it used (``voucher_used``). A till that retries its own request with the same
``Idempotency-Key`` gets the original answer, marked as a replay. Another partner's voucher
(or no voucher) is ``not_found``, so a code tells a partner nothing about other partners.
The ``voucher.redeemed`` event is published in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coalition import clock, events
from coalition.catalog.models import Reward, Voucher
from coalition.catalog.redemptions import normalise, status_now
from coalition.db import UnitOfWork, Units, read, run_with_retries
from coalition.errors import NotFound, VoucherExpired, VoucherUsed
from coalition.ledger.idempotency import Outcome

_v = Voucher.__table__.c
_r = Reward.__table__.c


def _row(session: Session, partner_id: int, code: str) -> Any:
    return session.execute(
        select(Voucher.__table__, _r.name.label("reward_name"))
        .join(Reward.__table__, _r.id == _v.reward_id)
        .where(_v.code == code, _v.partner_id == partner_id)).first()


def _body(row: Any, now: datetime) -> dict[str, Any]:
    return {"voucher_code": row.code, "reward_id": row.reward_id, "reward": row.reward_name,
            "points": row.points, "status": status_now(row.status, row.expires_at, now),
            "issued_at": row.issued_at, "expires_at": row.expires_at,
            "used_at": row.used_at}


def check(partner_id: int, code: str) -> dict[str, Any]:
    """The voucher as the partner's till sees it."""
    with read() as session:
        row = _row(session, partner_id, normalise(code))
    if row is None:
        raise NotFound("No voucher of yours has this code.")
    return _body(row, clock.utcnow())


def use(partner_id: int, code: str, *, request_id: str | None = None,
        units: Units = UnitOfWork) -> Outcome:
    """Mark the partner's voucher used at its till (see the module doc)."""
    code = normalise(code)

    def attempt() -> Outcome:
        with units() as uow:
            session = uow.session
            now = clock.utcnow()
            used = session.execute(
                update(Voucher.__table__)
                .where(_v.code == code, _v.partner_id == partner_id, _v.status == "issued",
                       _v.expires_at > now)
                .values(status="used", used_at=now, used_key=request_id)
                .returning(_v.id)).first()
            row = _row(session, partner_id, code)
            if row is None:
                raise NotFound("No voucher of yours has this code.")
            if used is None:
                if row.status == "used":
                    if request_id is not None and row.used_key == request_id:
                        return Outcome(_body(row, now), replayed=True)
                    raise VoucherUsed(f"This voucher was used at {row.used_at.isoformat()}.")
                raise VoucherExpired("This voucher expired on "
                                     f"{row.expires_at.date().isoformat()}.")
            body = _body(row, now)
            events.publish(session, partner_id, "voucher.redeemed", {
                "voucher_code": row.code, "reward_id": row.reward_id,
                "points": row.points, "used_at": now.isoformat()})
            uow.commit()
            return Outcome(body, replayed=False)

    return run_with_retries(attempt, replays=request_id is not None)
