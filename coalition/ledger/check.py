"""``coalition ledger check``: the ledger's invariants, proved on a live database.

Every check is a set-based query (GROUP BY over postings, lots and their movements), read
in one snapshot (REPEATABLE READ on PostgreSQL, one read transaction on SQLite), so a
check of a busy database sees one consistent moment and never blocks a writer. A check
reports what it covered (row counts) and its violations, each naming the rows involved
and what was expected against what was found; at most ``limit`` of them per check (the
count is always exact).

1. ``entries_balance``: every entry has two or more postings summing to zero, and each
   posting names the owner its account needs (member, partner, or neither).
2. ``wallets_agree``: each wallet equals the postings on the member's accounts; available
   equals the remaining points of the member's live lots, pending those of pending lots,
   held the points of open holds; each lot's points plus its movements equal its
   remaining; and each entry's member postings (available and pending) equal the points
   it moved in lots plus the points of the lots it created.
3. ``no_negative``: no wallet balance below zero, no lot remaining outside [0, points].
4. ``unique_partner_txn``: one entry per (partner, partner_txn_id).
5. ``conservation``: issued − redeemed − expired − forfeited − spent on memberships
   (+ reversals, + funded) = outstanding, in total (from postings, against the wallets
   and the lots) and per origin partner (from lots and their movements by the moving
   entry's kind), cross-checked against the postings of the earns and earn reversals at
   each partner (their own points and the promotions' on them, ``promotion:funded``).
6. ``merges``: a member merged into another names its survivor, which is not merged
   itself (a merge re-points the chain at the last survivor), and was merged no earlier
   than it enrolled; a member not merged has neither a survivor nor a moment of merging
   (merges made before that moment was kept have none: unknown).
7. ``closed_runs``: a closed settlement period never changes: each closed run's figures,
   computed again from the journal, give the digest the run was closed with (settlement
   adds this check with :func:`add_check`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Flask, current_app
from sqlalchemy import (
    Connection,
    Select,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
    union_all,
)

from coalition.db import db, utcnow
from coalition.ledger.models import Entry, Hold, Lot, LotMovement, Member, Posting, Wallet
from coalition.models import Partner
from coalition.offers.earning import FUNDED

#: violations listed per check (the count is always exact)
LIMIT = 50
#: where the app keeps the checks other packages add
_ADDED = "coalition.ledger.checks"

_e = Entry.__table__.c
_p = Posting.__table__.c
_w = Wallet.__table__.c
_l = Lot.__table__.c
_m = LotMovement.__table__.c
_h = Hold.__table__.c

MEMBER_ACCOUNTS = ("member:available", "member:pending", "member:held")
PARTNER_ACCOUNTS = ("partner:issued", "partner:redeemed")
COALITION_ACCOUNTS = ("coalition:breakage", "coalition:forfeited", "coalition:funded",
                      "coalition:membership")
#: a promotion's funder (a partner, or none: the coalition) issues its share of an earn's
#: points here
PROMOTION_ACCOUNT = FUNDED

#: moving-entry kinds whose lot movements are redemptions (net of restorations)
REDEEMING_KINDS = ("burn", "hold_capture", "hold_void", "burn_reversal", "donation")


@dataclass
class CheckResult:
    name: str
    title: str
    covered: dict[str, int]
    violation_count: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def found(self, count: int, rows: list[dict[str, Any]]) -> None:
        self.violation_count += count
        self.violations.extend(rows)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "title": self.title, "ok": self.ok,
                                "covered": self.covered,
                                "violation_count": self.violation_count,
                                "violations": self.violations}
        if self.figures is not None:
            data["figures"] = self.figures
        return data


def _named(value: Any, partners: dict[int, str]) -> Any:
    """``partner_id``-like keys (``origin_partner_id``, …) as partner codes, for people."""
    if isinstance(value, list):
        return [_named(item, partners) for item in value]
    if not isinstance(value, dict):
        return value
    named: dict[str, Any] = {}
    for key, item in value.items():
        if key.endswith("partner_id") and (item is None or isinstance(item, int)):
            named[key.removesuffix("_id")] = None if item is None else partners.get(item, item)
        else:
            named[key] = _named(item, partners)
    return named


@dataclass
class LedgerReport:
    checked_at: datetime
    checks: list[CheckResult]
    #: partner codes by id, to name partners in the report
    partners: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def violation_count(self) -> int:
        return sum(c.violation_count for c in self.checks)

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The report with partners named by code (``origin_partner``: null is the
        coalition itself, for the points it funds)."""
        return {"checked_at": self.checked_at, "ok": self.ok,
                "violation_count": self.violation_count,
                "checks": [_named(c.to_dict(), self.partners) for c in self.checks]}


