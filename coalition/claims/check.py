"""``coalition ledger check``: every confirmed claim names an earn booked at its partner
for its points, and no earn answers two claims."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from coalition.claims.models import Claim
from coalition.ledger.check import CheckResult
from coalition.ledger.models import Entry

_C = Claim.__table__.c
_E = Entry.__table__.c


def claims_booked(conn: Connection, limit: int) -> CheckResult:
    confirmed = conn.execute(select(func.count()).where(_C.status == "confirmed")).scalar_one()
    result = CheckResult("claims_booked",
                         "a confirmed missing-points claim names an earn at its partner of "
                         "its points, and no earn answers two claims",
                         {"confirmed_claims": int(confirmed)})
    wrong = conn.execute(
        select(_C.id, _C.partner_id, _C.entry_id, _C.points, _E.kind, _E.points)
        .select_from(Claim.__table__.outerjoin(Entry.__table__, _E.id == _C.entry_id))
        .where(_C.status == "confirmed",
               or_(_E.id.is_(None), _E.kind != "earn", _E.partner_id != _C.partner_id,
                   _E.points != _C.points))
        .order_by(_C.id)).all()
    found: list[dict[str, Any]] = [
        {"problem": "confirmed claim without its earn", "claim_id": row[0],
         "partner_id": row[1], "entry_id": row[2], "claim_points": row[3],
         "entry_kind": row[4], "entry_points": row[5]} for row in wrong]
    shared = conn.execute(
        select(_C.entry_id, func.count()).where(and_(_C.entry_id.is_not(None)))
        .group_by(_C.entry_id).having(func.count() > 1).order_by(_C.entry_id)).all()
    found += [{"problem": "one earn answers several claims", "entry_id": entry_id,
               "claims": int(count)} for entry_id, count in shared]
    result.found(len(found), found[:limit])
    return result
