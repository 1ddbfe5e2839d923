"""Publishing a promotion (a partner's own, or the operator's for the coalition or several
funders) and listing them with what they have issued against their cap.

Members it targets are told in the same transaction by one ``INSERT … SELECT`` over the
members (:func:`_tell_members`): set-based, so a coalition of millions costs one statement
and no transaction per member; a member who enrols later sees the offer on their page.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, String, and_, insert, literal, select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.audit.service import Actor, record
from coalition.db import UnitOfWork, Units, UTCDateTime, read
from coalition.errors import InvalidRequest
from coalition.ledger.models import Member
from coalition.models import Partner, RateCard
from coalition.notifications.models import Notification
from coalition.offers.models import Offer, OfferFunder, OfferPartner
from coalition.program.service import rules_in_force

#: the funder that is the coalition itself, in ``cost_share``
COALITION = "coalition"


def _refuse(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, errors={field: [message]})


def _check_rule(data: dict[str, Any], now: datetime) -> None:
    if data["rule"] == "multiplier":
        if data.get("multiplier") is None or data["multiplier"] <= 1:
            raise _refuse("multiplier", "A multiplier promotion needs a multiplier above 1.")
        if data.get("bonus_points") is not None:
            raise _refuse("bonus_points", "A multiplier promotion has no bonus points.")
    else:
        if data.get("bonus_points") is None:
            raise _refuse("bonus_points", "A bonus promotion needs its bonus points.")
        if data.get("multiplier") is not None:
            raise _refuse("multiplier", "A bonus promotion has no multiplier.")
    if data["valid_to"] <= data["valid_from"]:
        raise _refuse("valid_to", "Must be after valid_from.")
    if data["valid_to"] <= now:
        raise _refuse("valid_to", "Must be in the future.")


def _partners_by_code(session: Session, codes: Sequence[str]) -> dict[str, Partner]:
    found = {p.code: p for p in session.scalars(select(Partner).where(Partner.code.in_(codes)))}
    return found


def _funders(session: Session, cost_share: dict[str, Decimal], starts: datetime
             ) -> list[tuple[int | None, Decimal]]:
    """The funders named in ``cost_share``, in order of their code (the coalition last):
    shares above zero adding up to exactly 1, partners with a rate card in force when the
    promotion starts, so that settlement can price their share."""
    if not cost_share:
        raise _refuse("cost_share", "Name at least one funder.")
    if sum(cost_share.values(), Decimal(0)) != 1:
        raise _refuse("cost_share", "The shares must add up to exactly 1.")
    if any(share <= 0 for share in cost_share.values()):
        raise _refuse("cost_share", "Every share must be above 0.")
    codes = sorted(code for code in cost_share if code != COALITION)
    partners = _partners_by_code(session, codes)
    unknown = [code for code in codes if code not in partners]
    if unknown:
        raise _refuse("cost_share", f"No such partner: {', '.join(unknown)}.")
    priced = set(session.scalars(select(RateCard.partner_id).where(
        RateCard.partner_id.in_([p.id for p in partners.values()]),
        RateCard.valid_from <= starts)))
    unpriced = [code for code in codes if partners[code].id not in priced]
    if unpriced:
        raise _refuse("cost_share", "These funders have no rate card in force when the "
                      f"promotion starts: {', '.join(unpriced)}.")
    funders: list[tuple[int | None, Decimal]] = [(partners[c].id, cost_share[c]) for c in codes]
    if COALITION in cost_share:
        funders.append((None, cost_share[COALITION]))
    return funders


def _tell_members(session: Session, offer: Offer, now: datetime) -> None:
    """One notification of the new offer for each active member it targets, in one
    statement."""
    m = Member.__table__.c
    conditions = [m.status == "active"]
    if offer.tiers is not None:
        conditions.append(m.tier.in_(offer.tiers))
    if offer.new_member_days is not None:
        conditions.append(m.created_at >= now - timedelta(days=offer.new_member_days))
    data = {"offer_id": offer.id, "name": offer.name, "opt_in": offer.opt_in,
            "valid_from": offer.valid_from.isoformat(), "valid_to": offer.valid_to.isoformat()}
    n = Notification.__table__
    session.execute(insert(n).from_select(
        ["member_id", "kind", "key", "data", "created_at"],
        select(m.id, literal("offer", String()), literal(f"offer:{offer.id}", String()),
               literal(data, JSON()), literal(now, UTCDateTime()))
        .where(and_(*conditions))))


def publish(data: dict[str, Any], *, partner_id: int | None, actor: Actor | None = None,
            units: Units = UnitOfWork) -> dict[str, Any]:
    """Publish a promotion. A partner (``partner_id``) publishes one on its own earns that
    it funds alone; the operator (``partner_id`` ``None``) names the partners it applies
    at and the funders' shares, the coalition among them."""
    with units() as uow:
        session = uow.session
        now = clock.utcnow()
        _check_rule(data, now)
        if partner_id is not None:
            own = session.get_one(Partner, partner_id)
            cost_share = data.get("cost_share") or {own.code: Decimal(1)}
            if set(cost_share) != {own.code}:
                raise _refuse("cost_share", "A partner funds its own promotions alone; the "
                              "coalition publishes shared ones.")
            at = [own]
        else:
            codes = data.get("partners") or []
            if not codes:
                raise _refuse("partners", "Name the partners whose earns it applies to.")
            found = _partners_by_code(session, codes)
            unknown = [code for code in codes if code not in found]
            if unknown:
                raise _refuse("partners", f"No such partner: {', '.join(unknown)}.")
            at = [found[code] for code in sorted(set(codes))]
            cost_share = data.get("cost_share") or {}
        funders = _funders(session, cost_share, max(now, data["valid_from"]))
        tiers = data.get("tiers")
        if tiers is not None:
            known = {t["code"] for t in rules_in_force(session)["tiers"]}
            unknown = sorted(set(tiers) - known)
            if unknown:
                raise _refuse("tiers", f"No such tier: {', '.join(unknown)}.")
            tiers = sorted(set(tiers))
        offer = Offer(name=data["name"], rule=data["rule"], multiplier=data.get("multiplier"),
                      bonus_points=data.get("bonus_points"), valid_from=data["valid_from"],
                      valid_to=data["valid_to"], tiers=tiers,
                      new_member_days=data.get("new_member_days"), opt_in=data["opt_in"],
                      cap_points=data["cap_points"], issued_points=0,
                      published_by=partner_id, created_at=now)
        session.add(offer)
        session.flush()
        session.add_all([OfferPartner(offer_id=offer.id, partner_id=p.id) for p in at])
        session.add_all([OfferFunder(offer_id=offer.id, position=i, partner_id=funder,
                                     share=share)
                         for i, (funder, share) in enumerate(funders)])
        session.flush()
        _tell_members(session, offer, now)
        answer = describe(session, [offer])[0]
        if actor is not None:
            record(session, actor, "offer.published", f"offer:{offer.id}", answer,
                   partner_id=partner_id)
        uow.commit()
    return answer


