"""The figures of a settlement period, from the journal alone.

Aggregate queries, each one pass over the period's rows (never a Python loop over
entries), grouped by plain columns with a filtered sum per rate-card bucket:

1. postings of the period by account and partner, per bucket of the partners' rate cards
   in force at the entry's ``booked_at`` → statements (points issued and redeemed, and a
   funder's share of promotions, ``promotion:funded``, at its issue price) and the
   coalition's accounts (its own share of promotions among them);
2. lot movements of the period by the lot's origin partner and the redeeming entry (a
   hold's reservation counts when the hold is captured, so an open hold redeems nothing
   yet; holds are read apart) → the cross-partner matrix, breakage and forfeitures by
   origin, and the change in points outstanding by origin;
3. lots created before and in the period by origin → the rest of that change.

Money is computed in ``Decimal`` and rounded once per statement line (or matrix cell),
half-even to the currency's minor unit, so lines add up exactly to totals.

The run's money model decides who pays whom (``settlement.netting``); a partner's net is
the same under both, and its payment instructions in and out add up to it to the cent.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, Integer, and_, func, select, text
from sqlalchemy.orm import Session, aliased

from coalition.ledger.models import Entry, Hold, Lot, LotMovement, Posting
from coalition.models import Partner, RateCard
from coalition.money import money_str, round_money
from coalition.offers.earning import FUNDED
from settlement.netting import COALITION, OPERATOR, settle

REDEMPTION_KINDS = ("burn", "hold_capture", "donation", "burn_reversal", "adjustment")
LATE_LIMIT = 100


class Unpriced(Exception):
    """Some entries of the period fall before their partner's first rate card."""

    def __init__(self, partners: list[str]) -> None:
        super().__init__(f"no rate card in force for entries of: {', '.join(partners)}")
        self.partners = partners


@dataclass(frozen=True)
class Card:
    id: int
    partner_id: int
    valid_from: datetime
    issue_price: Decimal
    redeem_rate: Decimal


class Buckets:
    """The period cut at every rate card change of any partner, so that within one bucket
    each partner has one card in force: aggregates sum each bucket apart (a filter on a
    few boundaries) instead of joining every row to a range of cards."""

    def __init__(self, cards: dict[int, Card], start: datetime, end: datetime) -> None:
        self.starts = [start] + sorted({c.valid_from for c in cards.values()
                                        if start < c.valid_from < end})
        self.by_partner: dict[int, list[Card]] = defaultdict(list)
        for card in sorted(cards.values(), key=lambda c: c.valid_from):
            self.by_partner[card.partner_id].append(card)

    def conditions(self, column: Any) -> list[Any]:
        """One condition per bucket on a column already limited to the period (``None``:
        the whole period is one bucket)."""
        if len(self.starts) == 1:
            return [None]
        bounds = self.starts[1:]
        return ([column < bounds[0]]
                + [and_(column >= a, column < b) for a, b in zip(bounds, bounds[1:],
                                                                  strict=False)]
                + [column >= bounds[-1]])

    def card(self, partner_id: int | None, bucket: int | None) -> Card | None:
        if partner_id is None or bucket is None:
            return None
        moment = self.starts[bucket]
        current = None
        for card in self.by_partner.get(partner_id, ()):
            if card.valid_from <= moment:
                current = card
        return current


#: memory for the period's aggregates and hash joins, for this transaction only, so that a
#: large period is hashed in memory rather than spilled to disk in batches
WORK_MEM = "64MB"


