"""Rewards: publishing and changing them, and the catalog members browse.

A reward is fulfilled by exactly one partner, at which its points are redeemed and
settled. A partner publishes its own; the operator publishes **coalition rewards**, each
naming the partner that fulfils it (a coalition-run merchant or a charity partner with its
own rate card), so that every redemption is a burn at a partner like any other: settlement
prices it at that partner's redeem rate, ``coalition ledger check`` and the liability report
count it as a redemption there, with nothing particular to coalition rewards.

A reward is on offer while it is active, its partner active, and now is within
``[valid_from, valid_to)``; its units left are ``stock - sold`` (no stock: unlimited).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from coalition import clock
from coalition.audit.service import Actor, record
from coalition.catalog.models import Reward
from coalition.db import UnitOfWork, Units, read
from coalition.errors import Forbidden, InvalidRequest, NotFound
from coalition.membership.plans import plans
from coalition.models import Partner
from coalition.program.service import rules_in_force

_r = Reward.__table__.c
_pt = Partner.__table__.c

#: what a reward shows, in the order of the wire format
EDITABLE = ("name", "description", "kind", "points", "stock", "per_member_limit",
            "plan", "valid_from", "valid_to", "terms", "active")


def render(reward: Any, partner_code: str, partner_name: str) -> dict[str, Any]:
    """A reward as a dict, from a :class:`Reward` or a row of its columns."""
    left = None if reward.stock is None else reward.stock - reward.sold
    return {"id": reward.id, "partner": partner_code, "partner_name": partner_name,
            "coalition": reward.coalition, "kind": reward.kind, "name": reward.name,
            "description": reward.description, "points": reward.points,
            "stock": reward.stock, "sold": reward.sold, "available": left,
            "per_member_limit": reward.per_member_limit, "plan": reward.plan,
            "valid_from": reward.valid_from,
            "valid_to": reward.valid_to, "terms": reward.terms, "active": reward.active}


def on_offer(now: datetime) -> list[Any]:
    """The conditions of a reward on offer at ``now`` (units left aside)."""
    return [_r.active.is_(True), _pt.status == "active",
            or_(_r.valid_from.is_(None), _r.valid_from <= now),
            or_(_r.valid_to.is_(None), _r.valid_to > now)]


def _check_window(data: dict[str, Any]) -> None:
    start, end = data.get("valid_from"), data.get("valid_to")
    if start is not None and end is not None and end <= start:
        message = "Must be after valid_from."
        raise InvalidRequest("valid_to must be after valid_from.",
                             errors={"valid_to": [message]})


def _check_plan(session: Session, plan: str | None) -> None:
    """A member-only reward names a plan of the program rules in force."""
    if plan is not None and plan not in {p.code for p in plans(rules_in_force(session))}:
        message = "No paid membership plan with this code (GET /v1/program/memberships)."
        raise InvalidRequest(f"No paid membership plan {plan!r}.", errors={"plan": [message]})


def _partner(session: Session, code: str) -> Any:
    row = session.execute(select(_pt.id, _pt.code, _pt.name, _pt.status)
                          .where(_pt.code == code)).first()
    if row is None or row.status != "active":
        message = "No active partner with this code."
        raise InvalidRequest(f"No active partner {code!r}.", errors={"partner": [message]})
    return row


def publish(partner_id: int | None, data: dict[str, Any], *, actor: Actor | None = None,
            units: Units = UnitOfWork) -> dict[str, Any]:
    """Publish a reward: a partner's own (``partner_id``), or, with ``partner_id`` None
    (the operator), a coalition reward fulfilled by the partner ``data["partner"]``.
    ``actor``: who published it, in the fulfilling partner's audit trail."""
    _check_window(data)
    with units() as uow:
        session = uow.session
        _check_plan(session, data.get("plan"))
        if partner_id is None:
            if not data.get("partner"):
                message = "The partner that fulfils a coalition reward."
                raise InvalidRequest("A coalition reward names the partner that fulfils it.",
                                     errors={"partner": [message]})
            partner = _partner(session, data["partner"])
        else:
            partner = session.execute(select(_pt.id, _pt.code, _pt.name)
                                      .where(_pt.id == partner_id)).one()
            if data.get("partner") not in (None, partner.code):
                message = "A partner publishes only rewards it fulfils itself."
                raise InvalidRequest(message, errors={"partner": [message]})
        now = clock.utcnow()
        reward = Reward(partner_id=partner.id, coalition=partner_id is None,
                        kind=data["kind"], name=data["name"],
                        description=data.get("description") or "",
                        terms=data.get("terms") or "", points=data["points"],
                        stock=data.get("stock"), sold=0,
                        per_member_limit=data.get("per_member_limit"),
                        plan=data.get("plan"), valid_from=data.get("valid_from"),
                        valid_to=data.get("valid_to"),
                        active=data.get("active", True), created_at=now, updated_at=now)
        session.add(reward)
        session.flush()
        body = render(reward, partner.code, partner.name)
        if actor is not None:
            record(session, actor, "reward.published", f"reward:{reward.id}", body,
                   partner_id=partner.id)
        uow.commit()
        return body


