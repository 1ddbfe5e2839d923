"""The points liability at a period end, and its roll-forward over the period.

Points outstanding are what the coalition (or, under the ``clearing`` money model, the
partners between themselves) will pay for when members spend them. At a moment ``t``:

* **cohorts**: points outstanding by origin partner and month earned (the lot's
  ``earned_at``; a transfer gives the receiver a new lot of the same origin, earned at the
  transfer). A point is outstanding from its lot's creation until it is redeemed, expires or
  is forfeited; a hold's reservation is still the member's until the hold is captured.
* **breakage estimate**: the share of a cohort's outstanding points that will never be
  redeemed, from the program's own history at the cohort's **age** (whole months from the
  month earned to the moment's month): over the *closed* cohorts (nothing outstanding any
  more, their month over) that still held points at that age, the points they lost by
  expiry or forfeiture from that age on ÷ the points they still held then (points that
  left by transfer or an earn reversal count as never in the cohort). At age 0 that is
  all points lapsed ÷ all points that stayed. Until ``min_cohorts`` closed cohorts held
  points at that age, the configured prior. Each rate is kept to six decimal places, half
  even.
* **unit cost** of a point of origin ``o`` in currency ``c``: the redeem rates in force at
  ``t`` of the partners ``b`` paid in ``c``, weighted by the points of ``o`` redeemed at
  ``b`` before ``t`` (net of burn reversals), to eight decimal places, half even. Under
  ``operator`` the coalition pays every redemption; under ``clearing`` a point spent where
  it was earned costs nothing between partners, so ``b = o`` weighs in at zero. An origin
  with no redemptions yet takes the mix of the whole program; a program with none at all
  takes the origin's own redeem rate.
* **expected cost** of a cohort: ``outstanding × (1 − breakage rate) × unit cost``, rounded
  once (``coalition.money.round_money``); the liability is their sum per currency.

The roll-forward of ``[start, end)`` per currency: the opening liability (the closing one
of a closed run ending at ``start``, as it was closed; otherwise measured at ``start``),
the points issued, redeemed and lapsed (expired or forfeited) in the period each valued at
the period end's estimate, and the change of estimate: the re-measurement of the opening
points at the new estimate (and the rounding of the lines to the cent), so that
``opening + issued − recognised_on_redemption − recognised_as_breakage + estimate_change =
closing`` exactly. A transfer moves points between cohorts of one origin, whose cost is the
same, so it adds nothing to the liability.

Every figure comes from two aggregate queries over the lots and the lot movements up to
``end`` (never a Python loop over entries); the rest is arithmetic on a few hundred sums.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import and_, func, select, text, union_all
from sqlalchemy.orm import Session, aliased

from coalition.ledger.models import Entry, Hold, Lot, LotMovement
from coalition.models import Partner, RateCard
from coalition.money import money_str, round_money
from settlement.compute import REDEMPTION_KINDS, WORK_MEM
from settlement.months import Months, month_of_moment
from settlement.netting import CLEARING, COALITION

RATE_PLACES = Decimal("0.000001")  # the breakage rate
COST_PLACES = Decimal("0.00000001")  # a point's unit cost (rates have at most 8 places)
LAPSE_KINDS = ("expiry", "forfeiture")


@dataclass(frozen=True)
class Prior:
    """The breakage rate assumed until ``min_cohorts`` cohorts are closed."""

    rate: Decimal
    min_cohorts: int


@dataclass
class Cohort:
    """Points of one origin earned in one month: outstanding at the period's start, and
    what happened to them in it."""

    before: int = 0
    issued: int = 0
    transferred: int = 0  # in (new lots) minus out
    redeemed: int = 0
    expired: int = 0
    forfeited: int = 0
    # for the breakage history: points that came into the cohort (lots created, less
    # earns taken back), went out by transfer, and lapsed, before start and in the period
    in_before: int = 0
    in_during: int = 0
    out_before: int = 0
    out_during: int = 0
    lapsed_before: int = 0
    #: by the month of the movement: points that left by redemption or lapse, and those
    #: lapsed, each [before start, in the period] (the breakage history by age)
    left: dict[str, list[int]] = field(default_factory=dict)
    lapsed: dict[str, list[int]] = field(default_factory=dict)

    def by_age(self, month: str, at_end: bool, age: int) -> tuple[int, int]:
        """(points left by redemption or lapse before ``age``, points lapsed from ``age``
        on), for the cohort earned in ``month``, at the period's start or end."""
        take = 2 if at_end else 1
        gone = sum(sum(v[:take]) for m, v in self.left.items() if _age(month, m) < age)
        late = sum(sum(v[:take]) for m, v in self.lapsed.items() if _age(month, m) >= age)
        return gone, late

    @property
    def after(self) -> int:
        return (self.before + self.issued + self.transferred - self.redeemed - self.expired
                - self.forfeited)

    def record(self, at_end: bool) -> tuple[int, int, int]:
        """(outstanding, points that stayed in the cohort, points lapsed) at the period's
        start or end."""
        if not at_end:
            return self.before, self.in_before - self.out_before, self.lapsed_before
        return (self.after,
                self.in_before + self.in_during - self.out_before - self.out_during,
                self.lapsed_before + self.expired + self.forfeited)