def compute(session: Session, start: datetime, end: datetime,
            model: str = OPERATOR) -> dict[str, Any]:
    """The whole result document of a run over ``[start, end)`` under money ``model``."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    partners = {p.id: p for p in session.scalars(select(Partner))}
    cards = {c.id: Card(c.id, c.partner_id, c.valid_from, c.issue_price, c.redeem_rate)
             for c in session.scalars(select(RateCard))}

    buckets = Buckets(cards, start, end)
    postings, late_counts = _postings_by_card(session, buckets, start, end)
    movements = _movements_by_origin(session, start, end, buckets)
    created_before, created = _lots_created(session, start, end)
    base = _outstanding_before(session, start, created_before)

    unpriced = sorted({partners[pid].code for (account, pid, card) in postings
                       if pid is not None and card is None
                       and (account.startswith("partner:") or account == FUNDED)})
    unpriced += sorted({partners[b].code for (_, kind, b, card) in movements
                        if kind in REDEMPTION_KINDS and b is not None and card is None}
                       - set(unpriced))
    if unpriced:
        raise Unpriced(unpriced)

    late = _late(session, start, end) if any(late_counts.values()) else {}
    collected = _collected(session, start, end)
    statements = [_statement(partner, cards, postings,
                             {"count": late_counts.get(partner.id, 0),
                              "entries": late.get(partner.id, [])},
                             collected.get(partner.id))
                  for partner in sorted(partners.values(), key=lambda p: p.code)]
    cells, between_partners = _matrix(partners, cards, movements)
    settlement = settle(model, statements, between_partners)
    coalition = _coalition_report(partners, postings, movements, created, base, statements,
                                  collected)
    coalition["position"] = settlement.coalition
    return {
        "model": model,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "statements": settlement.statements,
        "matrix": {"cells": cells},
        "obligations": settlement.obligations,
        "positions": settlement.positions,
        "payments": settlement.payments,
        "coalition": coalition,
    }


# --------------------------------------------------------------------------- queries


def _postings_by_card(session: Session, buckets: Buckets, start: datetime, end: datetime
                      ) -> tuple[dict[tuple[str, int | None, int | None], int], dict[int, int]]:
    """Σ postings by (account, partner, card in force), and late entries per partner
    (booked in the period for an ``occurred_at`` before it), in one pass.

    The rate-card buckets and the late count are filtered aggregates over a grouping by
    account and partner alone: the database then knows the handful of groups to expect and
    aggregates in parallel, as it does for a bare ``GROUP BY``.
    """
    p, e = Posting.__table__.c, Entry.__table__.c
    by_bucket = _sums(p.points, buckets.conditions(e.booked_at))
    rows = session.execute(
        select(p.account, p.partner_id, func.count().filter(e.occurred_at < start),
               *by_bucket)
        .select_from(Posting.__table__.join(Entry.__table__, e.id == p.entry_id))
        .where(e.booked_at >= start, e.booked_at < end)
        .group_by(p.account, p.partner_id)
    ).all()
    sums: dict[tuple[str, int | None, int | None], int] = defaultdict(int)
    late: dict[int, int] = defaultdict(int)
    for account, partner, late_count, *points_by_bucket in rows:
        for b, points in enumerate(points_by_bucket):
            if points is None:  # nothing booked in this bucket
                continue
            card = buckets.card(partner, b)
            sums[(account, partner, card.id if card else None)] += int(points)
        if late_count and partner is not None and account.startswith("partner:"):
            late[partner] += int(late_count)  # one partner posting per late entry
    return dict(sums), dict(late)


def _movements_by_origin(session: Session, start: datetime, end: datetime,
                         buckets: Buckets | None = None,
                         ) -> dict[tuple[int | None, str, int | None, int | None], int]:
    """Σ lot movements by (origin, attributed kind, attributed partner, redeemer's card).

    A hold's reservation is attributed to the entry that closed the hold (capture or void)
    when that entry is booked before ``end``; until then it stays a reservation (kind
    ``hold``), so a past period reads the same before and after a later capture.

    Two queries: every other movement carries its entry's kind, partner and time, so it is
    aggregated from the movements alone (by plain columns and filtered sums, which the
    database estimates well and aggregates in parallel); a hold's movements are read from
    the holds, with the entry that closed each.
    """
    mv = LotMovement.__table__.c
    buckets = buckets or Buckets({}, start, end)
    own = session.execute(
        select(mv.origin_partner_id, mv.entry_kind, mv.entry_partner_id,
               *_sums(mv.points, buckets.conditions(mv.entry_booked_at)))
        .where(mv.entry_booked_at >= start, mv.entry_booked_at < end,
               mv.entry_kind != "hold")
        .group_by(mv.origin_partner_id, mv.entry_kind, mv.entry_partner_id)
    ).all()
    closing = aliased(Entry.__table__)
    hold = Hold.__table__
    kind = func.coalesce(closing.c.kind, mv.entry_kind)
    partner = func.coalesce(closing.c.partner_id, mv.entry_partner_id)
    booked = func.coalesce(closing.c.booked_at, mv.entry_booked_at)
    held = session.execute(
        select(mv.origin_partner_id, kind, partner,
               *_sums(mv.points, buckets.conditions(booked)))
        .select_from(
            hold.join(LotMovement.__table__, and_(mv.entry_id == hold.c.entry_id,
                                                  mv.entry_kind == "hold"))
            .outerjoin(closing, and_(closing.c.id == hold.c.closed_by_entry_id,
                                     closing.c.booked_at < end)))
        .where(mv.entry_booked_at < end, booked >= start, booked < end)
        .group_by(mv.origin_partner_id, kind, partner)
    ).all()
    result: dict[tuple[int | None, str, int | None, int | None], int] = defaultdict(int)
    for origin, k, b, *by_bucket in [*own, *held]:
        for bucket_index, points in enumerate(by_bucket):
            if points is None:
                continue
            card = buckets.card(b, bucket_index) if k in REDEMPTION_KINDS else None
            result[(origin, k, b, card.id if card else None)] += int(points)
    return dict(result)


def _sums(column: Any, conditions: list[Any]) -> list[Any]:
    """Σ ``column`` under each condition (``None``: every row)."""
    return [func.sum(column).filter(c) if c is not None else func.sum(column)
            for c in conditions]


def _lots_created(session: Session, start: datetime, end: datetime
                  ) -> tuple[dict[int | None, int], dict[int | None, int]]:
    """Points of the lots created before ``start`` and in ``[start, end)``, by origin, in
    one pass."""
    lot = Lot.__table__.c
    before, during = _sums(lot.points, [lot.earned_at < start, lot.earned_at >= start])
    rows = session.execute(
        select(lot.origin_partner_id, before, during)
        .where(lot.earned_at < end)
        .group_by(lot.origin_partner_id)
    ).all()
    return ({origin: int(b) for origin, b, _ in rows if b is not None},
            {origin: int(d) for origin, _, d in rows if d is not None})


def _outstanding_before(session: Session, start: datetime,
                        created: dict[int | None, int]) -> dict[int | None, int]:
    """Points outstanding (available, pending or held) by origin at ``start``, from the
    lots ``created`` before it."""
    before = datetime.min.replace(tzinfo=start.tzinfo)
    moved = _movements_by_origin(session, before, start)
    result: dict[int | None, int] = defaultdict(int)
    for origin, points in created.items():
        result[origin] += points
    for (origin, kind, _, _), points in moved.items():
        if kind != "hold":  # a reservation is still the member's points
            result[origin] += points
    return dict(result)


#: money sums exactly on SQLite too, where decimals are text: in ten-thousandths (a
#: membership price has at most four places), summed as integers
_SCALE = Decimal(10_000)


def _collected(session: Session, start: datetime, end: datetime) -> dict[int, Decimal]:
    """Money each partner collected for the coalition in the period: the prices of the
    paid memberships it sold (``membership`` entries carrying money), by partner."""
    e = Entry.__table__.c
    if session.get_bind().dialect.name == "postgresql":
        total: Any = func.sum(e.spend_amount)
    else:
        total = func.sum(func.cast(func.round(func.cast(e.spend_amount, Float) * 10_000),
                                   Integer))
    rows = session.execute(
        select(e.partner_id, total)
        .where(e.kind == "membership", e.partner_id.is_not(None), e.points == 0,
               e.booked_at >= start, e.booked_at < end)
        .group_by(e.partner_id)).all()
    scale = 1 if session.get_bind().dialect.name == "postgresql" else _SCALE
    return {partner: Decimal(amount) / scale for partner, amount in rows if amount}


def _late(session: Session, start: datetime, end: datetime) -> dict[int, list[dict[str, Any]]]:
    """The first late entries of each partner (only asked for when there are some)."""
    e = Entry.__table__.c
    rank = func.row_number().over(partition_by=e.partner_id, order_by=e.id).label("rank")
    late = (select(e.id, e.partner_id, e.kind, e.partner_txn_id, e.points, e.occurred_at,
                   e.booked_at, rank)
            .where(e.booked_at >= start, e.booked_at < end, e.occurred_at < start,
                   e.partner_id.is_not(None))
            .subquery())
    listed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in session.execute(select(late).where(late.c.rank <= LATE_LIMIT)
                             .order_by(late.c.partner_id, late.c.id)):
        listed[r.partner_id].append(
            {"id": r.id, "type": r.kind, "partner_txn_id": r.partner_txn_id,
             "points": r.points, "occurred_at": r.occurred_at.isoformat(),
             "booked_at": r.booked_at.isoformat()})
    return dict(listed)


# --------------------------------------------------------------------------- documents


def _statement(partner: Partner, cards: dict[int, Card],
               postings: dict[tuple[str, int | None, int | None], int],
               late: dict[str, Any], collected: Decimal | None = None) -> dict[str, Any]:
    """The partner's operator statement. Money it ``collected`` for the coalition (paid
    memberships it sold) is one more line it owes; the key and the line appear only when
    there is some, so the figures of a period without any read as they always did."""
    lines = []
    issued = redeemed = promoted = 0
    payable = receivable = Decimal(0)
    for (account, pid, card_id), points in sorted(
            postings.items(), key=lambda kv: (kv[0][0], cards[kv[0][2]].valid_from
                                              if kv[0][2] else datetime.min)):
        if pid != partner.id or card_id is None or not points:
            continue
        card = cards[card_id]
        if account == "partner:issued":
            points = -points  # issued accounts go negative as points are created
            amount = round_money(points * card.issue_price, partner.currency)
            issued, payable = issued + points, payable + amount
            kind, rate = "issued", card.issue_price
        elif account == "partner:redeemed":
            amount = round_money(points * card.redeem_rate, partner.currency)
            redeemed, receivable = redeemed + points, receivable + amount
            kind, rate = "redeemed", card.redeem_rate
        elif account == FUNDED:
            # the partner's share of promotions' points, paid for like points it issues
            points = -points
            amount = round_money(points * card.issue_price, partner.currency)
            promoted, payable = promoted + points, payable + amount
            kind, rate = "promotion", card.issue_price
        else:
            continue
        lines.append({"type": kind, "counterparty": COALITION, "points": points,
                      "rate": money_str(rate),
                      "rate_valid_from": card.valid_from.isoformat(),
                      "amount": money_str(amount)})
    owed = round_money(collected, partner.currency) if collected else Decimal(0)
    if owed:
        lines.append({"type": "collected", "counterparty": COALITION, "points": None,
                      "rate": None, "rate_valid_from": None, "amount": money_str(owed)})
    statement = {
        "partner": partner.code, "name": partner.name, "kind": partner.kind,
        "currency": partner.currency,
        "issued_points": issued, "redeemed_points": redeemed,
        "payable": money_str(payable), "receivable": money_str(receivable),
        **({"collected": money_str(owed)} if owed else {}),
        "net": money_str(receivable - payable - owed),
        "lines": lines,
        "late_entries": late,
    }
    if promoted:  # only then: a period without promotions reads (and digests) as before
        statement["promotion_points"] = promoted
    return statement


def _matrix(partners: dict[int, Partner], cards: dict[int, Card],
            movements: dict[tuple[int | None, str, int | None, int | None], int]
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    points: dict[tuple[str, str], int] = defaultdict(int)
    value: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (origin, kind, redeemer, card_id), moved in movements.items():
        if kind not in REDEMPTION_KINDS or redeemer is None or card_id is None:
            continue
        a = partners[origin].code if origin is not None else COALITION
        b = partners[redeemer].code
        redeemed = -moved  # points taken from lots are negative movements
        points[(a, b)] += redeemed
        value[(a, b)] += redeemed * cards[card_id].redeem_rate
    cells = [{"origin": a, "redeemed_at": b, "points": n}
             for (a, b), n in sorted(points.items()) if n]
    by_code = {p.code: p for p in partners.values()}
    obligations = []
    for (a, b), exact in sorted(value.items()):
        if a == b:
            continue  # points spent where they were earned settle with the coalition only
        currency = by_code[b].currency
        amount = round_money(exact, currency)
        if not points[(a, b)] and not amount:
            continue  # a burn and its reversal at one rate: nothing is owed
        # (a burn and its reversal at different rates net to no points but to money)
        obligations.append({"from": a, "to": b, "points": points[(a, b)],
                            "amount": money_str(amount), "currency": currency})
    return cells, obligations


def _coalition_report(
    partners: dict[int, Partner],
    postings: dict[tuple[str, int | None, int | None], int],
    movements: dict[tuple[int | None, str, int | None, int | None], int],
    created: dict[int | None, int],
    base: dict[int | None, int],
    statements: list[dict[str, Any]],
    collected: dict[int, Decimal] | None = None,
) -> dict[str, Any]:
    def code(origin: int | None) -> str:
        return partners[origin].code if origin is not None else COALITION

    def account_total(account: str) -> int:
        return sum(n for (acc, _, _), n in postings.items() if acc == account)

    # the coalition's own share of promotions' points: it bears their cost, as of bonuses
    coalition_share = sum(n for (acc, partner, _), n in postings.items()
                          if acc == FUNDED and partner is None)

    by_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    outstanding: dict[int | None, int] = defaultdict(int, base)
    for origin, points in created.items():
        outstanding[origin] += points
    for (origin, kind, _, _), moved in movements.items():
        if kind in ("expiry", "forfeiture"):
            by_kind[kind][code(origin)] -= moved
        if kind != "hold":
            outstanding[origin] += moved
    margins: dict[str, Decimal] = defaultdict(Decimal)
    for s in statements:
        margins[s["currency"]] += Decimal(s["payable"]) - Decimal(s["receivable"])
    # paid memberships (only when there are some, so that older periods read the same):
    # points spent on them (redeemed by the coalition) and money partners collected
    memberships: dict[str, Any] = {}
    spent = account_total("coalition:membership")
    sold: dict[str, Decimal] = defaultdict(Decimal)
    for s in statements:
        if "collected" in s:
            sold[s["currency"]] += Decimal(s["collected"])
    if spent or sold:
        memberships = {"memberships": {
            "points": spent,
            "collected": [{"currency": c, "amount": money_str(a)}
                          for c, a in sorted(sold.items())]}}
    return {
        **memberships,
        "breakage": {"points": account_total("coalition:breakage"),
                     "by_origin": _listing(by_kind["expiry"])},
        "forfeited": {"points": account_total("coalition:forfeited"),
                      "by_origin": _listing(by_kind["forfeiture"])},
        "bonuses": {"points": -account_total("coalition:funded")},
        **({"promotions": {"points": -coalition_share}} if coalition_share else {}),
        "outstanding": {"points": sum(outstanding.values()),
                        "by_origin": _listing({code(o): n for o, n in outstanding.items()})},
        "margin": [{"currency": c, "amount": money_str(m)} for c, m in sorted(margins.items())],
    }


def _listing(values: dict[str, int]) -> list[dict[str, Any]]:
    return [{"partner": k, "points": v} for k, v in sorted(values.items()) if v]