def update(partner_id: int | None, reward_id: int, data: dict[str, Any], *,
           actor: Actor | None = None, units: Units = UnitOfWork) -> dict[str, Any]:
    """Change a reward: a partner its own, the operator (``partner_id`` None) any. The
    stock can be lowered down to the units already sold, never below. ``actor``: who
    changed it, in the fulfilling partner's audit trail with what was changed."""
    with units() as uow:
        session = uow.session
        reward = session.scalar(select(Reward).where(Reward.id == reward_id)
                                .with_for_update())
        if reward is None or (partner_id is not None and reward.partner_id != partner_id):
            raise NotFound(f"No reward {reward_id}.")
        if partner_id is not None and reward.coalition:
            raise Forbidden("A coalition reward is changed by the operator.")
        merged = {name: data.get(name, getattr(reward, name)) for name in EDITABLE}
        _check_window(merged)
        if "plan" in data:
            _check_plan(session, data["plan"])
        if merged["stock"] is not None and merged["stock"] < reward.sold:
            message = f"{reward.sold} already sold."
            raise InvalidRequest(f"The stock cannot be below the {reward.sold} units sold.",
                                 errors={"stock": [message]})
        changed = {name: {"from": getattr(reward, name), "to": data[name]}
                   for name in EDITABLE if name in data and data[name] != getattr(reward, name)}
        for name in EDITABLE:
            if name in data:
                setattr(reward, name, data[name])
        reward.updated_at = clock.utcnow()
        session.flush()
        partner = session.execute(select(_pt.code, _pt.name)
                                  .where(_pt.id == reward.partner_id)).one()
        body = render(reward, partner.code, partner.name)
        if actor is not None and changed:
            record(session, actor, "reward.changed", f"reward:{reward.id}", changed,
                   partner_id=reward.partner_id)
        uow.commit()
        return body


def catalog(now: datetime | None = None, *, partner_id: int | None = None,
            include_inactive: bool = False) -> list[dict[str, Any]]:
    """The rewards on offer (cheapest first), or with ``partner_id`` and
    ``include_inactive`` every reward that partner fulfils (newest first)."""
    now = now or clock.utcnow()
    query = (select(Reward.__table__, _pt.code.label("partner_code"),
                    _pt.name.label("partner_name"))
             .join(Partner.__table__, _pt.id == _r.partner_id))
    if partner_id is not None:
        query = query.where(_r.partner_id == partner_id)
    if include_inactive:
        query = query.order_by(_r.id.desc())
    else:
        query = query.where(*on_offer(now)).order_by(_r.points, _r.id)
    with read() as session:
        return [render(row, row.partner_code, row.partner_name)
                for row in session.execute(query)]


def reward(reward_id: int, partner_id: int | None = None, *,
           published_only: bool = False) -> dict[str, Any]:
    """One reward (a partner's own when ``partner_id`` is given; an active one only with
    ``published_only``)."""
    with read() as session:
        row = session.execute(
            select(Reward.__table__, _pt.code.label("partner_code"),
                   _pt.name.label("partner_name"))
            .join(Partner.__table__, _pt.id == _r.partner_id)
            .where(_r.id == reward_id)).first()
    if row is None or (partner_id is not None and row.partner_id != partner_id) \
            or (published_only and not row.active):
        raise NotFound(f"No reward {reward_id}.")
    return render(row, row.partner_code, row.partner_name)
