"""Settlement runs: create (compute and keep), read, recompute a draft, close, export."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from coalition.audit.service import SYSTEM, Actor, record
from coalition.db import UnitOfWork, read, replica_read, utcnow
from coalition.errors import Conflict, InvalidRequest, NotFound, PeriodClosed
from coalition.ledger import fence
from coalition.models import Partner
from coalition.program.service import rules_in_force
from coalition.schemas import rfc3339
from coalition.wording import plural, verb
from partners import funding, webhooks
from settlement.compute import Unpriced, compute
from settlement.liability import Prior, liability
from settlement.models import Break, Reconciliation, SettlementRun
from settlement.netting import COALITION


class PeriodOverlap(Conflict):
    code = "period_overlap"


class UnresolvedBreaks(Conflict):
    code = "unresolved_breaks"


class UnpricedEntries(Conflict):
    code = "unpriced_entries"


def digest(result: dict[str, Any]) -> str:
    canonical = json.dumps(result, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _compute(session: Any, start: datetime, end: datetime, model: str) -> dict[str, Any]:
    try:
        return compute(session, start, end, model)
    except Unpriced as exc:
        raise UnpricedEntries(
            f"Entries fall before the first rate card of: {', '.join(exc.partners)}.",
            errors={"partners": exc.partners}) from exc


def describe(run: SettlementRun, session: Any) -> dict[str, Any]:
    open_breaks = session.scalar(select(func.count()).where(
        Break.run_id == run.id, Break.status == "open")) or 0
    return {
        **run.result,
        "id": run.id, "status": run.status, "model": run.model,
        "period_start": run.period_start, "period_end": run.period_end,
        "created_at": run.created_at, "created_by": run.created_by,
        "computed_at": run.computed_at, "closed_at": run.closed_at, "closed_by": run.closed_by,
        "digest": run.result_digest, "open_breaks": int(open_breaks),
    }


def _period(run: SettlementRun) -> dict[str, Any]:
    return {"period_start": run.period_start, "period_end": run.period_end}


def create_run(start: datetime, end: datetime, created_by: str, *,
               actor: Actor | None = None) -> dict[str, Any]:
    """Compute the period's figures and keep them as a draft run. ``actor`` is who the
    audit log names (by default, ``created_by``)."""
    if start >= end:
        raise InvalidRequest("period_start must be before period_end.",
                             errors={"period_end": ["Must be after period_start."]})
    now = utcnow()
    if end > now:
        message = "The period has not ended yet; settle it after period_end."
        raise InvalidRequest(message, errors={"period_end": [message]})
    with UnitOfWork() as uow:
        overlapping = uow.session.scalar(select(SettlementRun.id).where(
            SettlementRun.period_start < end, start < SettlementRun.period_end).limit(1))
        if overlapping is not None:
            raise PeriodOverlap(f"The period overlaps settlement run {overlapping}.",
                                errors={"period_start": [f"Overlaps run {overlapping}."]})
        # the money model in force when the run is made is the period's, for good: a
        # recompute or the close keeps it, so a closed run always recomputes the same
        model = rules_in_force(uow.session)["settlement_model"]
        result = _compute(uow.session, start, end, model)
        run = SettlementRun(period_start=start, period_end=end, status="draft", model=model,
                            created_by=created_by, computed_at=now, result=result,
                            result_digest=digest(result))
        uow.session.add(run)
        try:
            uow.session.flush()
        except (IntegrityError, DBAPIError) as exc:  # a concurrent run took the period
            raise PeriodOverlap("The period overlaps another settlement run.") from exc
        record(uow.session, actor or Actor(created_by), "settlement.run_created",
               f"run:{run.id}", {**_period(run), "model": model, "digest": run.result_digest})
        uow.commit()
        return describe(run, uow.session)


def _load(session: Any, run_id: int, lock: bool = False) -> SettlementRun:
    query = select(SettlementRun).where(SettlementRun.id == run_id)
    run = session.scalar(query.with_for_update() if lock else query)
    if run is None:
        raise NotFound(f"No settlement run {run_id}.")
    return run


def get_run(run_id: int) -> dict[str, Any]:
    with read() as session:
        return describe(_load(session, run_id), session)


def list_runs() -> list[dict[str, Any]]:
    with read() as session:
        runs = session.scalars(select(SettlementRun).order_by(SettlementRun.period_start))
        return [{"id": r.id, "status": r.status, "model": r.model,
                 "period_start": r.period_start,
                 "period_end": r.period_end, "digest": r.result_digest} for r in runs]


def recompute(run_id: int, *, actor: Actor = SYSTEM) -> dict[str, Any]:
    """Recompute a draft from the journal (a rate card added since may change it)."""
    with UnitOfWork() as uow:
        run = _load(uow.session, run_id, lock=True)
        if run.status == "closed":
            raise PeriodClosed(f"Settlement run {run_id} is closed.")
        result = _compute(uow.session, run.period_start, run.period_end, run.model)
        before = run.result_digest
        run.result, run.result_digest, run.computed_at = result, digest(result), utcnow()
        record(uow.session, actor, "settlement.run_recomputed", f"run:{run.id}",
               {**_period(run), "digest_before": before, "digest": run.result_digest,
                "changed": before != run.result_digest})
        uow.commit()
        return describe(run, uow.session)


def delete_draft(run_id: int, *, actor: Actor = SYSTEM) -> None:
    with UnitOfWork() as uow:
        run = _load(uow.session, run_id, lock=True)
        if run.status == "closed":
            raise PeriodClosed(f"Settlement run {run_id} is closed.")

        for model in (Break, Reconciliation):
            for row in uow.session.scalars(select(model).where(model.run_id == run_id)):
                uow.session.delete(row)
        uow.session.flush()
        record(uow.session, actor, "settlement.run_deleted", f"run:{run.id}",
               {**_period(run), "digest": run.result_digest})
        uow.session.delete(run)
        uow.commit()


def close_run(run_id: int, closed_by: str, *, actor: Actor | None = None) -> dict[str, Any]:
    """Close a run whose breaks are all resolved; its figures are recomputed one last time
    and then frozen. ``actor`` is who the audit log names (by default, ``closed_by``).

    The close holds the settlement fence: it waits for the bookings in flight, and none
    commits into the period while it is being closed."""
    with UnitOfWork() as uow:
        fence.hold_exclusive(uow.session)
        run = _load(uow.session, run_id, lock=True)
        if run.status == "closed":
            raise PeriodClosed(f"Settlement run {run_id} is already closed.")
        open_breaks = uow.session.scalar(select(func.count()).where(
            Break.run_id == run.id, Break.status == "open")) or 0
        if open_breaks:
            raise UnresolvedBreaks(f"{plural(open_breaks, 'reconciliation break')} "
                                   f"{verb(open_breaks, 'is', 'are')} unresolved.")
        result = _compute(uow.session, run.period_start, run.period_end, run.model)
        now = utcnow()
        run.result, run.result_digest, run.computed_at = result, digest(result), now
        # the liability at the period end is kept as it is closed, whatever the breakage
        # prior is configured to later
        run.liability = _liability(uow.session, run)
        run.status, run.closed_at, run.closed_by = "closed", now, closed_by
        record(uow.session, actor or Actor(closed_by), "settlement.run_closed",
               f"run:{run.id}", {**_period(run), "digest": run.result_digest,
                                 "closed_by": closed_by})
        _statements_ready(uow.session, run, now)
        uow.commit()
        return describe(run, uow.session)


def _statements_ready(session: Any, run: SettlementRun, now: datetime) -> None:
    """``statement.ready`` to each partner of a run being closed, in the close's own
    transaction."""
    codes = [s["partner"] for s in run.result["statements"]]
    ids = {code: partner_id for code, partner_id in session.execute(
        select(Partner.code, Partner.id).where(Partner.code.in_(codes)))}
    for s in run.result["statements"]:
        if s["partner"] in ids:
            webhooks.emit(session, ids[s["partner"]], "statement.ready", {
                "run_id": run.id, "partner": s["partner"],
                "period_start": rfc3339(run.period_start),
                "period_end": rfc3339(run.period_end), "currency": s.get("currency"),
                "net": str(s["net"]) if s.get("net") is not None else None}, now)


def journal_digest(session: Any, run: SettlementRun) -> str:
    """The digest of the run's figures computed from the journal as it is now: for a
    closed run, the digest it was closed with, unless its period changed since."""
    return digest(_compute(session, run.period_start, run.period_end, run.model))


# --------------------------------------------------------------------------- liability


def prior() -> Prior:
    """The breakage prior as configured."""
    return Prior(Decimal(current_app.config["BREAKAGE_PRIOR"]),
                 int(current_app.config["BREAKAGE_MIN_COHORTS"]))


def _liability(session: Any, run: SettlementRun) -> dict[str, Any]:
    """The liability at the run's period end under its money model; the roll-forward opens
    with the closing liability of the closed run that ends where this one starts, as it was
    closed (a change of estimate since then shows as this period's)."""
    previous = session.scalar(select(SettlementRun).where(
        SettlementRun.period_end == run.period_start, SettlementRun.status == "closed"))
    opening = None
    if previous is not None and previous.liability is not None:
        opening = {r["currency"]: Decimal(r["closing"])
                   for r in previous.liability["rollforward"]}
    return liability(session, run.period_start, run.period_end, run.model, prior(), opening)


def run_liability(run_id: int) -> dict[str, Any]:
    """The points liability at a run's period end: a closed run's as it was closed, a
    draft's measured now."""
    with read() as session:
        run = _load(session, run_id)
        doc = run.liability if run.liability is not None else _liability(session, run)
        return {**doc, "run": run.id, "status": run.status}


# --------------------------------------------------------------------------- statements


def statement(run_id: int, partner_code: str, *, only_closed: bool = False) -> dict[str, Any]:
    # a closed run never changes: a partner's statement may come from a replica; finance
    # reads a draft it has just recomputed, from the primary
    with (replica_read() if only_closed else read()) as session:
        if only_closed:
            # a partner learns nothing of a run that is not closed, not even that it exists
            run = session.get(SettlementRun, run_id)
            if run is None or run.status != "closed":
                raise NotFound(f"No statement for {partner_code} in run {run_id}.")
        else:
            run = _load(session, run_id)
        for s in run.result["statements"]:
            if s["partner"] == partner_code:
                return {"run": run.id, "status": run.status,
                        "period_start": run.period_start, "period_end": run.period_end,
                        **s, "model": run.model,
                        "funding": funding.in_period(session, partner_code,
                                                     run.period_start, run.period_end,
                                                     s["issued_points"])}
        raise NotFound(f"No statement for {partner_code} in run {run_id}.")


STATEMENT_COLUMNS = ["type", "counterparty", "points", "rate", "rate_valid_from", "amount"]
#: what every row of a run's CSV export says first: which run, which period, which money model
RUN_CSV_HEAD = ["run_id", "period_start", "period_end", "model"]


def _csv_value(value: Any) -> Any:
    return rfc3339(value) if isinstance(value, datetime) else value


def statement_csv(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["partner", "currency", "model", "period_start", "period_end",
                     *STATEMENT_COLUMNS])
    head = [doc["partner"], doc["currency"], doc["model"]]
    for line in doc["lines"]:
        writer.writerow([*head, rfc3339(doc["period_start"]), rfc3339(doc["period_end"]),
                         *(_csv_value(line.get(c)) for c in STATEMENT_COLUMNS)])
    writer.writerow([*head, "", "", "payable", "", doc["issued_points"], "", "",
                     doc["payable"]])
    writer.writerow([*head, "", "", "receivable", "", doc["redeemed_points"], "", "",
                     doc["receivable"]])
    writer.writerow([*head, "", "", "net", "", "", "", "", doc["net"]])
    return out.getvalue()


def run_csv(doc: dict[str, Any]) -> str:
    """Every statement line of the run, the payment instructions, then the coalition's
    own position and margin; each row names the run, its period and its money model, so a
    row read on its own still says where it is from."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = [doc["id"], rfc3339(doc["period_start"]), rfc3339(doc["period_end"]), doc["model"]]
    writer.writerow([*RUN_CSV_HEAD, "section", "partner", "currency", "type", "counterparty",
                     "points", "rate", "rate_valid_from", "amount"])
    for s in doc["statements"]:
        for line in s["lines"]:
            writer.writerow([*head, "statement", s["partner"], s["currency"], line["type"],
                             line.get("counterparty", COALITION), line["points"], line["rate"],
                             _csv_value(line["rate_valid_from"]), line["amount"]])
        writer.writerow([*head, "total", s["partner"], s["currency"], "net", "", "", "", "",
                         s["net"]])
    for p in doc["payments"]:
        writer.writerow([*head, "payment", f"{p['from']}->{p['to']}", p["currency"], "", "",
                         "", "", "", p["amount"]])
    for p in doc["coalition"].get("position", []):
        writer.writerow([*head, "coalition", COALITION, p["currency"], "position", "", "", "",
                         "", p["amount"]])
    for m in doc["coalition"]["margin"]:
        writer.writerow([*head, "coalition", COALITION, m["currency"], "margin", "", "", "",
                         "", m["amount"]])
    return out.getvalue()