def add_check(app: Flask, check: Callable[[Connection, int], CheckResult]) -> None:
    """Run ``check`` after the ledger's own, in the same snapshot: a package that keeps
    figures derived from the journal proves them here."""
    app.extensions.setdefault(_ADDED, []).append(check)


def check_ledger(limit: int = LIMIT) -> LedgerReport:
    """Run every check in one read-only snapshot of the database."""
    checked_at = utcnow()
    with _snapshot() as conn:
        checks = [
            _entries_balance(conn, limit),
            _wallets_agree(conn, limit),
            _no_negative(conn, limit),
            _unique_partner_txn(conn, limit),
            _conservation(conn, limit),
            _merges(conn, limit),
            *(check(conn, limit) for check in current_app.extensions.get(_ADDED, ())),
        ]
        partners = {row.id: row.code for row in conn.execute(select(Partner.id, Partner.code))}
    return LedgerReport(checked_at, checks, partners)


@contextmanager
def _snapshot() -> Iterator[Connection]:
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ",
                                   postgresql_readonly=True)
        else:
            # a plain BEGIN: in WAL mode the first read pins the snapshot
            conn.execution_options(coalition_readonly=True)
        tx = conn.begin()
        try:
            yield conn
        finally:
            tx.rollback()


def _count(conn: Connection, table: Any) -> int:
    return conn.scalar(select(func.count()).select_from(table)) or 0


