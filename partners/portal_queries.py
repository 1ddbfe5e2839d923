"""What the partner portal reads that the partner API does not answer: a transaction's
reversals, a search by the partner's own reference, the partner's closed settlement runs
and its reconciliations of them. Each read is of the one partner's objects only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from coalition.db import read
from coalition.errors import NotFound
from coalition.ledger.booking import partner_ref
from coalition.ledger.models import TRANSACTION_TYPES, Entry
from coalition.ledger.rendering import render_transaction
from settlement.models import Break, Reconciliation, SettlementRun

REVERSAL_TYPES = ("earn_reversal", "burn_reversal")


def reversals_of(partner_id: int, transaction_id: int) -> list[dict[str, Any]]:
    """The reversals booked against one of the partner's transactions, oldest first."""
    with read() as session:
        code = partner_ref(session, partner_id).code
        rows = session.scalars(select(Entry).where(
            Entry.reference_id == transaction_id, Entry.partner_id == partner_id,
            Entry.kind.in_(REVERSAL_TYPES)).order_by(Entry.id)).all()
        return [render_transaction(session, e, code) for e in rows]


def by_partner_txn_id(partner_id: int, partner_txn_id: str) -> int | None:
    """The id of the partner's transaction with this reference of its own, if any."""
    with read() as session:
        return session.scalar(select(Entry.id).where(
            Entry.partner_id == partner_id, Entry.partner_txn_id == partner_txn_id,
            Entry.kind.in_(TRANSACTION_TYPES)).limit(1))


def closed_runs(partner_code: str) -> list[dict[str, Any]]:
    """The closed settlement runs that have a statement for the partner, newest first (a
    partner learns nothing of a run that is not closed)."""
    with read() as session:
        runs = session.scalars(select(SettlementRun).where(SettlementRun.status == "closed")
                               .order_by(SettlementRun.period_start.desc())).all()
        return [{"id": r.id, "period_start": r.period_start, "period_end": r.period_end,
                 "closed_at": r.closed_at, "statement": s}
                for r in runs for s in r.result["statements"] if s["partner"] == partner_code]


def reconciliations(partner_id: int, run_id: int) -> list[dict[str, Any]]:
    """The reconciliations of the partner's files against a closed run, newest first, each
    with its breaks and how each was resolved."""
    with read() as session:
        run = session.get(SettlementRun, run_id)
        if run is None or run.status != "closed":
            raise NotFound(f"No closed settlement run {run_id}.")
        recons = session.scalars(select(Reconciliation).where(
            Reconciliation.run_id == run_id, Reconciliation.partner_id == partner_id)
            .order_by(Reconciliation.id.desc())).all()
        answer = []
        for recon in recons:
            breaks = session.scalars(select(Break).where(Break.reconciliation_id == recon.id)
                                     .order_by(Break.id)).all()
            answer.append({
                "id": recon.id, "uploaded_at": recon.uploaded_at, "rows": recon.rows,
                "superseded": recon.superseded, "summary": recon.summary,
                "breaks": [{"id": b.id, "kind": b.kind, "partner_txn_id": b.partner_txn_id,
                            "line": b.line, "status": b.status, "reason": b.reason,
                            "resolved_at": b.resolved_at} for b in breaks]})
        return answer