@dataclass
class History:
    cohorts: dict[tuple[int | None, str], Cohort] = field(default_factory=dict)
    #: (origin, redeemer) → points redeemed before start, before end
    mix: dict[tuple[int | None, int], list[int]] = field(default_factory=dict)


# --------------------------------------------------------------------------- queries


def _history(session: Session, start: datetime, end: datetime) -> History:
    """The lots and lot movements up to ``end``, summed by origin, month earned and kind,
    apart before ``start`` and in ``[start, end)``."""
    lot = Lot.__table__.c
    history = History()
    # every lot is made by an entry and earned when it is booked: the journal's first
    # booking (an indexed read) is the first month a cohort can have
    first = session.scalar(select(func.min(Entry.__table__.c.booked_at)))
    if first is None:
        return history
    months = Months(session, month_of_moment(first), end)

    def cohort(origin: int | None, month: Any) -> Cohort:
        key = (origin, months.name(month))
        return history.cohorts.setdefault(key, Cohort())

    month = months.of(lot.earned_at)
    for origin, earned, source, before, during in session.execute(
            select(lot.origin_partner_id, month, lot.source,
                   func.sum(lot.points).filter(lot.earned_at < start),
                   func.sum(lot.points).filter(lot.earned_at >= start))
            .where(lot.earned_at < end)
            .group_by(lot.origin_partner_id, month, lot.source)):
        c, before, during = cohort(origin, earned), int(before or 0), int(during or 0)
        c.before += before
        c.in_before, c.in_during = c.in_before + before, c.in_during + during
        if source == "transfer":
            c.transferred += during
        else:
            c.issued += during

    mv = LotMovement.__table__.c
    own = (select(mv.lot_id, mv.points, mv.entry_kind.label("kind"),
                  mv.entry_partner_id.label("partner"), mv.entry_booked_at.label("at"))
           .where(mv.entry_booked_at < end, mv.entry_kind != "hold"))
    # a hold's reservation counts once the hold is captured or voided (before end), as
    # that entry's; a hold still open at the end holds the member's points
    closing = aliased(Entry.__table__)
    hold = Hold.__table__
    held = (select(mv.lot_id, mv.points, closing.c.kind.label("kind"),
                   closing.c.partner_id.label("partner"), closing.c.booked_at.label("at"))
            .select_from(hold.join(LotMovement.__table__,
                                   and_(mv.entry_id == hold.c.entry_id,
                                        mv.entry_kind == "hold"))
                         .join(closing, and_(closing.c.id == hold.c.closed_by_entry_id,
                                             closing.c.booked_at < end))))
    moves = union_all(own, held).subquery()
    moved = months.of(moves.c.at)
    for origin, earned, kind, partner, at, before, during in session.execute(
            select(lot.origin_partner_id, month, moves.c.kind, moves.c.partner, moved,
                   func.sum(moves.c.points).filter(moves.c.at < start),
                   func.sum(moves.c.points).filter(moves.c.at >= start))
            .select_from(moves.join(Lot.__table__, lot.id == moves.c.lot_id))
            .group_by(lot.origin_partner_id, month, moves.c.kind, moves.c.partner, moved)):
        c, before, during = cohort(origin, earned), int(before or 0), int(during or 0)
        if kind not in ("transfer", "earn_reversal"):
            sums = c.left.setdefault(months.name(at), [0, 0])
            sums[0], sums[1] = sums[0] - before, sums[1] - during
            if kind in LAPSE_KINDS:
                sums = c.lapsed.setdefault(months.name(at), [0, 0])
                sums[0], sums[1] = sums[0] - before, sums[1] - during
        c.before += before
        if kind == "transfer":
            c.transferred += during
            c.out_before, c.out_during = c.out_before - before, c.out_during - during
        elif kind == "earn_reversal":
            c.issued += during  # an earn taken back was never issued
            c.in_before, c.in_during = c.in_before + before, c.in_during + during
        elif kind in LAPSE_KINDS:
            if kind == "expiry":
                c.expired -= during
            else:
                c.forfeited -= during
            c.lapsed_before -= before
        else:  # redemptions; a void's return and reservation cancel out
            c.redeemed -= during
        if kind in REDEMPTION_KINDS and partner is not None:
            sums = history.mix.setdefault((origin, partner), [0, 0])
            sums[0] -= before
            sums[1] -= before + during
    return history