def _violations(conn: Connection, query: Select[Any], order_by: Any,
                limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The number of rows ``query`` finds, and the first ``limit`` of them as dicts."""
    count = conn.scalar(select(func.count()).select_from(query.subquery())) or 0
    if not count:
        return 0, []
    rows = conn.execute(query.order_by(*order_by).limit(limit)).mappings().all()
    # PostgreSQL sums BIGINT as NUMERIC: report whole numbers as ints
    return count, [{k: int(v) if isinstance(v, Decimal) else v for k, v in row.items()}
                   for row in rows]


def _sum(expression: Any) -> Any:
    return func.coalesce(func.sum(expression), 0)


def _zero(name: str) -> Any:
    return literal_column("0").label(name)


# --------------------------------------------------------------------------- 1


def _entries_balance(conn: Connection, limit: int) -> CheckResult:
    result = CheckResult("entries_balance",
                         "every entry has two or more postings that sum to zero",
                         {"entries": _count(conn, Entry.__table__),
                          "postings": _count(conn, Posting.__table__)})
    per_entry = (select(_p.entry_id, func.count().label("n"), func.sum(_p.points).label("s"))
                 .group_by(_p.entry_id).subquery())
    postings = func.coalesce(per_entry.c.n, 0)
    total = func.coalesce(per_entry.c.s, 0)
    count, rows = _violations(conn, (
        select(_e.id.label("entry_id"), _e.kind, postings.label("postings"),
               total.label("sum"))
        .select_from(Entry.__table__.outerjoin(per_entry, per_entry.c.entry_id == _e.id))
        .where(or_(postings < 2, total != 0),
               # a membership sold for money moves no points: the entry carries the money
               ~and_(postings == 0, _e.kind == "membership", _e.points == 0,
                     _e.spend_amount > Decimal(0)))
    ), [_e.id], limit)
    result.found(count, [
        {"problem": "unbalanced" if row["sum"] else "too few postings", **row,
         "expected": {"sum": 0, "postings": ">= 2"}}
        for row in rows])

    member, partner = _p.member_id.is_not(None), _p.partner_id.is_not(None)
    count, rows = _violations(conn, (
        select(_p.id.label("posting_id"), _p.entry_id, _p.account, _p.member_id,
               _p.partner_id)
        .where(or_(
            and_(_p.account.in_(MEMBER_ACCOUNTS), or_(~member, partner)),
            and_(_p.account.in_(PARTNER_ACCOUNTS), or_(~partner, member)),
            and_(_p.account.in_(COALITION_ACCOUNTS), or_(member, partner)),
            and_(_p.account == PROMOTION_ACCOUNT, member),
        ))
    ), [_p.id], limit - len(result.violations))
    result.found(count, [{"problem": "posting owner does not fit its account", **row}
                         for row in rows])
    return result


# --------------------------------------------------------------------------- 2


_BALANCES = ("wallets", "w_available", "w_pending", "w_held", "p_available", "p_pending",
             "p_held", "live_lots", "pending_lots", "open_holds", "ledger_rows")


def _arm(member_id: Any, **columns: Any) -> Select[Any]:
    return select(member_id.label("member_id"), *[
        columns[name].label(name) if name in columns else _zero(name) for name in _BALANCES])


def _wallets_agree(conn: Connection, limit: int) -> CheckResult:
    result = CheckResult(
        "wallets_agree",
        "wallets equal their postings, live and pending lots and open holds; lots equal "
        "their movements; entries' member postings equal their lot movements",
        {"wallets": _count(conn, Wallet.__table__), "lots": _count(conn, Lot.__table__),
         "lot_movements": _count(conn, LotMovement.__table__),
         "holds": _count(conn, Hold.__table__)})

    def posted(account: str) -> Any:
        return _sum(case((_p.account == account, _p.points), else_=0))

    sources = union_all(
        _arm(_w.member_id, wallets=literal_column("1"), w_available=_w.available,
             w_pending=_w.pending, w_held=_w.held),
        _arm(_p.member_id, p_available=posted("member:available"),
             p_pending=posted("member:pending"), p_held=posted("member:held"),
             ledger_rows=func.count())
        .where(_p.member_id.is_not(None)).group_by(_p.member_id),
        _arm(_l.member_id, live_lots=_sum(case((_l.state == "live", _l.remaining), else_=0)),
             pending_lots=_sum(case((_l.state == "pending", _l.remaining), else_=0)),
             ledger_rows=func.count())
        .group_by(_l.member_id),
        _arm(_h.member_id, open_holds=_sum(case((_h.status == "open", _h.points), else_=0)),
             ledger_rows=func.count())
        .group_by(_h.member_id),
    ).subquery()
    per_member = (
        select(sources.c.member_id, *[func.sum(sources.c[name]).label(name)
                                      for name in _BALANCES])
        .group_by(sources.c.member_id).subquery())
    b = per_member.c
    count, rows = _violations(conn, select(per_member).where(or_(
        b.wallets != 1,
        b.w_available != b.p_available, b.w_pending != b.p_pending, b.w_held != b.p_held,
        b.w_available != b.live_lots, b.w_pending != b.pending_lots,
        b.w_held != b.open_holds,
    )), [b.member_id], limit)
    result.covered["members_with_ledger_rows"] = conn.scalar(
        select(func.count()).select_from(per_member).where(b.ledger_rows > 0)) or 0
    result.found(count, [_wallet_violation(row) for row in rows])

    moved = (select(_m.lot_id, func.sum(_m.points).label("moved"))
             .group_by(_m.lot_id).subquery())
    expected = _l.points + func.coalesce(moved.c.moved, 0)
    count, rows = _violations(conn, (
        select(_l.id.label("lot_id"), _l.member_id, _l.state, _l.points,
               func.coalesce(moved.c.moved, 0).label("movements"),
               expected.label("expected_remaining"), _l.remaining.label("remaining"))
        .select_from(Lot.__table__.outerjoin(moved, moved.c.lot_id == _l.id))
        .where(expected != _l.remaining)
    ), [_l.id], limit)
    result.found(count, [{"problem": "lot remaining is not points + movements", **row}
                         for row in rows])

    # every movement carries copies of its lot's origin and of its entry's kind, partner
    # and booking time (settlement reads them from the movement)
    count, rows = _violations(conn, (
        select(_m.id.label("movement_id"), _m.lot_id, _m.entry_id, _m.origin_partner_id,
               _l.origin_partner_id.label("lot_origin_partner_id"), _m.entry_kind,
               _e.kind.label("kind"), _m.entry_partner_id, _e.partner_id.label("partner_id"))
        .join(Lot.__table__, _l.id == _m.lot_id)
        .join(Entry.__table__, _e.id == _m.entry_id)
        .where(or_(_m.origin_partner_id.is_distinct_from(_l.origin_partner_id),
                   _m.entry_kind.is_distinct_from(_e.kind),
                   _m.entry_partner_id.is_distinct_from(_e.partner_id),
                   _m.entry_booked_at.is_distinct_from(_e.booked_at)))
    ), [_m.id], limit)
    result.found(count, [{"problem": "movement origin differs from its lot's, or its "
                          "entry details from its entry's", **row} for row in rows])

    # each entry moves the member's spendable points (available + pending) exactly as
    # much as it moves them in lots: by movements, or by creating lots
    member_delta = (
        select(_p.entry_id, func.sum(_p.points).label("points"))
        .where(_p.account.in_(("member:available", "member:pending")))
        .group_by(_p.entry_id).subquery())
    movements = (select(_m.entry_id, func.sum(_m.points).label("points"))
                 .group_by(_m.entry_id).subquery())
    created = (select(_l.entry_id, func.sum(_l.points).label("points"))
               .group_by(_l.entry_id).subquery())
    posted_delta = func.coalesce(member_delta.c.points, 0)
    lot_delta = func.coalesce(movements.c.points, 0) + func.coalesce(created.c.points, 0)
    count, rows = _violations(conn, (
        select(_e.id.label("entry_id"), _e.kind, _e.member_id,
               posted_delta.label("member_postings"),
               func.coalesce(movements.c.points, 0).label("lot_movements"),
               func.coalesce(created.c.points, 0).label("lots_created"))
        .select_from(
            Entry.__table__
            .outerjoin(member_delta, member_delta.c.entry_id == _e.id)
            .outerjoin(movements, movements.c.entry_id == _e.id)
            .outerjoin(created, created.c.entry_id == _e.id))
        .where(posted_delta != lot_delta)
    ), [_e.id], limit)
    result.found(count, [
        {"problem": "entry's member postings disagree with its lots", **row,
         "expected": {"lot_movements + lots_created": row["member_postings"]}}
        for row in rows])
    return result


def _wallet_violation(row: Any) -> dict[str, Any]:
    problems = []
    if row["wallets"] != 1:
        problems.append("member has ledger rows but no wallet")
    for part in ("available", "pending", "held"):
        if row[f"w_{part}"] != row[f"p_{part}"]:
            problems.append(f"{part} != postings on member:{part}")
    if row["w_available"] != row["live_lots"]:
        problems.append("available != remaining of live lots")
    if row["w_pending"] != row["pending_lots"]:
        problems.append("pending != remaining of pending lots")
    if row["w_held"] != row["open_holds"]:
        problems.append("held != points of open holds")
    return {
        "problem": "; ".join(problems),
        "member_id": row["member_id"],
        "wallet": {"available": row["w_available"], "pending": row["w_pending"],
                   "held": row["w_held"]} if row["wallets"] else None,
        "postings": {"available": row["p_available"], "pending": row["p_pending"],
                     "held": row["p_held"]},
        "live_lots_remaining": row["live_lots"],
        "pending_lots_remaining": row["pending_lots"],
        "open_holds": row["open_holds"],
    }


# --------------------------------------------------------------------------- 3


def _no_negative(conn: Connection, limit: int) -> CheckResult:
    result = CheckResult("no_negative",
                         "no wallet balance below zero, no lot remaining outside [0, points]",
                         {"wallets": _count(conn, Wallet.__table__),
                          "lots": _count(conn, Lot.__table__)})
    count, rows = _violations(conn, (
        select(_w.member_id, _w.available, _w.pending, _w.held)
        .where(or_(_w.available < 0, _w.pending < 0, _w.held < 0))
    ), [_w.member_id], limit)
    result.found(count, [{"problem": "negative wallet balance", **row,
                          "expected": ">= 0 each"} for row in rows])
    count, rows = _violations(conn, (
        select(_l.id.label("lot_id"), _l.member_id, _l.points, _l.remaining)
        .where(or_(_l.remaining < 0, _l.remaining > _l.points))
    ), [_l.id], limit)
    result.found(count, [{"problem": "lot remaining outside [0, points]", **row}
                         for row in rows])
    return result


# --------------------------------------------------------------------------- 4


def _unique_partner_txn(conn: Connection, limit: int) -> CheckResult:
    keyed = _e.partner_txn_id.is_not(None)
    result = CheckResult("unique_partner_txn", "one entry per (partner, partner_txn_id)",
                         {"entries_with_partner_txn_id": conn.scalar(
                             select(func.count()).where(keyed)) or 0})
    # GROUP BY puts NULL partners in one group, which the unique index does not: an
    # entry keyed without a partner is checked here as well
    count, rows = _violations(conn, (
        select(_e.partner_id, _e.partner_txn_id, func.count().label("entries"))
        .where(keyed).group_by(_e.partner_id, _e.partner_txn_id)
        .having(func.count() > 1)
    ), [_e.partner_id, _e.partner_txn_id], limit)
    for row in rows:
        partner = (_e.partner_id.is_(None) if row["partner_id"] is None
                   else _e.partner_id == row["partner_id"])
        row["entry_ids"] = list(conn.scalars(
            select(_e.id).where(partner, _e.partner_txn_id == row["partner_txn_id"])
            .order_by(_e.id).limit(limit)))
    result.found(count, [{"problem": "duplicated partner_txn_id", **row,
                          "expected": {"entries": 1}} for row in rows])
    return result


# --------------------------------------------------------------------------- 5


def _conservation(conn: Connection, limit: int) -> CheckResult:
    result = CheckResult(
        "conservation",
        "issued − redeemed − expired − forfeited (+ reversals, + funded) = outstanding, "
        "in total and per origin partner",
        {"postings": _count(conn, Posting.__table__), "lots": _count(conn, Lot.__table__),
         "lot_movements": _count(conn, LotMovement.__table__),
         "wallets": _count(conn, Wallet.__table__)})

    # postings by account, entry kind and partner: a few rows per partner
    posted: dict[tuple[str, str, int | None], int] = {}
    for account, kind, partner_id, points in conn.execute(
        select(_p.account, _e.kind, _p.partner_id, func.sum(_p.points))
        .join(Entry.__table__, _e.id == _p.entry_id)
        .group_by(_p.account, _e.kind, _p.partner_id)
    ):
        posted[(account, kind, partner_id)] = int(points)

    def on(account: str, kind: str | None = None, partner_id: Any = ...) -> int:
        return sum(v for (a, k, p), v in posted.items() if a == account
                   and (kind is None or k == kind) and (partner_id is ... or p == partner_id))

    # promotion points by the partner whose earn (or earn reversal) they were on: they are
    # in that partner's earn lots with its own points
    promoted: dict[tuple[str, int | None], int] = {
        (kind, partner_id): int(points) for kind, partner_id, points in conn.execute(
            select(_e.kind, _e.partner_id, func.sum(_p.points))
            .join(Entry.__table__, _e.id == _p.entry_id)
            .where(_p.account == PROMOTION_ACCOUNT)
            .group_by(_e.kind, _e.partner_id))}

    totals = {
        "issued": -on("partner:issued", "earn"),
        "earn_reversals": on("partner:issued", "earn_reversal"),
        # issued by anything but earns and their reversals (nothing, so far)
        "issued_other": -(on("partner:issued") - on("partner:issued", "earn")
                          - on("partner:issued", "earn_reversal")),
        "funded": -on("coalition:funded"),
        "promotions": -on(PROMOTION_ACCOUNT),
        "redeemed": on("partner:redeemed") - on("partner:redeemed", "burn_reversal"),
        "burn_reversals": -on("partner:redeemed", "burn_reversal"),
        "expired": on("coalition:breakage"),
        "forfeited": on("coalition:forfeited"),
        # points spent on paid memberships: redeemed by the coalition itself
        "memberships": on("coalition:membership"),
    }
    net_issued = -on("partner:issued")
    net_redeemed = on("partner:redeemed")
    totals["outstanding_postings"] = sum(on(a) for a in MEMBER_ACCOUNTS)
    totals["outstanding_wallets"] = int(conn.scalar(
        select(_sum(_w.available + _w.pending + _w.held))) or 0)
    expected_outstanding = (net_issued + totals["funded"] + totals["promotions"]
                            - net_redeemed - totals["expired"] - totals["forfeited"]
                            - totals["memberships"])

    # lots: created per origin and creating kind, remaining per origin and state, and
    # their movements per origin and moving kind (holds split by open or closed)
    created: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for origin, kind, points in conn.execute(
        select(_l.origin_partner_id, _e.kind, func.sum(_l.points))
        .join(Entry.__table__, _e.id == _l.entry_id)
        .group_by(_l.origin_partner_id, _e.kind)
    ):
        created[origin][kind] += int(points)
    remaining: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for origin, state, points in conn.execute(
        select(_l.origin_partner_id, _l.state, func.sum(_l.remaining))
        .group_by(_l.origin_partner_id, _l.state)
    ):
        remaining[origin][state] += int(points)
    moved: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    open_hold = case((_h.status == "open", "hold:open"), else_="hold:closed")
    moving_kind = case((_e.kind == "hold", open_hold), else_=_e.kind)
    for origin, kind, points in conn.execute(
        select(_l.origin_partner_id, moving_kind, func.sum(_m.points))
        .select_from(LotMovement.__table__)
        .join(Lot.__table__, _l.id == _m.lot_id)
        .join(Entry.__table__, _e.id == _m.entry_id)
        .outerjoin(Hold.__table__, _h.entry_id == _m.entry_id)
        .group_by(_l.origin_partner_id, moving_kind)
    ):
        moved[origin][kind] += int(points)
    # earn reversals by the reversing partner (they may take from other partners' lots)
    reversed_at = {
        partner_id: -int(points) for partner_id, points in conn.execute(
            select(_e.partner_id, func.sum(_m.points))
            .join(Entry.__table__, _e.id == _m.entry_id)
            .where(_e.kind == "earn_reversal").group_by(_e.partner_id))
    }

    origins = sorted(set(created) | set(remaining) | set(moved),
                     key=lambda o: (o is not None, o or 0))
    per_origin = []
    for origin in origins:
        mv = moved[origin]
        redeemed = -(sum(mv[k] for k in REDEEMING_KINDS) + mv["hold:closed"])
        known = set(REDEEMING_KINDS) | {"hold:open", "hold:closed", "earn_reversal",
                                        "expiry", "forfeiture", "membership"}
        row = {
            "origin_partner_id": origin,
            "issued": created[origin]["earn"],
            "funded": created[origin]["bonus"],
            "created_other": sum(v for k, v in created[origin].items()
                                 if k not in ("earn", "bonus")),
            "earn_reversals": -mv["earn_reversal"],
            "redeemed": redeemed,
            "expired": -mv["expiry"],
            "forfeited": -mv["forfeiture"],
            "memberships": -mv["membership"],
            "moved_other": sum(v for k, v in mv.items() if k not in known),
            "held": -mv["hold:open"],
            "live": remaining[origin]["live"],
            "pending": remaining[origin]["pending"],
            "stranded": sum(v for k, v in remaining[origin].items()
                            if k not in ("live", "pending")),
        }
        row["outstanding"] = row["live"] + row["pending"] + row["held"]
        row["expected_outstanding"] = (
            row["issued"] + row["funded"] + row["created_other"] - row["earn_reversals"]
            - row["redeemed"] - row["expired"] - row["forfeited"] - row["memberships"]
            + row["moved_other"])
        per_origin.append(row)
    totals["outstanding_lots"] = sum(r["outstanding"] for r in per_origin)

    found: list[dict[str, Any]] = []
    for source in ("outstanding_wallets", "outstanding_lots"):
        if totals[source] != expected_outstanding:
            found.append({
                "problem": f"total: issued − redeemed − expired − forfeited + funded "
                           f"!= {source.replace('_', ' ')}",
                "expected": expected_outstanding, "actual": totals[source]})
    for row in per_origin:
        if row["outstanding"] != row["expected_outstanding"]:
            found.append({"problem": "origin partner: flows of its lots != their "
                                     "outstanding points (live + pending + held)",
                          "origin_partner_id": row["origin_partner_id"],
                          "expected": row["expected_outstanding"],
                          "actual": row["outstanding"], "stranded": row["stranded"]})
    partners = sorted({p for (a, k, p) in posted if a == "partner:issued" and p is not None}
                      | {o for o in origins if o is not None}
                      | {p for p in reversed_at if p is not None})
    for partner_id in partners:
        issued_posted = (-on("partner:issued", "earn", partner_id)
                         - promoted.get(("earn", partner_id), 0))
        issued_lots = created[partner_id]["earn"]
        if issued_posted != issued_lots:
            found.append({"problem": "points of earn lots of this origin != partner:issued "
                                     "postings of its earns (with their promotion:funded)",
                          "partner_id": partner_id, "expected": issued_posted,
                          "actual": issued_lots})
        reversed_posted = (on("partner:issued", "earn_reversal", partner_id)
                           + promoted.get(("earn_reversal", partner_id), 0))
        reversed_lots = reversed_at.get(partner_id, 0)
        if reversed_posted != reversed_lots:
            found.append({"problem": "points earn reversals at this partner took from lots "
                                     "!= their partner:issued postings",
                          "partner_id": partner_id, "expected": reversed_posted,
                          "actual": reversed_lots})
    for name, from_postings, from_lots in (
        ("funded", totals["funded"], sum(r["funded"] for r in per_origin)),
        ("redeemed", net_redeemed, sum(r["redeemed"] for r in per_origin)),
        ("expired", totals["expired"], sum(r["expired"] for r in per_origin)),
        ("forfeited", totals["forfeited"], sum(r["forfeited"] for r in per_origin)),
        ("memberships", totals["memberships"], sum(r["memberships"] for r in per_origin)),
        ("held", on("member:held"), sum(r["held"] for r in per_origin)),
    ):
        if from_postings != from_lots:
            found.append({"problem": f"{name}: postings != lot movements",
                          "expected": from_postings, "actual": from_lots})
    result.found(len(found), found[:limit])
    result.figures = {"totals": {**totals, "expected_outstanding": expected_outstanding},
                      "per_origin_partner": per_origin}
    return result


# --------------------------------------------------------------------------- 6


def _merges(conn: Connection, limit: int) -> CheckResult:
    member = Member.__table__
    survivor = member.alias("survivor")
    m = member.c
    result = CheckResult("merges", "a merged member names an unmerged survivor, merged "
                         "no earlier than it enrolled; no other member has either",
                         {"merged_members": conn.scalar(
                             select(func.count()).where(m.status == "merged")) or 0})
    merged = m.status == "merged"
    problem = case(
        (and_(merged, m.merged_into_id.is_(None)), "merged without a survivor"),
        (and_(~merged, or_(m.merged_into_id.is_not(None), m.merged_at.is_not(None))),
         "not merged, yet with a survivor or a moment of merging"),
        (survivor.c.merged_into_id.is_not(None), "its survivor is merged itself"),
        else_="merged before it enrolled")
    count, rows = _violations(conn, (
        select(m.id.label("member_id"), m.status, m.merged_into_id, m.merged_at,
               m.created_at, problem.label("problem"))
        .select_from(member.outerjoin(survivor, survivor.c.id == m.merged_into_id))
        .where(or_(and_(merged, m.merged_into_id.is_(None)),
                   and_(~merged, or_(m.merged_into_id.is_not(None),
                                     m.merged_at.is_not(None))),
                   survivor.c.merged_into_id.is_not(None),
                   m.merged_at < m.created_at))
    ), [m.id], limit)
    result.found(count, rows)
    return result
