"""The offers open to a member, and activating an opt-in one."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coalition import clock
from coalition.db import UnitOfWork, Units, read
from coalition.errors import InvalidRequest, NotFound
from coalition.ledger.models import Member
from coalition.models import Partner
from coalition.offers.models import Offer, OfferActivation, OfferPartner


def _open(session: Session, member: Member, now: datetime) -> list[Offer]:
    """Promotions in force now with points left under their cap, for this member's tier
    and enrolment."""
    offers = session.scalars(
        select(Offer).where(Offer.valid_from <= now, Offer.valid_to > now,
                            Offer.issued_points < Offer.cap_points)
        .order_by(Offer.valid_to, Offer.id)).all()
    return [o for o in offers
            if (o.tiers is None or member.tier in o.tiers)
            and (o.new_member_days is None
                 or now - member.created_at <= timedelta(days=o.new_member_days))]


def _describe(session: Session, member_id: int, offers: list[Offer]) -> list[dict[str, Any]]:
    ids = [o.id for o in offers]
    at: dict[int, list[dict[str, str]]] = {}
    for offer_id, code, name in session.execute(
            select(OfferPartner.offer_id, Partner.code, Partner.name)
            .join(Partner, Partner.id == OfferPartner.partner_id)
            .where(OfferPartner.offer_id.in_(ids)).order_by(Partner.code)):
        at.setdefault(offer_id, []).append({"code": code, "name": name})
    activated = dict(session.execute(
        select(OfferActivation.offer_id, OfferActivation.activated_at)
        .where(OfferActivation.member_id == member_id,
               OfferActivation.offer_id.in_(ids))).all())
    return [{
        "id": o.id, "name": o.name, "rule": o.rule, "multiplier": o.multiplier,
        "bonus_points": o.bonus_points, "valid_from": o.valid_from, "valid_to": o.valid_to,
        "opt_in": o.opt_in, "activated": (o.id in activated) if o.opt_in else None,
        "activated_at": activated.get(o.id), "partners": at.get(o.id, []),
    } for o in offers]


def open_to(member_id: int) -> list[dict[str, Any]]:
    """The offers open to the member now, those ending soonest first."""
    with read() as session:
        member = session.get(Member, member_id)
        if member is None or member.status != "active":
            return []
        return _describe(session, member_id, _open(session, member, clock.utcnow()))


def activate(member_id: int, offer_id: int, units: Units = UnitOfWork) -> dict[str, Any]:
    """Activate an opt-in offer open to the member; activating it again changes nothing."""
    with units() as uow:
        session = uow.session
        now = clock.utcnow()
        member = session.get_one(Member, member_id)
        if member.status != "active":
            raise NotFound(f"No offer {offer_id} is open to you.")
        offer = next((o for o in _open(session, member, now) if o.id == offer_id), None)
        if offer is None:
            raise NotFound(f"No offer {offer_id} is open to you.")
        if not offer.opt_in:
            raise InvalidRequest("This offer applies without activation.",
                                 errors={"offer": ["Applies without activation."]})
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(dialect.insert(OfferActivation.__table__)
                        .values(offer_id=offer_id, member_id=member_id, activated_at=now)
                        .on_conflict_do_nothing())
        answer = _describe(session, member_id, [offer])[0]
        uow.commit()
    return answer


def merge(session: Session, absorbed_id: int, survivor_id: int) -> None:
    """A merge: the survivor has the opt-in promotions the absorbed member activated (an
    activation of its own stays as it was), in the merge's transaction."""
    a = OfferActivation.__table__.c
    own = select(a.offer_id).where(a.member_id == survivor_id)
    session.execute(update(OfferActivation.__table__).where(
        a.member_id == absorbed_id, a.offer_id.not_in(own)).values(member_id=survivor_id))
    session.execute(delete(OfferActivation.__table__).where(a.member_id == absorbed_id))