# --------------------------------------------------------------------------- the estimate


def _age(earned: str, month: str) -> int:
    """Whole months from the month ``earned`` to ``month`` (both ``YYYY-MM``)."""
    return (int(month[:4]) * 12 + int(month[5:])) - (int(earned[:4]) * 12 + int(earned[5:]))


@dataclass(frozen=True)
class Rate:
    """The breakage rate for cohorts of one age, and how many closed cohorts it rests on
    (those that still held points at that age)."""

    rate: Decimal
    basis: str  # "history" or "prior"
    cohorts: int


@dataclass(frozen=True)
class Estimate:
    month: str  # the moment's month: a cohort's age is counted to it
    by_age: dict[int, Rate]
    closed_cohorts: int
    #: origin → [(currency, unit cost)]
    costs: dict[int | None, list[tuple[str, Decimal]]]

    def rate(self, earned: str) -> Decimal:
        """The breakage rate of the cohort earned in ``earned``."""
        return self.by_age[max(_age(earned, self.month), 0)].rate

    @property
    def breakage_rate(self) -> Decimal:
        """The rate at age 0: all points lapsed ÷ all points that stayed."""
        return self.by_age[0].rate


def _rate_at(cards: list[RateCard], moment: datetime) -> Decimal | None:
    rate = None
    for card in cards:  # by valid_from
        if card.valid_from < moment:
            rate = card.redeem_rate
    return rate


def _closed(month: str, at: datetime, outstanding: int, stayed: int) -> bool:
    """A cohort is closed when nothing of it is outstanding and its month is over."""
    return outstanding == 0 and stayed > 0 and month < f"{at.year:04d}-{at.month:02d}"


