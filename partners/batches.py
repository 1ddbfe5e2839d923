"""Batch files: a day's transactions as one CSV file, booked row by row outside the
request.

The file is checked whole when it is uploaded (encoding, header, every row's shape, a
declared row count or checksum) and refused whole if any of that is wrong; otherwise every
row is kept and the answer is the batch, queued. The worker then books the rows in file
order, each with the rules of its API call and idempotent by its ``partner_txn_id``. A
booked row's outcome is written in the transaction that books it, so a worker killed at any
moment resumes at the first row without an outcome and books nothing twice; a replayed or
refused row changed nothing, and is simply judged again if its outcome was lost.

A row whose booking fails for a reason that is no refusal (a database error other than a
lost connection, a fault in the code) is tried :data:`ROW_ATTEMPTS` times, waiting
:data:`ROW_BACKOFF` seconds and then twice as long each time, and then refused with the code
``internal_error`` so that the batch goes on and finishes; each attempt ran in a
transaction of its own that rolled back, so it booked nothing, and the partner can send the
row again. A lost connection is not the row's fault: it leaves the row without an outcome
for the worker's next turn.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from flask import current_app
from marshmallow import Schema, ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from coalition import clock
from coalition.audit.service import Actor, record
from coalition.cursor import decode, encode
from coalition.db import UnitOfWork, read
from coalition.errors import CoalitionError, InsufficientScope, InvalidRequest, NotFound
from coalition.ledger.booking import PartnerRef, partner_ref
from coalition.ledger.idempotency import Outcome
from coalition.ledger.models import Entry
from coalition.ledger.reversals import ReversalNotPermitted
from coalition.program.service import rules_in_force
from partners import transactions
from partners.api_schemas import BurnSchema, EarnSchema, ReversalSchema
from partners.models import Batch, BatchRow

COLUMNS = ("partner_txn_id", "type", "member_number", "partner_member_ref", "points",
           "spend_amount", "spend_currency", "occurred_at")
#: a reversal names the partner_txn_id of what it reverses
OPTIONAL = ("reference",)
TYPES = ("earn", "burn", "earn_reversal", "burn_reversal")
RESULT_COLUMNS = ("line", "partner_txn_id", "outcome", "transaction_id", "error", "message")
MAX_ROWS = 1_000_000
#: rows booked per turn of the worker before it looks at other work
CHUNK = 2000
#: tries of a row that fails for no business reason, before it is refused
ROW_ATTEMPTS = 3
#: seconds before the second try of such a row; each later one waits twice as long
ROW_BACKOFF = 0.2
#: the machine code such a row is refused with
INTERNAL_ERROR = "internal_error"
#: how the worker waits between tries (a test counts the waits instead)
pause: Callable[[float], None] = time.sleep
_DIGEST = re.compile(r"(?:^|,)\s*sha-256=:([A-Za-z0-9+/=]+):\s*(?:,|$)")

log = logging.getLogger(__name__)

_B = Batch.__table__.c
_R = BatchRow.__table__.c
_E = Entry.__table__.c


def _refuse(message: str, field: str = "file") -> InvalidRequest:
    return InvalidRequest(message, errors={field: [message]})


# --------------------------------------------------------------------------- the file


def parse(content: bytes, declared_rows: str | None = None,
          content_digest: str | None = None) -> list[dict[str, str]]:
    """The file's rows (column → text), or the whole file refused with the reason."""
    if content_digest is not None:
        match = _DIGEST.search(content_digest)
        if match is None:
            raise _refuse("Content-Digest must carry sha-256=:<base64>: (RFC 9530).",
                          "Content-Digest")
        try:
            expected = base64.b64decode(match.group(1), validate=True)
        except binascii.Error:
            raise _refuse("Content-Digest is not valid base64.", "Content-Digest") from None
        if hashlib.sha256(content).digest() != expected:
            raise _refuse("The file does not match its Content-Digest: it was changed or "
                          "cut short on the way.", "Content-Digest")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(f"The file is not UTF-8 text (byte {exc.start}).") from None
    if "\x00" in text:
        raise _refuse("The file contains a NUL character.")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise _refuse("The file is empty: no header row.") from None
    except csv.Error as exc:
        raise _refuse(f"Line 1: {exc}.") from None
    header = [name.strip() for name in header]
    missing = [c for c in COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS + OPTIONAL]
    if missing or unknown or len(set(header)) != len(header):
        raise _refuse(f"The header must name the columns {','.join(COLUMNS)} (and "
                      f"optionally reference), once each"
                      + (f"; missing: {', '.join(missing)}" if missing else "")
                      + (f"; unknown: {', '.join(unknown)}" if unknown else "") + ".",
                      "header")
    rows: list[dict[str, str]] = []
    try:
        for values in reader:
            line = reader.line_num
            if not values or values == [""]:
                continue  # a blank line (a trailing newline) is no row
            if len(values) != len(header):
                raise _refuse(f"Line {line} has {len(values)} fields; the header has "
                              f"{len(header)}. Nothing was booked.")
            if len(rows) >= MAX_ROWS:
                raise _refuse(f"A file has at most {MAX_ROWS} rows.")
            row = {name: value.strip() for name, value in zip(header, values, strict=True)}
            row["line"] = str(line)
            rows.append(row)
    except csv.Error as exc:
        raise _refuse(f"Line {reader.line_num}: {exc}. Nothing was booked.") from None
    if not rows:
        raise _refuse("The file has a header and no rows.")
    if declared_rows is not None:
        if not declared_rows.strip().isdigit() or int(declared_rows) != len(rows):
            raise _refuse(f"The file has {len(rows)} rows, not the {declared_rows.strip()!r} "
                          f"declared: it may be cut short. Nothing was booked.",
                          "Coalition-Batch-Rows")
    return rows


