"""Program analytics: what the program did, per month and per partner, from the journal.

For each month of ``[first, last]`` (booking time, UTC) and each partner:

* members **enrolled** (by the partner that enrolled them), **active** (an earn, burn,
  capture or donation at the partner in the month; the month's total counts each member
  once), **closed** (by the partner that enrolled them), **merged** (absorbed into another
  member, by the moment of the merge; merges from before that moment was kept count in
  no month);
* points **issued** (earns less earn reversals at the partner: its ``partner:issued``
  account, and the promotion points on its earns less their part of the reversals,
  ``promotion:funded``, whoever funds them, as the liability counts them in the earning
  partner's cohorts; coalition-funded bonuses under ``coalition``), **redeemed** at the partner
  (burns, captures and donations less burn reversals: ``partner:redeemed``; points spent
  on paid memberships under ``coalition``, which redeems them), **donated**
  (the donations among them, at a charity), **expired**, **forfeited** and **transferred**
  (by the partner where the points were earned, from the lot movements);
* the **redemption rate**: redeemed ÷ issued, to four decimal places (half even), none
  when nothing was issued;
* and, for the whole program, the members in each **tier** at each month end;
* the **top rewards** of each month: the rewards most redeemed (vouchers issued, and their
  points), at most :data:`TOP_REWARDS` a month, by the partner that fulfils them.

Each figure is one aggregate query by partner with a filtered sum per month (never a
Python loop over entries).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, text, true, union_all
from sqlalchemy.orm import Session

from coalition.catalog.models import Reward, Voucher
from coalition.db import alongside, read, utcnow
from coalition.errors import InvalidRequest, NotFound
from coalition.ledger import tiers as tier_rule
from coalition.ledger.models import Entry, LotMovement, Member, Posting
from coalition.models import Partner
from coalition.program.service import Rules, rules_at
from settlement.compute import WORK_MEM
from settlement.months import Months, month_start, next_month
from settlement.netting import COALITION

FIGURES = ("enrolled", "active", "closed", "merged", "issued", "redeemed", "expired",
           "forfeited", "transferred", "donated")
ACTIVE_KINDS = ("earn", "burn", "hold_capture", "donation")
RATE_PLACES = Decimal("0.0001")
PROMOTION_FUNDED = "promotion:funded"
#: the longest span one request may ask for
MAX_MONTHS = 120
#: rewards listed per month in the top rewards
TOP_REWARDS = 10
#: PostgreSQL settings of the statement that groups the entries by partner and member:
#: memory to hash a group per member without spilling to disk (a few hundred bytes each);
#: one process, since parallel workers each meet nearly every member and leave the leader
#: as many groups to combine as there were rows; and the groupings joined to the members by
#: hashing, not one index probe per row (the planner cannot estimate a grouping's size)
GROUPING_SETTINGS = {"work_mem": "256MB", "max_parallel_workers_per_gather": "0",
                     "enable_nestloop": "off"}


def months_between(first: str, last: str) -> list[str]:
    months, month = [], first
    while month <= last:
        months.append(month)
        month = next_month(month)
    return months


def redemption_rate(redeemed: int, issued: int) -> str | None:
    if issued <= 0:
        return None
    return format((Decimal(redeemed) / Decimal(issued))
                  .quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN), "f")


def analytics(session: Session, first: str, last: str,
              partner: str | None = None) -> dict[str, Any]:
    """The figures of the months ``first`` … ``last`` (``YYYY-MM``), for every partner or
    the one named; ``session`` a :func:`~coalition.db.read` with ``snapshot``, so that
    every figure is of the same moment."""
    start, end = month_start(first), month_start(next_month(last))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    codes = {p.id: p.code for p in session.scalars(select(Partner))}
    names = months_between(first, last)
    bounds = [month_start(m) for m in names[1:]]
    rows: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIGURES, 0))

    def in_month(column: Any) -> list[Any]:
        """One condition per month on a column already limited to the span: grouping by
        plain columns with a filtered aggregate per month lets the database expect a
        handful of groups and aggregate in parallel, as it does for a bare GROUP BY."""
        if not bounds:
            return [true()]
        return ([column < bounds[0]]
                + [and_(column >= a, column < b) for a, b in zip(bounds, bounds[1:],
                                                                  strict=False)]
                + [column >= bounds[-1]])

    def add(partner_id: int | None, figure: str, values: Any) -> None:
        code = codes[partner_id] if partner_id is not None else COALITION
        for month, value in zip(names, values, strict=True):
            if value:
                rows[(month, code)][figure] += int(value)

    n = len(names)
    p, e = Posting.__table__.c, Entry.__table__.c
    each = in_month(e.booked_at)
    # one pass over the entries: each (partner, member) once, with its active bookings
    # per month and (for the tiers) its own qualifying points at each month end; then the
    # active members counted per partner, and per month over the members (each once,
    # wherever active), and the qualifying points summed per member
    ends = [month_start(next_month(m)) for m in names]
    with_tiers = partner is None
    active_kind = e.kind.in_(ACTIVE_KINDS)
    spans = list(zip([start, *bounds], [*bounds, end], strict=True))
    # each entry's kind worked out once (OFFSET 0 keeps the database from folding these
    # columns back into every monthly aggregate, which would test the kind again in each)
    read = (select(e.partner_id, e.member_id, e.booked_at, active_kind.label("active"),
                   tier_rule.QUALIFYING.label("qualifying"))
            .where(or_(and_(active_kind, e.booked_at >= start, e.booked_at < end),
                       *([and_(e.kind.in_(tier_rule.QUALIFYING_KINDS),
                               tier_rule.qualifying_span(ends))] if with_tiers else [])))
            .offset(0).subquery("read"))
    activity = (select(read.c.partner_id, read.c.member_id,
                       *[func.count().filter(read.c.active, read.c.booked_at >= a,
                                             read.c.booked_at < b).label(f"m{k}")
                         for k, (a, b) in enumerate(spans)],
                       *(tier_rule.qualifying_sums(ends, rows=read) if with_tiers else []))
                .group_by(read.c.partner_id, read.c.member_id).cte("activity"))
    counts = [activity.c[f"m{k}"] for k in range(n)]
    qualifying = [activity.c[f"q{k}"] for k in range(n)] if with_tiers else []
    # each member once: its active bookings and own qualifying points per month
    members = (select(activity.c.member_id, *[func.sum(c).label(c.name)
                                              for c in [*counts, *qualifying]])
               .group_by(activity.c.member_id).cte("members"))
    # one statement, so the entries are read once: (0, partner, active per month) by
    # partner, (1, -, active per month) over the members, then the tiers' rows
    queries = [select(literal(0), activity.c.partner_id,
                      *[func.count().filter(c > 0) for c in counts])
               .group_by(activity.c.partner_id),
               select(literal(1), literal(None),
                      *[func.count().filter(members.c[f"m{k}"] > 0) for k in range(n)])]
    if with_tiers:
        rules, tier_queries = _tier_queries(session, ends, select(
            members.c.member_id, *[members.c[f"q{k}"] for k in range(n)]))
        queries += tier_queries
    # the grouping of the entries runs on a connection of its own, in this session's
    # snapshot, while this one reads the postings, the lot movements and the members
    with alongside(session, union_all(*queries), GROUPING_SETTINGS) as grouping:
        # a promotion's points are issued by the earning partner (the entry's, the lot's
        # origin), whoever funds them: the liability counts them in that partner's cohorts
        by = case((p.account == PROMOTION_FUNDED, e.partner_id), else_=p.partner_id)
        for account, pid, *sums in session.execute(
                select(p.account, by, *[func.sum(p.points).filter(c) for c in each],
                       *[func.sum(p.points).filter(and_(c, e.kind == "donation")) for c in each])
                .select_from(Posting.__table__.join(Entry.__table__, e.id == p.entry_id))
                .where(e.booked_at >= start, e.booked_at < end,
                       p.account.in_(("partner:issued", "partner:redeemed", "coalition:funded",
                                      PROMOTION_FUNDED, "coalition:membership")))
                .group_by(p.account, by)):
            if account == "partner:redeemed":
                add(pid, "redeemed", sums[:n])
                add(pid, "donated", sums[n:])
            elif account == "coalition:membership":  # paid memberships: the coalition redeems
                add(None, "redeemed", sums[:n])
            else:  # issued and funded accounts go negative as points are created
                add(pid, "issued", [-(v or 0) for v in sums[:n]])

        mv = LotMovement.__table__.c
        for origin, kind, *sums in session.execute(
                select(mv.origin_partner_id, mv.entry_kind,
                       *[func.sum(mv.points).filter(c) for c in in_month(mv.entry_booked_at)])
                .where(mv.entry_booked_at >= start, mv.entry_booked_at < end,
                       mv.entry_kind.in_(("expiry", "forfeiture", "transfer")))
                .group_by(mv.origin_partner_id, mv.entry_kind)):
            add(origin, {"expiry": "expired", "forfeiture": "forfeited",
                         "transfer": "transferred"}[kind], [-(v or 0) for v in sums])

        mb = Member.__table__.c
        for column, figure, condition in ((mb.created_at, "enrolled", true()),
                                          (mb.closed_at, "closed", mb.status == "closed"),
                                          (mb.merged_at, "merged", true())):
            for pid, *values in session.execute(
                    select(mb.enrolled_by, *[func.count().filter(c) for c in in_month(column)])
                    .where(column >= start, column < end, condition)
                    .group_by(mb.enrolled_by)):
                add(pid, figure, values)

        grouped = grouping()

    totals_active: dict[str, int] = {}
    found: Any
    tier_rows = []
    for found in grouped:
        tag, pid, values = found[0], found[1], list(found[2:])
        if tag == 0:
            add(pid, "active", values)
        elif tag == 1:
            totals_active = {m: int(v or 0) for m, v in zip(names, values, strict=True)}
        else:
            tier_rows.append((tag, pid, values))
    tiers = _tiers(names, rules, tier_rows) if with_tiers else []

    def row(month: str, code: str, figures: dict[str, int]) -> dict[str, Any]:
        return {"month": month, "partner": code, **figures,
                "redemption_rate": redemption_rate(figures["redeemed"], figures["issued"])}

    listed = [row(m, code, figures) for (m, code), figures in sorted(rows.items())
              if partner is None or code == partner]
    totals = []
    for m in names:
        figures = dict.fromkeys(FIGURES, 0)
        for r in listed:
            if r["month"] == m:
                for f in FIGURES:
                    figures[f] += r[f]
        if partner is None:
            figures["active"] = totals_active.get(m, 0)
        totals.append(row(m, partner or "all", figures))
    return {"from": first, "to": last, "partner": partner, "months": listed,
            "totals": totals, "tiers": tiers}


def _tier_queries(session: Session, ends: list[datetime], own: Any
                  ) -> tuple[list[Rules], list[Any]]:
    """The rules in force at each month end, and the queries for the members per tier
    then, by the tier rule (``coalition.ledger.tiers``): the members enrolled by then,
    neither closed nor merged into another by then (a member merged later counts as
    itself, with its own points; one merged before the moment of merges was kept, as
    merged). ``own``: each member's own qualifying points at each month end (``member_id``,
    ``q0`` …).

    Rows: ``(2, members, tier index at each month end or -1 where not a member then)``
    for the members with qualifying entries, grouped by their tiers (a few combinations),
    and ``(3, -, members at each month end)``."""
    per_member = tier_rule.qualifying_by_member(ends, own=own).subquery()
    mb = Member.__table__.c
    rules = [rules_at(session, end) for end in ends]

    def exists_at(end: datetime) -> Any:
        return and_(mb.created_at <= end, or_(mb.closed_at.is_(None), mb.closed_at > end),
                    or_(mb.status != "merged", mb.merged_at > end))

    ranks = [case((exists_at(end), tier_rule.reached_rank_sql(
        r, func.coalesce(per_member.c[f"q{k}"], 0))), else_=literal(-1)).label(f"r{k}")
        for k, (end, r) in enumerate(zip(ends, rules, strict=True))]
    return rules, [
        select(literal(2), func.count(), *ranks)
        .select_from(per_member.join(Member.__table__, mb.id == per_member.c.member_id))
        .group_by(*ranks),
        select(literal(3), literal(None), *[func.count().filter(exists_at(end))
                                            for end in ends])]


def _tiers(names: list[str], rules: list[Rules],
           found: list[tuple[int, Any, list[Any]]]) -> list[dict[str, Any]]:
    """Members per tier at each month end from the rows of :func:`_tier_queries` (the
    first tier holds the members above none)."""
    everyone = next(values for tag, _, values in found if tag == 3)
    result = []
    for k, (month, r) in enumerate(zip(names, rules, strict=True)):
        tiers = r["tiers"]
        higher = [sum(int(members) for tag, members, ranks in found
                      if tag == 2 and ranks[k] == j) for j in range(1, len(tiers))]
        result.append({"month": month, "tier": tiers[0]["code"],
                       "members": int(everyone[k]) - sum(higher)})
        result += [{"month": month, "tier": t["code"], "members": c}
                   for t, c in zip(tiers[1:], higher, strict=True)]
    return result


def default_span(now: datetime, months: int = 12) -> tuple[str, str]:
    """The last ``months`` months up to ``now``'s."""
    last = f"{now.year:04d}-{now.month:02d}"
    index = now.year * 12 + now.month - 1 - (months - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}", last


