"""The ledger check settlement adds (``coalition ledger check``): a closed settlement
period never changes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from coalition.errors import CoalitionError
from coalition.ledger.check import CheckResult
from settlement.models import SettlementRun
from settlement.service import journal_digest


def closed_runs(conn: Connection, limit: int) -> CheckResult:
    runs = SettlementRun.__table__.c
    closed = conn.execute(select(runs.id).where(runs.status == "closed")
                          .order_by(runs.period_start)).scalars().all()
    result = CheckResult("closed_runs",
                         "each closed settlement run's figures, computed again from the "
                         "journal, give the digest it was closed with",
                         {"closed_runs": len(closed)})
    found: list[dict[str, Any]] = []
    with Session(bind=conn) as session:
        for run_id in closed:
            run = session.get_one(SettlementRun, run_id)
            try:
                actual = journal_digest(session, run)
            except CoalitionError as exc:  # e.g. entries it can no longer price
                actual = exc.code
            if actual != run.result_digest:
                found.append({"problem": "a closed run's figures changed", "run_id": run.id,
                              "period_start": run.period_start,
                              "period_end": run.period_end,
                              "expected": run.result_digest, "actual": actual})
    result.found(len(found), found[:limit])
    return result