def upload(partner_id: int, scopes: set[str], content: bytes,
           declared_rows: str | None = None,
           content_digest: str | None = None, *, actor: Actor | None = None) -> dict[str, Any]:
    """Check the file whole and keep it as a queued batch; the batch. ``actor``: who
    uploaded it, in the partner's audit trail."""
    rows = parse(content, declared_rows, content_digest)
    now = clock.utcnow()
    with UnitOfWork() as uow:
        batch_id = uow.session.execute(insert(Batch.__table__).returning(_B.id), {
            "partner_id": partner_id, "status": "queued", "rows": len(rows),
            "scopes": " ".join(sorted(scopes)), "sha256": hashlib.sha256(content).hexdigest(),
            "created_at": now}).scalar_one()
        for start in range(0, len(rows), 5000):
            uow.session.execute(insert(BatchRow.__table__), [
                {"batch_id": batch_id, "line": int(row.pop("line")),
                 "partner_txn_id": row["partner_txn_id"][:200], "fields": row}
                for row in rows[start:start + 5000]])
        if actor is not None:
            record(uow.session, actor, "batch.uploaded", f"batch:{batch_id}",
                   {"rows": len(rows), "sha256": hashlib.sha256(content).hexdigest()},
                   partner_id=partner_id)
        uow.commit()
    return get_batch(partner_id, batch_id)


# --------------------------------------------------------------------------- reading


def _counts(session: Session, batch_id: int) -> dict[str, int]:
    counts = {outcome: n for outcome, n in session.execute(
        select(_R.outcome, func.count()).where(_R.batch_id == batch_id)
        .group_by(_R.outcome))}
    return {outcome: int(counts.get(outcome, 0)) for outcome in ("booked", "replayed",
                                                                  "refused")}


def _own(session: Session, partner_id: int | None, batch_id: int) -> Any:
    query = select(_B.id, _B.partner_id, _B.status, _B.rows, _B.created_at,
                   _B.finished_at, _B.sha256).where(_B.id == batch_id)
    if partner_id is not None:
        query = query.where(_B.partner_id == partner_id)
    row = session.execute(query).first()
    if row is None:
        raise NotFound("No such batch of yours.")
    return row


def get_batch(partner_id: int | None, batch_id: int) -> dict[str, Any]:
    """The batch with its counts so far (``partner_id`` None: any partner's, for the
    command line)."""
    with read() as session:
        row = _own(session, partner_id, batch_id)
        counts = _counts(session, batch_id)
    return {"id": row.id, "status": row.status, "rows": row.rows, **counts,
            "pending": row.rows - sum(counts.values()), "created_at": row.created_at,
            "finished_at": row.finished_at, "sha256": row.sha256}


def list_batches(partner_id: int, limit: int = 50) -> list[dict[str, Any]]:
    return page_batches(partner_id, limit)["items"]


def page_batches(partner_id: int, limit: int = 50,
                 cursor: str | None = None) -> dict[str, Any]:
    """The partner's batches, newest first, a page at a time (``next_cursor`` names the
    next, older page). A cursor that is not one is :class:`InvalidRequest`."""
    query = select(_B.id).where(_B.partner_id == partner_id)
    if cursor:
        query = query.where(_B.id < decode("b", cursor))
    with read() as session:
        ids = session.scalars(query.order_by(_B.id.desc()).limit(limit + 1)).all()
    more = len(ids) > limit
    return {"items": [get_batch(partner_id, batch_id) for batch_id in ids[:limit]],
            "next_cursor": encode("b", ids[limit - 1]) if more else None}