def program_analytics(first: str | None, last: str | None,
                      partner: str | None = None) -> dict[str, Any]:
    """The analytics of ``[first, last]`` (default: the last twelve months), checked."""
    default_first, default_last = default_span(utcnow())
    first, last = first or default_first, last or default_last
    errors: dict[str, list[str]] = {}
    for name, value in (("from", first), ("to", last)):
        try:
            month_start(value)
        except ValueError:
            errors[name] = ["Give a month as YYYY-MM."]
    if not errors and first > last:
        errors["to"] = ["Must not be before from."]
    if not errors and len(months_between(first, last)) > MAX_MONTHS:
        errors["to"] = [f"At most {MAX_MONTHS} months at once."]
    if errors:
        raise InvalidRequest("Check the months asked for.", errors=errors)
    with read(snapshot=True) as session:
        if partner is not None and partner != COALITION and session.scalar(
                select(Partner.id).where(Partner.code == partner)) is None:
            raise NotFound(f"No partner {partner}.")
        doc = analytics(session, first, last, partner)
        doc["top_rewards"] = top_rewards(session, first, last, partner)
        return doc


def top_rewards(session: Session, first: str, last: str,
                partner: str | None = None) -> list[dict[str, Any]]:
    """The rewards most redeemed in each month ``first`` … ``last`` (vouchers issued, and
    their points), most redemptions first, at most :data:`TOP_REWARDS` a month; for one
    partner, the rewards it fulfils. One aggregate query over the vouchers."""
    start, end = month_start(first), month_start(next_month(last))
    months = Months(session, first, end)
    v, r, pt = Voucher.__table__.c, Reward.__table__.c, Partner.__table__.c
    month = months.of(v.issued_at).label("month")
    query = (select(month, v.reward_id, r.name, pt.code, func.count().label("redemptions"),
                    func.sum(v.points).label("points"))
             .select_from(Voucher.__table__.join(Reward.__table__, r.id == v.reward_id)
                          .join(Partner.__table__, pt.id == v.partner_id))
             .where(v.issued_at >= start, v.issued_at < end)
             .group_by(month, v.reward_id, r.name, pt.code))
    if partner is not None:
        query = query.where(pt.code == partner)
    per_month: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in session.execute(query):
        per_month[months.name(row.month)].append(
            {"month": months.name(row.month), "reward_id": row.reward_id,
             "reward": row.name, "partner": row.code, "redemptions": int(row.redemptions),
             "points": int(row.points)})
    return [item for name in sorted(per_month) for item in sorted(
        per_month[name], key=lambda i: (-i["redemptions"], -i["points"], i["reward_id"])
    )[:TOP_REWARDS]]


def as_csv(doc: dict[str, Any]) -> str:
    """The rows, then the month totals (partner ``all``), one line each."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = ["month", "partner", *FIGURES, "redemption_rate"]
    writer.writerow(columns)
    for r in [*doc["months"], *doc["totals"]]:
        writer.writerow(["" if r[c] is None else r[c] for c in columns])
    return out.getvalue()