def _estimate(history: History, at: datetime, which: int, model: str, prior: Prior,
              partners: dict[int, Partner], cards: dict[int, list[RateCard]]) -> Estimate:
    """The estimate at ``at`` from the history before it (``which``: 0 at the period's
    start, 1 at its end)."""
    at_end = bool(which)
    now = month_of_moment(at)
    closed: list[tuple[str, Cohort, int]] = []
    for (_, month), c in history.cohorts.items():
        outstanding, stayed, _ = c.record(at_end=at_end)
        if _closed(month, at, outstanding, stayed):
            closed.append((month, c, stayed))
    by_age = {}
    for age in sorted({0} | {max(_age(month, now), 0) for _, month in history.cohorts}):
        held = lapsed = cohorts = 0
        for month, c, stayed in closed:
            gone, late = c.by_age(month, at_end, age)
            if stayed - gone > 0:
                cohorts, held, lapsed = cohorts + 1, held + stayed - gone, lapsed + late
        if cohorts >= prior.min_cohorts and held:
            rate, basis = Decimal(lapsed) / Decimal(held), "history"
        else:
            rate, basis = prior.rate, "prior"
        by_age[age] = Rate(rate.quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN), basis,
                           cohorts)

    redeem = {b: _rate_at(cards.get(b, []), at) for b in partners}
    weights: dict[int | None, dict[int, int]] = defaultdict(dict)
    program: dict[int, int] = defaultdict(int)
    for (origin, b), sums in history.mix.items():
        if sums[which] and redeem.get(b) is not None:
            weights[origin][b] = sums[which]
            program[b] += sums[which]

    def costs(origin: int | None) -> list[tuple[str, Decimal]]:
        mix = weights.get(origin) or program
        total = sum(mix.values())
        if total <= 0:
            own = redeem.get(origin) if origin is not None else None
            if origin is None or own is None:
                return []
            cost = Decimal(0) if model == CLEARING else own
            return [(partners[origin].currency, cost)]
        by_currency: dict[str, Decimal] = defaultdict(Decimal)
        for b, points in mix.items():
            rate = Decimal(0) if model == CLEARING and b == origin else redeem[b]
            assert rate is not None
            by_currency[partners[b].currency] += points * rate
        return [(c, (v / total).quantize(COST_PLACES, rounding=ROUND_HALF_EVEN))
                for c, v in sorted(by_currency.items())]

    origins = {origin for origin, _ in history.cohorts}
    return Estimate(now, by_age, len(closed), {o: costs(o) for o in origins})


# --------------------------------------------------------------------------- the document


def _code(partners: dict[int, Partner], origin: int | None) -> str:
    return partners[origin].code if origin is not None else COALITION