def results(partner_id: int | None, batch_id: int) -> Iterator[str]:
    """The per-row results as CSV lines (a row not yet booked: ``pending``)."""
    with read() as session:
        _own(session, partner_id, batch_id)
        rows = session.execute(select(_R.line, _R.partner_txn_id, _R.outcome,
                                      _R.transaction_id, _R.error, _R.message)
                               .where(_R.batch_id == batch_id).order_by(_R.line)).all()

    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(RESULT_COLUMNS)
        for line, txn, outcome, transaction_id, error, message in rows:
            writer.writerow((line, txn, outcome or "pending",
                             "" if transaction_id is None else transaction_id,
                             error or "", message or ""))
            if out.tell() > 65536:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    return lines()


# --------------------------------------------------------------------------- booking


def _load(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"row": exc.messages}
        fields = {name: value for name, value in messages.items()}
        text = "; ".join(f"{name}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                         for name, v in fields.items())
        raise InvalidRequest(f"The row is not valid: {text}", errors=fields) from None


def _number(text: str) -> Any:
    """A CSV cell as the JSON value the API would get: digits as a whole number."""
    return int(text) if text.isdigit() and len(text) < 19 else text


def _request(row: dict[str, str]) -> dict[str, Any]:
    """The row as the body of its API call (only the columns it gave)."""
    body: dict[str, Any] = {"partner_txn_id": row["partner_txn_id"]}
    kind = row["type"]
    if kind in ("earn", "burn"):
        for name in ("member_number", "partner_member_ref"):
            if row[name]:
                body[name] = row[name]
    if row["points"]:
        body["points"] = _number(row["points"])
    if row["spend_amount"] or row["spend_currency"]:
        money = {"amount": row["spend_amount"], "currency": row["spend_currency"]}
        body["refund" if kind.endswith("_reversal") else "spend"] = money
    if row["occurred_at"] and kind in ("earn", "burn"):
        body["occurred_at"] = row["occurred_at"]
    return body


def _original(partner_id: int, reference: str) -> tuple[int, str]:
    with read() as session:
        row = session.execute(select(_E.id, _E.kind).where(
            _E.partner_id == partner_id, _E.partner_txn_id == reference)).first()
    if row is None:
        raise NotFound(f"No transaction of yours has partner_txn_id {reference!r}.",
                       errors={"reference": ["Names no transaction of yours."]})
    return int(row.id), str(row.kind)


def book_row(partner: PartnerRef, scopes: set[str], late_before: Any, row: dict[str, str],
             then: transactions.Then) -> Outcome:
    """Book one row with the rules of its API call; ``then`` records its outcome in the
    booking's transaction."""
    kind = row.get("type", "")
    if kind not in TYPES:
        raise _refuse(f"type must be one of {', '.join(TYPES)}.", "type")
    needs = "points:earn" if kind.startswith("earn") else "points:burn"
    if needs not in scopes:
        raise InsufficientScope(f"A {kind} row needs the scope {needs}.")
    body = _request(row)
    if kind == "earn":
        data = _load(EarnSchema(), body)
    elif kind == "burn":
        data = _load(BurnSchema(), body)
    else:
        data = _load(ReversalSchema(), body)
    occurred = data.get("occurred_at")
    if occurred is not None and occurred < late_before:
        raise _refuse("occurred_at is older than the program's late-posting limit.",
                      "occurred_at")
    if kind == "earn":
        return transactions.earn(partner, data, then)
    if kind == "burn":
        return transactions.burn(partner, data, then)
    if not row.get("reference"):
        raise _refuse("A reversal names the partner_txn_id it reverses in reference.",
                      "reference")
    original, original_kind = _original(partner.id, row["reference"])
    wanted = kind.removesuffix("_reversal")
    if (original_kind == "hold_capture" and wanted == "burn") or original_kind == wanted:
        try:
            return transactions.reverse(partner, original, data, {wanted}, then)
        except ReversalNotPermitted:
            pass
    raise _refuse(f"reference names a {original_kind}, which a {kind} cannot reverse.",
                  "reference")


def _set_outcome(session: Session, batch_id: int, line: int, outcome: str,
                 transaction_id: int | None = None, error: str | None = None,
                 message: str | None = None) -> None:
    session.execute(update(BatchRow.__table__).where(
        _R.batch_id == batch_id, _R.line == line, _R.outcome.is_(None)).values(
        outcome=outcome, transaction_id=transaction_id, error=error,
        message=message[:500] if message else None))


def _record(batch_id: int, line: int, **values: Any) -> None:
    with UnitOfWork() as uow:
        _set_outcome(uow.session, batch_id, line, **values)
        uow.commit()


def _next_batch() -> Any:
    """The oldest batch with rows left, marked as being booked."""
    with UnitOfWork() as uow:
        row = uow.session.execute(
            select(_B.id, _B.partner_id, _B.scopes, _B.status)
            .where(_B.status.in_(("queued", "booking"))).order_by(_B.id).limit(1)).first()
        if row is None:
            return None
        if row.status == "queued":
            uow.session.execute(update(Batch.__table__).where(_B.id == row.id)
                                .values(status="booking"))
            uow.commit()
        return row


def _book_one(batch_id: int, partner: PartnerRef, scopes: set[str], late_before: Any,
              line: int, fields: dict[str, str]) -> None:
    def then(session: Session, entry_id: int) -> None:
        _set_outcome(session, batch_id, line, "booked", entry_id)

    for attempt in range(1, ROW_ATTEMPTS + 1):
        try:
            outcome = book_row(partner, scopes, late_before, fields, then)
        except CoalitionError as exc:
            _record(batch_id, line, outcome="refused", error=exc.code, message=exc.message)
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise  # the database is away, not the row at fault: the next turn books it
            if attempt < ROW_ATTEMPTS:
                log.warning("batch %s line %s failed (try %s of %s); trying again",
                            batch_id, line, attempt, ROW_ATTEMPTS, exc_info=True)
                pause(ROW_BACKOFF * 2 ** (attempt - 1))
                continue
            log.exception("batch %s line %s failed %s times; refused as %s", batch_id, line,
                          ROW_ATTEMPTS, INTERNAL_ERROR)
            _record(batch_id, line, outcome="refused", error=INTERNAL_ERROR,
                    message=f"The row could not be booked after {ROW_ATTEMPTS} tries because "
                            f"of a fault on our side; nothing of it was booked. Send it again "
                            f"later.")
        else:
            if outcome.replayed:
                _record(batch_id, line, outcome="replayed",
                        transaction_id=outcome.body.get("id"))
        return


def _lanes(rows: Sequence[Any], count: int) -> list[list[tuple[int, dict[str, str]]]]:
    """The rows split into at most ``count`` lanes booked side by side, each in file order:
    all the rows of one member in one lane (a burn after the earn it spends), a row with a
    ``partner_txn_id`` seen before in the lane of the first (a replay after the original),
    a reversal in the lane of the row it reverses, when that is in the file."""
    lanes: list[list[tuple[int, dict[str, str]]]] = [[] for _ in range(count)]
    of_txn: dict[str, int] = {}
    of_member: dict[str, int] = {}
    for line, fields in rows:
        member = fields.get("member_number") or "ref:" + fields.get("partner_member_ref", "")
        txn = fields.get("partner_txn_id", "")
        reference = fields.get("reference") or ""
        lane = of_txn.get(txn, of_txn.get(reference, of_member.get(member)))
        if lane is None:
            lane = zlib.crc32(member.encode()) % count
        of_txn.setdefault(txn, lane)
        of_member.setdefault(member, lane)
        lanes[lane].append((line, fields))
    return [lane for lane in lanes if lane]


def book_some(limit: int = CHUNK, progress: Callable[[int], None] | None = None,
              batch_id: int | None = None) -> bool:
    """Book up to ``limit`` rows of the oldest batch waiting (or of ``batch_id``);
    whether there was anything to book."""
    if batch_id is None:
        batch = _next_batch()
        if batch is None:
            return False
    else:
        with read() as session:
            batch = session.execute(select(_B.id, _B.partner_id, _B.scopes, _B.status)
                                    .where(_B.id == batch_id)).one()
        if batch.status == "done":
            return False
    with read() as session:
        partner = partner_ref(session, batch.partner_id)
        late_before = clock.utcnow() - timedelta(days=rules_in_force(session)
                                                 ["late_posting_days"])
        rows = session.execute(select(_R.line, _R.fields).where(
            _R.batch_id == batch.id, _R.outcome.is_(None)).order_by(_R.line)
            .limit(limit)).all()
    scopes = set(batch.scopes.split())
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def book_lane(lane: list[tuple[int, dict[str, str]]]) -> None:
        with app.app_context():
            for line, fields in lane:
                _book_one(batch.id, partner, scopes, late_before, line, fields)
                if progress is not None:
                    with progress_lock:
                        progress(1)

    progress_lock = threading.Lock()
    lanes = _lanes(rows, current_app.config["BATCH_CONCURRENCY"])
    if len(lanes) <= 1:
        for lane in lanes:
            book_lane(lane)
    else:
        with ThreadPoolExecutor(len(lanes), thread_name_prefix="batch") as pool:
            for future in [pool.submit(book_lane, lane) for lane in lanes]:
                future.result()
    if len(rows) < limit:
        with UnitOfWork() as uow:
            left = uow.session.scalar(select(func.count()).where(
                _R.batch_id == batch.id, _R.outcome.is_(None)))
            if not left:
                uow.session.execute(update(Batch.__table__).where(
                    _B.id == batch.id, _B.status != "done").values(
                    status="done", finished_at=clock.utcnow()))
                uow.commit()
    return bool(rows) or batch_id is None
