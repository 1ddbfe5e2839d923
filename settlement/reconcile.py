"""Reconciliation of a partner's own record of a period against the journal.

The partner's file is CSV with the header ``partner_txn_id,type,member_number,points,
occurred_at``. Every record is matched by ``partner_txn_id`` against the partner's
transactions booked in the run's period and classified as matched, points mismatch,
missing in the ledger, missing in the partner's file, or duplicated in the file; a row
that cannot be read is reported by its line number. A promoted earn (or a reversal of one)
matches a record of either its total points or the partner's own points, its
``partner:issued`` part without the promotions' (``own_points`` in the ledger's view).
Every class but matched is a break, which finance resolves by accepting it with a reason
or by booking an adjustment (the transaction that corrects the difference) in the open
period.

A break is resolved once. Resolving it is one transaction on the locked break row, so of
two resolutions at the same moment one wins and the other books nothing. An adjustment is
linked to the partner's transaction it corrects: a later upload shows that record as
adjusted (not a new break, and not to be adjusted again), and the next period's
reconciliation counts the correcting entry as matched rather than missing in the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import case, func, select, update

from coalition.audit import service as audit
from coalition.audit.service import Actor
from coalition.db import UnitOfWork, read, run_with_retries, utcnow
from coalition.errors import Conflict, InvalidRequest, NotFound, PeriodClosed
from coalition.ledger import booking, earn_burn, reversals
from coalition.ledger.models import TRANSACTION_TYPES, Entry, Member, Posting
from coalition.ledger.numbers import is_valid
from coalition.models import Partner
from coalition.schemas import MAX_POINTS, UTCTimestamp
from partners import transactions as partner_bookings
from settlement.models import Adjustment, Break, Reconciliation, SettlementRun

COLUMNS = ("partner_txn_id", "type", "member_number", "points", "occurred_at")
MAX_FILE_BYTES = 20 * 1024 * 1024
#: what the partner API accepts as a partner_txn_id (partners.api_schemas.TXN_ID): any
#: other value matches nothing and may not even be stored (NUL, more than 64 characters)
TXN_ID = re.compile(r"[\x21-\x7e]{1,64}")
EARN_LIKE = ("earn",)
BURN_LIKE = ("burn", "hold_capture")


class BreakResolved(Conflict):
    code = "break_resolved"


@dataclass(frozen=True)
class Record:
    line: int
    partner_txn_id: str
    type: str
    member_number: str
    points: int
    occurred_at: datetime


def parse(content: bytes) -> tuple[list[Record], list[dict[str, Any]]]:
    """Records, and the rows that could not be read with their line numbers and reasons."""
    if len(content) > MAX_FILE_BYTES:
        raise InvalidRequest(f"The file is larger than {MAX_FILE_BYTES} bytes.")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The file is not UTF-8 text.",
                             errors={"file": ["Not UTF-8."]}) from exc
    # strict: a stray quote is an error on its row, not a silently different value
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidRequest("The file is empty.", errors={"file": ["No header row."]}) from None
    except csv.Error as exc:
        raise InvalidRequest(f"Line 1: {exc}", errors={"file": [str(exc)]}) from None
    header = [h.strip().lower() for h in header]
    if sorted(header) != sorted(COLUMNS):
        message = f"The header must name the columns {', '.join(COLUMNS)}."
        raise InvalidRequest(message, errors={"file": [message]})
    position = {name: header.index(name) for name in COLUMNS}
    records: list[Record] = []
    malformed: list[dict[str, Any]] = []
    timestamp = UTCTimestamp()
    while True:
        # a record's line is where it starts: a quoted field may run over several lines
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            malformed.append({"line": line, "errors": [str(exc)]})
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(COLUMNS):
            malformed.append({"line": line, "errors": [
                f"Expected {len(COLUMNS)} fields, found {len(row)}."]})
            continue
        value = {name: row[i].strip() for name, i in position.items()}
        errors = []
        txn_ok = TXN_ID.fullmatch(value["partner_txn_id"]) is not None
        if not txn_ok:
            errors.append("partner_txn_id: 1 to 64 printable ASCII characters, no spaces.")
        if value["type"] not in TRANSACTION_TYPES:
            errors.append(f"type: one of {', '.join(TRANSACTION_TYPES)}.")
        if not is_valid(value["member_number"]):
            errors.append("member_number: not a valid member number.")
        points = 0
        # ASCII digits only ("²".isdigit() is true, int() refuses it) and few enough of
        # them for int() (which refuses more than 4300 digits)
        if not (value["points"].isascii() and value["points"].isdigit()
                and len(value["points"]) <= len(str(MAX_POINTS))
                and 1 <= int(value["points"]) <= MAX_POINTS):
            errors.append("points: a whole number from 1.")
        else:
            points = int(value["points"])
        occurred = None
        try:
            occurred = timestamp.deserialize(value["occurred_at"])
        except ValidationError as exc:
            errors.append(f"occurred_at: {' '.join(exc.messages)}")
        if errors:
            malformed.append({"line": line,
                              "partner_txn_id": value["partner_txn_id"] if txn_ok else None,
                              "errors": errors})
            continue
        assert occurred is not None, "an occurred_at that did not parse is an error above"
        records.append(Record(line, value["partner_txn_id"], value["type"],
                              value["member_number"], points, occurred))
    return records, malformed


def _ledger(session: Any, partner_id: int, start: datetime, end: datetime
            ) -> tuple[dict[str, dict[str, Any]], int]:
    """The partner's transactions booked in ``[start, end)`` by partner_txn_id, and how
    many of its entries there are adjustments finance booked (the partner's file does not
    list them: they are matched by their link to the transaction they correct)."""
    e, m, a, p = (Entry.__table__.c, Member.__table__.c, Adjustment.__table__.c,
                  Posting.__table__.c)
    # a promoted earn (and its reversals): the partner's own points, its partner:issued
    # part, which is what it records when it leaves the promotions to the coalition
    own = (select(func.abs(func.sum(p.points))).where(
        p.entry_id == e.id, p.account == "partner:issued", p.partner_id == partner_id)
        .scalar_subquery())
    promoted = (select(p.entry_id).where(p.entry_id == e.id,
                                         p.account == "promotion:funded").exists())
    rows = session.execute(
        select(e.id, e.partner_txn_id, e.kind, m.member_number, e.points, e.occurred_at,
               a.entry_id.label("adjustment"),
               case((promoted, func.coalesce(own, 0)), else_=None).label("own"))
        .join(Member.__table__, m.id == e.member_id)
        .outerjoin(Adjustment.__table__, a.entry_id == e.id)
        .where(e.partner_id == partner_id, e.booked_at >= start, e.booked_at < end,
               e.kind.in_(TRANSACTION_TYPES), e.partner_txn_id.is_not(None))
    ).all()
    return ({r.partner_txn_id: {"entry_id": r.id, "type": r.kind,
                                "member_number": r.member_number, "points": r.points,
                                "occurred_at": r.occurred_at.isoformat(),
                                **({"own_points": int(r.own)} if r.own is not None else {})}
             for r in rows if r.adjustment is None},
            sum(1 for r in rows if r.adjustment is not None))


def _adjustments(session: Any, partner_id: int
                 ) -> dict[str, tuple[Adjustment, Break | None]]:
    """The partner's transactions already corrected, with the break each correction
    resolved (none when that break's draft run was deleted since)."""
    rows = session.execute(
        select(Adjustment, Break).outerjoin(Break, Break.id == Adjustment.break_id)
        .where(Adjustment.partner_id == partner_id)).all()
    return {adj.partner_txn_id: (adj, brk) for adj, brk in rows}


def reconcile(run_id: int, partner_code: str, content: bytes, uploaded_by: str, *,
              actor: Actor | None = None) -> dict[str, Any]:
    """Classify the partner's file against the run's period; a new upload supersedes the
    previous one for the same run and partner."""
    records, malformed = parse(content)
    with UnitOfWork() as uow:
        session = uow.session
        run = session.scalar(select(SettlementRun).where(SettlementRun.id == run_id)
                             .with_for_update())
        if run is None:
            raise NotFound(f"No settlement run {run_id}.")
        if run.status == "closed":
            raise PeriodClosed(f"Settlement run {run_id} is closed.")
        partner = session.scalar(select(Partner).where(Partner.code == partner_code))
        if partner is None:
            raise NotFound(f"No partner {partner_code!r}.")
        ledger_rows, corrections = _ledger(session, partner.id, run.period_start,
                                           run.period_end)
        adjusted = _adjustments(session, partner.id)

        breaks: list[dict[str, Any]] = []
        matched = corrections
        seen: dict[str, Record] = {}

        def corrected(txn_id: str, ours: dict[str, Any] | None, points: int,
                      kind: str, line: int | None, details: dict[str, Any]) -> bool:
            """Whether an adjustment already made the ledger say what the file says: the
            record is then shown as adjusted, resolved by that adjustment."""
            link = adjusted.get(txn_id)
            if link is None:
                return False
            adj, done = link
            if (ours["points"] if ours else 0) + adj.points != points:
                details["adjusted_by"] = {"entry_id": adj.entry_id, "break_id": adj.break_id,
                                          "points": adj.points}
                return False
            breaks.append({"kind": kind, "line": line, "partner_txn_id": txn_id,
                           "details": {**details, "adjusted_by": {
                               "entry_id": adj.entry_id, "break_id": adj.break_id,
                               "points": adj.points}},
                           "resolved": adj,
                           "reason": done.reason if done else
                           f"corrected by entry {adj.entry_id}"})
            return True

        for record in records:
            if record.partner_txn_id in seen:
                breaks.append({"kind": "duplicated_in_file", "line": record.line,
                               "partner_txn_id": record.partner_txn_id,
                               "details": {"first_line": seen[record.partner_txn_id].line,
                                           "file": _file_view(record)}})
                continue
            seen[record.partner_txn_id] = record
            ours = ledger_rows.get(record.partner_txn_id)
            if ours is None:
                elsewhere = session.execute(
                    select(Entry.id, Entry.booked_at).where(
                        Entry.partner_id == partner.id,
                        Entry.partner_txn_id == record.partner_txn_id)).first()
                details: dict[str, Any] = {"file": _file_view(record)}
                if elsewhere is not None:
                    details["booked_in_another_period"] = {
                        "entry_id": elsewhere.id, "booked_at": elsewhere.booked_at.isoformat()}
                if corrected(record.partner_txn_id, None, record.points, "missing_in_ledger",
                             record.line, details):
                    continue
                breaks.append({"kind": "missing_in_ledger", "line": record.line,
                               "partner_txn_id": record.partner_txn_id, "details": details})
                continue
            differing = [f for f in ("type", "member_number", "points")
                         if ours[f] != getattr(record, f)
                         and not (f == "points" and ours.get("own_points") == record.points)]
            if differing:
                details = {"fields": differing, "file": _file_view(record), "ledger": ours}
                if differing == ["points"] and corrected(
                        record.partner_txn_id, ours, record.points, "points_mismatch",
                        record.line, details):
                    continue
                breaks.append({"kind": "points_mismatch", "line": record.line,
                               "partner_txn_id": record.partner_txn_id, "details": details})
            else:
                matched += 1
        for txn_id, ours in sorted(ledger_rows.items(), key=lambda kv: kv[1]["entry_id"]):
            if txn_id not in seen:
                details = {"ledger": ours}
                if corrected(txn_id, ours, 0, "missing_in_file", None, details):
                    continue
                breaks.append({"kind": "missing_in_file", "line": None,
                               "partner_txn_id": txn_id, "details": details})
        for bad in malformed:
            breaks.append({"kind": "malformed", "line": bad["line"],
                           "partner_txn_id": bad.get("partner_txn_id"),
                           "details": {"errors": bad["errors"]}})

        previous = session.scalars(select(Reconciliation).where(
            Reconciliation.run_id == run.id, Reconciliation.partner_id == partner.id,
            Reconciliation.superseded.is_(False))).all()
        for old in previous:
            old.superseded = True
            session.execute(update(Break).where(Break.reconciliation_id == old.id,
                                                Break.status == "open")
                            .values(status="accepted", resolved_at=utcnow(),
                                    resolved_by=uploaded_by,
                                    reason="superseded by a later upload"))
        counts = {k: 0 for k in ("matched", "adjusted", "points_mismatch",
                                 "missing_in_ledger", "missing_in_file", "duplicated_in_file",
                                 "malformed")}
        counts["matched"] = matched
        for b in breaks:
            counts["adjusted" if "resolved" in b else b["kind"]] += 1
        recon = Reconciliation(run_id=run.id, partner_id=partner.id, uploaded_by=uploaded_by,
                               file_sha256=hashlib.sha256(content).hexdigest(),
                               rows=len(records) + len(malformed), superseded=False,
                               summary=counts)
        session.add(recon)
        session.flush()
        for b in breaks:
            row = Break(run_id=run.id, reconciliation_id=recon.id, partner_id=partner.id,
                        kind=b["kind"], partner_txn_id=b["partner_txn_id"],
                        line=b["line"], details=b["details"], status="open")
            adj = b.get("resolved")
            if adj is not None:  # resolved once, by the adjustment that corrected it
                row.status, row.resolved_at, row.resolved_by = ("adjusted", adj.created_at,
                                                                adj.created_by)
                row.reason, row.adjustment_entry_id = b["reason"], adj.entry_id
            session.add(row)
        session.flush()
        audit.record(session, actor or Actor(uploaded_by),
                     "settlement.reconciliation_uploaded", f"run:{run.id}",
                     {"partner": partner.code, "reconciliation_id": recon.id,
                      "file_sha256": recon.file_sha256, "rows": recon.rows, "summary": counts,
                      "superseded": [old.id for old in previous]})
        uow.commit()
        return report(recon.id)


def _file_view(record: Record) -> dict[str, Any]:
    return {"type": record.type, "member_number": record.member_number,
            "points": record.points, "occurred_at": record.occurred_at.isoformat()}


def _break_view(b: Break) -> dict[str, Any]:
    return {"id": b.id, "kind": b.kind, "partner_txn_id": b.partner_txn_id, "line": b.line,
            "details": b.details, "status": b.status, "resolved_at": b.resolved_at,
            "resolved_by": b.resolved_by, "reason": b.reason,
            "adjustment_entry_id": b.adjustment_entry_id}


def report(reconciliation_id: int) -> dict[str, Any]:
    with read() as session:
        recon = session.get(Reconciliation, reconciliation_id)
        if recon is None:
            raise NotFound(f"No reconciliation {reconciliation_id}.")
        partner = session.get_one(Partner, recon.partner_id)
        breaks = session.scalars(select(Break).where(Break.reconciliation_id == recon.id)
                                 .order_by(Break.id)).all()
        return {"id": recon.id, "run": recon.run_id, "partner": partner.code,
                "uploaded_at": recon.uploaded_at, "uploaded_by": recon.uploaded_by,
                "file_sha256": recon.file_sha256, "rows": recon.rows,
                "summary": recon.summary,
                "breaks": [{**_break_view(b), "partner": partner.code} for b in breaks]}


def list_breaks(run_id: int, status: str | None = None) -> list[dict[str, Any]]:
    with read() as session:
        if session.get(SettlementRun, run_id) is None:  # not an empty list: no such run
            raise NotFound(f"No settlement run {run_id}.")
        query = select(Break, Partner.code).join(Partner, Partner.id == Break.partner_id).where(
            Break.run_id == run_id)
        if status:
            query = query.where(Break.status == status)
        return [{**_break_view(b), "partner": code}
                for b, code in session.execute(query.order_by(Break.id))]


def resolve(run_id: int, break_id: int, action: str, reason: str, resolved_by: str, *,
            actor: Actor | None = None) -> dict[str, Any]:
    """Accept a break with a reason, or adjust: book the transaction that corrects the
    difference in the open period and link it to the partner's transaction. One unit of
    work on the locked break: a second resolution waits, then finds it resolved and books
    nothing. ``actor`` is who the audit log names (by default, ``resolved_by``)."""

    def attempt() -> None:
        with UnitOfWork() as uow:
            session = uow.session
            row = session.execute(
                select(Break, SettlementRun.status, Partner)
                .join(SettlementRun, SettlementRun.id == Break.run_id)
                .join(Partner, Partner.id == Break.partner_id)
                .where(Break.id == break_id, Break.run_id == run_id)
                .with_for_update(of=Break)).first()
            if row is None:
                raise NotFound(f"No break {break_id} in run {run_id}.")
            brk, run_status, partner = row
            if run_status == "closed":
                raise PeriodClosed(f"Settlement run {run_id} is closed.")
            if brk.status != "open":
                raise BreakResolved(f"Break {break_id} is already {brk.status}.")
            entry_id = None
            if action == "adjust":
                entry_id, points = _adjust(session, brk, partner)
                session.add(Adjustment(entry_id=entry_id, partner_id=partner.id,
                                       partner_txn_id=brk.partner_txn_id, break_id=brk.id,
                                       points=points, created_by=resolved_by))
            status = "adjusted" if action == "adjust" else "accepted"
            brk.status, brk.resolved_at, brk.resolved_by = status, utcnow(), resolved_by
            brk.reason, brk.adjustment_entry_id = reason, entry_id
            session.flush()
            audit.record(session, actor or Actor(resolved_by), f"settlement.break_{status}",
                         f"break:{break_id}",
                         {"run": run_id, "partner": partner.code, "kind": brk.kind,
                          "partner_txn_id": brk.partner_txn_id, "reason": reason,
                          "resolved_by": resolved_by, "adjustment_entry_id": entry_id})
            uow.commit()

    run_with_retries(attempt)
    return next(b for b in list_breaks(run_id) if b["id"] == break_id)


def _adjust(session: Any, brk: Break, partner: Partner) -> tuple[int, int]:
    """Book the correcting transaction in ``session``; its partner_txn_id names the break.
    Returns the entry and the change in the partner transaction's points it makes.

    It is a booking of the partner's points like any other (:func:`partners.transactions.
    report`): an earn uses the partner's funding (a prepaid partner whose funding cannot
    cover it is refused with ``insufficient_funding``, and the break stays open), an earn
    reversal gives it back, and the partner's webhooks hear of it, all in this
    transaction."""
    ref = booking.PartnerRef(partner.id, partner.code, partner.currency)
    file = brk.details.get("file")
    ours = brk.details.get("ledger")
    record = file or ours
    kind = (record or {}).get("type")
    adjustable = ("points_mismatch", "missing_in_ledger", "missing_in_file")
    if record is None or brk.kind not in adjustable or (
            brk.kind == "missing_in_ledger" and "booked_in_another_period" in brk.details):
        raise InvalidRequest("Only a points difference or a missing record can be adjusted; "
                             "accept this break with a reason.")
    if file and ours and (file["type"] != ours["type"]
                          or file["member_number"] != ours["member_number"]):
        raise InvalidRequest("The records differ in type or member; accept this break with a "
                             "reason and correct it with the partner.")
    if kind not in EARN_LIKE + BURN_LIKE:
        raise InvalidRequest(f"A {kind} cannot be adjusted; accept this break with a reason.")
    earlier = session.scalar(select(Adjustment.entry_id).where(
        Adjustment.partner_id == partner.id, Adjustment.partner_txn_id == brk.partner_txn_id))
    if earlier is not None:
        raise InvalidRequest(
            f"{brk.partner_txn_id} was already corrected by entry {earlier}; accept this "
            "break with a reason and settle the rest with the partner.")
    difference = (file["points"] if file else 0) - (ours["points"] if ours else 0)
    txn = f"adj-{brk.id}-{brk.partner_txn_id}"[:64]
    member = record["member_number"]
    if difference > 0:
        data = {"member_number": member, "partner_txn_id": txn, "points": difference}
        if file:
            data["occurred_at"] = datetime.fromisoformat(file["occurred_at"])
        outcome = (earn_burn.earn(ref, data, session=session) if kind in EARN_LIKE
                   else earn_burn.burn(ref, data, session=session))
    elif ours is not None:
        outcome = reversals.reverse(ref, ours["entry_id"],
                                 {"partner_txn_id": txn, "points": -difference},
                                 session=session)
    else:
        raise InvalidRequest("Nothing in the ledger to take points back from; accept this "
                             "break with a reason.")
    if not outcome.replayed:
        partner_bookings.report(session, ref, txn)
    return int(outcome.body["id"]), difference