def describe(session: Session, offers: Sequence[Offer]) -> list[dict[str, Any]]:
    """Promotions as the API shows them to their funders and the operator."""
    ids = [o.id for o in offers]
    codes = dict(session.execute(select(Partner.id, Partner.code)).all())
    at: dict[int, list[str]] = {}
    for offer_id, partner_id in session.execute(
            select(OfferPartner.offer_id, OfferPartner.partner_id)
            .where(OfferPartner.offer_id.in_(ids))):
        at.setdefault(offer_id, []).append(codes[partner_id])
    shares: dict[int, dict[str, Decimal]] = {}
    for offer_id, funder, share in session.execute(
            select(OfferFunder.offer_id, OfferFunder.partner_id, OfferFunder.share)
            .where(OfferFunder.offer_id.in_(ids)).order_by(OfferFunder.position)):
        shares.setdefault(offer_id, {})[codes[funder] if funder else COALITION] = share
    return [{
        "id": o.id, "name": o.name, "rule": o.rule, "multiplier": o.multiplier,
        "bonus_points": o.bonus_points, "valid_from": o.valid_from, "valid_to": o.valid_to,
        "tiers": o.tiers, "new_member_days": o.new_member_days, "opt_in": o.opt_in,
        "cap_points": o.cap_points, "issued_points": o.issued_points,
        "cost_share": shares.get(o.id, {}), "partners": sorted(at.get(o.id, [])),
        "published_by": codes[o.published_by] if o.published_by else COALITION,
    } for o in offers]


def funded_by(partner_id: int | None) -> list[dict[str, Any]]:
    """The promotions a partner funds a share of (``None``: every promotion), newest
    first."""
    with read() as session:
        query = select(Offer).order_by(Offer.id.desc())
        if partner_id is not None:
            query = query.where(Offer.id.in_(select(OfferFunder.offer_id)
                                             .where(OfferFunder.partner_id == partner_id)))
        return describe(session, list(session.scalars(query)))
