"""Promotions on an earn: which of those in force apply, how many points each gives within
what is left of its cap, the funders' postings, and the lines of the answer.

The earn reads the latest promotion's id and creation time in its first statement
(:func:`version_columns`); the promotions themselves are read once per worker and version
(:func:`promotions_of_version`), so an earn with no promotion in force costs no statement
more. Each promotion that applies takes its points under the guard of its own row
(:func:`take_from_cap`): one conditional ``UPDATE`` while the cap has room, so concurrent
earns never issue past it; the last earns get what is left, then nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, bindparam, insert, select, update
from sqlalchemy.orm import Session

from coalition.ledger.models import Posting
from coalition.money import floor_points
from coalition.offers.models import Offer, OfferActivation, OfferAward, OfferFunder, OfferPartner

#: the account a funder's share of promotion points is issued from (the partner that
#: funds it, or none: the coalition)
FUNDED = "promotion:funded"

_O = Offer.__table__.c
_A = OfferActivation.__table__.c


@dataclass(frozen=True)
class Promotion:
    """A promotion as an earn decides on it."""

    id: int
    name: str
    rule: str
    multiplier: Decimal | None
    bonus_points: int | None
    valid_from: datetime
    valid_to: datetime
    tiers: frozenset[str] | None
    new_member_days: int | None
    opt_in: bool
    partners: frozenset[int]
    #: ``(partner id or None for the coalition, share)``, in the order they are split
    funders: tuple[tuple[int | None, Decimal], ...]

    def targets(self, tier: str, enrolled_at: datetime, now: datetime) -> bool:
        """Whether a member of ``tier``, enrolled at ``enrolled_at``, is one it is for."""
        if self.tiers is not None and tier not in self.tiers:
            return False
        return (self.new_member_days is None
                or now - enrolled_at <= timedelta(days=self.new_member_days))

    def applies(self, partner_id: int, tier: str, enrolled_at: datetime,
                now: datetime) -> bool:
        return (partner_id in self.partners and self.valid_from <= now < self.valid_to
                and self.targets(tier, enrolled_at, now))

    def points_for(self, base: int) -> int:
        """The points it adds to an earn of ``base`` points (before its cap)."""
        if self.rule == "multiplier":
            assert self.multiplier is not None
            return floor_points(base * (self.multiplier - 1))
        return self.bonus_points or 0


def version_columns() -> list[Any]:
    """The latest promotion's id and creation time, as columns the earn's first read
    carries: with :func:`promotions_of_version`, the promotions without a round trip."""
    latest = select(_O.id).order_by(_O.id.desc()).limit(1).scalar_subquery()
    created = select(_O.created_at).order_by(_O.id.desc()).limit(1).scalar_subquery()
    return [latest.label("offers_version"), created.label("offers_created_at")]


_loaded: dict[int, tuple[datetime, tuple[Promotion, ...]]] = {}


def load_promotions(session: Session) -> tuple[Promotion, ...]:
    """Every promotion with its partners and funders (three reads)."""
    partners: dict[int, set[int]] = {}
    for offer_id, partner_id in session.execute(
            select(OfferPartner.offer_id, OfferPartner.partner_id)):
        partners.setdefault(offer_id, set()).add(partner_id)
    funders: dict[int, list[tuple[int | None, Decimal]]] = {}
    for offer_id, funder_id, share in session.execute(
            select(OfferFunder.offer_id, OfferFunder.partner_id, OfferFunder.share)
            .order_by(OfferFunder.offer_id, OfferFunder.position)):
        funders.setdefault(offer_id, []).append((funder_id, share))
    return tuple(
        Promotion(o.id, o.name, o.rule, o.multiplier, o.bonus_points, o.valid_from,
                  o.valid_to, frozenset(o.tiers) if o.tiers is not None else None,
                  o.new_member_days, o.opt_in, frozenset(partners.get(o.id, ())),
                  tuple(funders.get(o.id, ())))
        for o in session.scalars(select(Offer).order_by(Offer.id)))


def promotions_of_version(session: Session, version: int | None,
                          created_at: datetime | None) -> tuple[Promotion, ...]:
    """The promotions as of the latest one, ``version``, read once per worker (again if
    its creation time differs: a database emptied and filled anew)."""
    if version is None:
        return ()
    cached = _loaded.get(version)
    if cached is None or cached[0] != created_at:
        assert created_at is not None
        cached = (created_at, load_promotions(session))
        _loaded.clear()  # only the latest version is ever asked for again
        _loaded[version] = cached
    return cached[1]


_TAKE_ALL = (update(Offer.__table__)
             .where(_O.id == bindparam("offer"),
                    _O.issued_points + bindparam("points") <= _O.cap_points)
             .values(issued_points=_O.issued_points + bindparam("points"))
             .returning(_O.id))
_LEFT = (select(_O.cap_points - _O.issued_points).where(_O.id == bindparam("offer"))
         .with_for_update())
_TAKE = (update(Offer.__table__).where(_O.id == bindparam("offer"))
         .values(issued_points=_O.issued_points + bindparam("points")))


def take_from_cap(session: Session, offer_id: int, points: int) -> int:
    """Count ``points`` against the promotion's cap, under its row's lock until the
    transaction ends; as many as are left when fewer are (0: the cap is reached)."""
    if session.execute(_TAKE_ALL, {"offer": offer_id, "points": points}).first():
        return points
    left = session.execute(_LEFT, {"offer": offer_id}).scalar_one()
    taken = max(0, min(points, int(left)))
    if taken:
        session.execute(_TAKE, {"offer": offer_id, "points": taken})
    return taken


def split(points: int, funders: Sequence[tuple[int | None, Decimal]]
          ) -> list[tuple[int | None, int]]:
    """``points`` shared among ``funders`` by cumulative shares rounded down: each funder
    gets ``⌊points × (its share and those before)⌋`` less what those before got, so the
    parts add up to exactly ``points`` (the shares add up to 1) and none is negative."""
    parts: list[tuple[int | None, int]] = []
    cumulative, done = Decimal(0), 0
    for partner_id, share in funders:
        cumulative += share
        upto = floor_points(points * cumulative)
        parts.append((partner_id, upto - done))
        done = upto
    assert done == points, (points, funders)
    return parts


@dataclass(frozen=True)
class Award:
    promotion: Promotion
    points: int


@dataclass(frozen=True)
class Applied:
    """What the promotions add to one earn."""

    awards: tuple[Award, ...] = ()

    @property
    def points(self) -> int:
        return sum(a.points for a in self.awards)

    def postings(self) -> list[tuple[str, int | None, int | None, int]]:
        """The funders' postings: each funder's share of each award, one posting per
        funder."""
        by_funder: dict[int | None, int] = {}
        for award in self.awards:
            for partner_id, part in split(award.points, award.promotion.funders):
                by_funder[partner_id] = by_funder.get(partner_id, 0) + part
        return [(FUNDED, None, partner_id, -points)
                for partner_id, points in by_funder.items() if points]

    def record(self, session: Session, entry_id: int) -> None:
        """Write the awards of the entry just booked (none: no statement)."""
        if self.awards:
            session.execute(insert(OfferAward.__table__), [
                {"entry_id": entry_id, "offer_id": a.promotion.id, "points": a.points}
                for a in self.awards])

    def lines(self, base: int) -> list[dict[str, Any]]:
        return earn_lines(base, [(a.promotion.id, a.promotion.name, a.points)
                                 for a in self.awards])


def earn_lines(base: int, awards: Sequence[tuple[int, str, int]]) -> list[dict[str, Any]]:
    """The lines of an earn's answer: its base points, then each promotion's."""
    return [{"kind": "base", "points": base},
            *[{"kind": "promotion", "offer_id": offer_id, "name": name, "points": points}
              for offer_id, name, points in awards]]


_ACTIVATED = (select(_A.offer_id)
              .where(_A.member_id == bindparam("member"),
                     _A.offer_id.in_(bindparam("offers", expanding=True))))


def apply(session: Session, promotions: Sequence[Promotion], *, partner_id: int,
          member_id: int, tier: str, enrolled_at: datetime, base: int,
          now: datetime) -> Applied:
    """The promotions in force that apply to an earn of ``base`` points at ``partner_id``
    by this member, each within its cap (no statement when none applies; one more read
    when an opt-in one does, for the member's activations)."""
    candidates = [p for p in promotions if p.applies(partner_id, tier, enrolled_at, now)]
    if not candidates:
        return Applied()
    opt_in = [p.id for p in candidates if p.opt_in]
    activated = set(session.scalars(_ACTIVATED, {"member": member_id, "offers": opt_in})
                    ) if opt_in else set()
    awards = []
    for promotion in candidates:  # by id: cap rows are always locked in one order
        if promotion.opt_in and promotion.id not in activated:
            continue
        wanted = promotion.points_for(base)
        if wanted < 1:
            continue
        taken = take_from_cap(session, promotion.id, wanted)
        if taken:
            awards.append(Award(promotion, taken))
    return Applied(tuple(awards))


_P = Posting.__table__.c
_ISSUING = (select(_P.account, _P.partner_id, -_P.points)
            .where(_P.entry_id == bindparam("entry"),
                   _P.account.in_(("partner:issued", FUNDED)))
            .order_by(_P.id))


def reversal_postings(session: Session, earn_id: int, earn_points: int, done: int,
                      points: int) -> list[tuple[str, int | None, int | None, int]]:
    """The postings that take back ``points`` more of an earn of which ``done`` were
    reversed already: its partner's own points and each funder's share of its promotions
    in proportion, so that the reversals of a whole earn give back exactly what each one
    issued. The parts, in the order they were posted, are cut at the cumulative points
    ``⌊issued so far × reversed / earned⌋``: each part's reversed total stays between 0
    and what it issued, and equals it once the earn is reversed whole."""
    parts = session.execute(_ISSUING, {"entry": earn_id}).all()

    def upto(reversed_points: int) -> list[int]:
        cut, before, issued = [], 0, 0
        for _, _, amount in parts:
            issued += amount
            now = issued * reversed_points // earn_points
            cut.append(now - before)
            before = now
        return cut

    was, will = upto(done), upto(done + points)
    return [(account, None, partner_id, after - before)
            for (account, partner_id, _), before, after in zip(parts, was, will, strict=True)]


_W = OfferAward.__table__.c
#: a reversal of a promoted earn gives each of its promotions the room under the cap of
#: its award's part, cut as the postings are: ``⌊award × reversed / earned⌋`` so far
_EARNED = bindparam("earned", type_=Integer)
_GIVE_BACK = (
    update(Offer.__table__)
    .where(_O.id == _W.offer_id, _W.entry_id == bindparam("earn"))
    .values(issued_points=_O.issued_points
            - (_W.points * bindparam("after", type_=Integer) // _EARNED
               - _W.points * bindparam("before", type_=Integer) // _EARNED)))


def give_back(session: Session, earn_id: int, earn_points: int, done: int,
              points: int) -> None:
    """Count a promotion's points net of reversals: the reversal of ``points`` more of an
    earn of which ``done`` were reversed already lowers each of its promotions' issued
    points by its award's part, in one statement (the offer rows' locks, as an earn's)."""
    session.execute(_GIVE_BACK, {"earn": earn_id, "earned": earn_points, "before": done,
                                 "after": done + points})


def awards_of(session: Session, entry_id: int) -> list[tuple[int, str, int]]:
    """The promotions' points of a booked earn: ``(offer id, name, points)``."""
    return [(offer_id, name, points) for offer_id, name, points in session.execute(
        select(OfferAward.offer_id, Offer.name, OfferAward.points)
        .join(Offer, Offer.id == OfferAward.offer_id)
        .where(OfferAward.entry_id == entry_id).order_by(OfferAward.offer_id))]