def liability(session: Session, start: datetime, end: datetime, model: str, prior: Prior,
              opening: dict[str, Decimal] | None = None) -> dict[str, Any]:
    """The liability at ``end`` with the roll-forward of ``[start, end)``; ``opening``:
    the closing liability per currency as reported for ``start`` (a closed run's), if any."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    partners = {p.id: p for p in session.scalars(select(Partner))}
    cards: dict[int, list[RateCard]] = defaultdict(list)
    for card in session.scalars(select(RateCard).order_by(RateCard.valid_from, RateCard.id)):
        cards[card.partner_id].append(card)
    history = _history(session, start, end)
    old = _estimate(history, start, 0, model, prior, partners, cards)
    new = _estimate(history, end, 1, model, prior, partners, cards)

    def value(points: int, origin: int | None, month: str, estimate: Estimate
              ) -> list[tuple[str, Decimal, Decimal]]:
        keep = 1 - estimate.rate(month)
        return [(currency, cost, points * keep * cost)
                for currency, cost in estimate.costs.get(origin, [])]

    cohorts, closed_cohorts = [], []
    closing: dict[str, Decimal] = defaultdict(Decimal)
    measured_opening: dict[str, Decimal] = defaultdict(Decimal)
    flows: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    points: dict[int | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (origin, month), c in sorted(history.cohorts.items(),
                                     key=lambda kv: (_code(partners, kv[0][0]), kv[0][1])):
        for key, n in (("opening", c.before), ("issued", c.issued), ("redeemed", c.redeemed),
                       ("expired", c.expired), ("forfeited", c.forfeited),
                       ("closing", c.after)):
            points[origin][key] += n
        outstanding, stayed, lapsed = c.record(at_end=True)
        if _closed(month, end, outstanding, stayed):
            closed_cohorts.append({
                "origin": _code(partners, origin), "earned_month": month,
                "points": stayed, "lapsed_points": lapsed,
                "breakage_rate": money_str((Decimal(lapsed) / stayed)
                                           .quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN))})
        for currency, _, amount in value(c.before, origin, month, old):
            measured_opening[currency] += round_money(amount, currency)
        for currency, cost, amount in value(c.after, origin, month, new):
            if c.after:
                expected = round_money(amount, currency)
                closing[currency] += expected
                cohorts.append({
                    "origin": _code(partners, origin), "earned_month": month,
                    "currency": currency, "outstanding_points": c.after,
                    "breakage_rate": money_str(new.rate(month)),
                    "unit_cost": money_str(cost), "expected_cost": money_str(expected)})
        for line, n in (("issued", c.issued), ("recognised_on_redemption", c.redeemed),
                        ("recognised_as_breakage", c.expired + c.forfeited)):
            for currency, _, amount in value(n, origin, month, new):
                flows[currency][line] += amount
        if c.after and not new.costs.get(origin):
            cohorts.append({
                "origin": _code(partners, origin), "earned_month": month, "currency": None,
                "outstanding_points": c.after, "breakage_rate": money_str(new.rate(month)),
                "unit_cost": None, "expected_cost": None})

    ages = {max(_age(month, new.month), 0) for (_, month), c in history.cohorts.items()
            if c.after}
    opening = opening if opening is not None else measured_opening
    rollforward = []
    for currency in sorted(set(closing) | set(opening) | set(flows)):
        lines = {k: round_money(flows[currency][k], currency)
                 for k in ("issued", "recognised_on_redemption", "recognised_as_breakage")}
        start_value = round_money(opening.get(currency, Decimal(0)), currency)
        end_value = round_money(closing.get(currency, Decimal(0)), currency)
        change = (end_value - start_value - lines["issued"]
                  + lines["recognised_on_redemption"] + lines["recognised_as_breakage"])
        rollforward.append({"currency": currency, "opening": money_str(start_value),
                            **{k: money_str(v) for k, v in lines.items()},
                            "estimate_change": money_str(change),
                            "closing": money_str(end_value)})
    return {
        "model": model,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "estimate": {
            "breakage_rate": money_str(new.breakage_rate), "basis": new.by_age[0].basis,
            "closed_cohorts": new.closed_cohorts,
            # the ages of the cohorts outstanding at the end, and age 0
            "by_age": [{"age": age, "breakage_rate": money_str(r.rate), "basis": r.basis,
                        "closed_cohorts": r.cohorts} for age, r in sorted(new.by_age.items())
                       if age == 0 or age in ages],
            "opening_breakage_rate": money_str(old.breakage_rate),
            "prior": money_str(prior.rate), "min_closed_cohorts": prior.min_cohorts,
            "unit_costs": [{"origin": _code(partners, o), "currency": c, "unit_cost":
                            money_str(cost), "opening_unit_cost": _opening_cost(old, o, c)}
                           for o in sorted(new.costs, key=lambda o: _code(partners, o))
                           for c, cost in new.costs[o]],
        },
        "rollforward": rollforward,
        "points": [{"origin": _code(partners, o), **dict(v)}
                   for o, v in sorted(points.items(), key=lambda kv: _code(partners, kv[0]))
                   if any(v.values())],
        "cohorts": cohorts,
        "closed_cohorts": closed_cohorts,
    }


def _opening_cost(old: Estimate, origin: int | None, currency: str) -> str | None:
    for c, cost in old.costs.get(origin, []):
        if c == currency:
            return money_str(cost)
    return None
