"""Funding: what pays for the points a partner issues.

A partner is **prepaid** (it buys blocks of points; an earn that would issue more than
remains is refused with ``insufficient_funding``, unless a reserve block or an automatic
top-up takes over) or **post-paid** (points issued since the last closed settlement period
may not exceed its credit limit; no limit when none is set). A partner with no funding row
is post-paid without a limit.

**No hot row.** What a partner may still issue is spread over :data:`SLOTS` rows of
``funding_slot``; an earn takes its points from one slot picked at random with one guarded
``UPDATE … WHERE remaining >= :points`` (no row back: not enough there), so concurrent earns
of one partner rarely meet on a row, and a slot never goes below zero (a CHECK says so too).
Only when the slot it picked is short does an earn take the slow path: it locks every slot
(in slot order, the last locks any booking takes, so no cycle), counts what is really left
— for a prepaid partner the slots' sum, then a reserve block, then a top-up; for a
post-paid one the credit limit less what was issued since the last closed period, so a
close gives the credit back — takes its points and spreads the rest evenly again.

The earn and its use of funding are one transaction (:mod:`partners.transactions`): a
refusal here rolls the booking back whole, and an earn reversal gives its points back.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from coalition import clock
from coalition.audit.service import SYSTEM, Actor, record
from coalition.db import UnitOfWork, affected_rows, read
from coalition.errors import Conflict, InvalidRequest, NotFound
from coalition.ledger.check import CheckResult
from coalition.ledger.models import Entry, Posting
from coalition.models import Partner
from coalition.money import round_money
from partners import webhooks
from partners.models import FundingBlock, FundingSlot, PartnerFunding
from settlement.models import SettlementRun

#: shares a partner's remaining points are spread over
SLOTS = 16

_F = PartnerFunding.__table__.c
_S = FundingSlot.__table__.c
_K = FundingBlock.__table__.c
_P = Posting.__table__.c
_E = Entry.__table__.c
_RUN = SettlementRun.__table__.c

class InsufficientFunding(Conflict):
    code = "insufficient_funding"


# --------------------------------------------------------------------------- the hot path


# one slot with enough, picked at random among those no other earn holds (PostgreSQL skips
# the locked ones rather than wait for them; on SQLite writers are serialised anyway)
_FREE_SLOT = (select(_S.slot).where(_S.partner_id == bindparam("partner"),
                                    _S.remaining >= bindparam("points"))
              .order_by(func.random()).limit(1).with_for_update(skip_locked=True)
              .scalar_subquery())
_TAKE = (update(FundingSlot.__table__)
         .where(_S.partner_id == bindparam("partner"), _S.slot == _FREE_SLOT,
                _S.remaining >= bindparam("points"))
         .values(remaining=_S.remaining - bindparam("points")))


def _guarded_take(session: Session, partner_id: int, points: int) -> int | None:
    """Take ``points`` from one free slot that has them; what the slot has left, or
    ``None`` when no free slot could."""
    left = session.execute(_TAKE.returning(_S.remaining),
                           {"partner": partner_id, "points": points}).scalar()
    return None if left is None else int(left)


def taken(session: Session, partner_id: int, slot_left: int | None,
          low_threshold: int | None, low_raised: bool) -> None:
    """After an earn took its points: raise ``funding.low`` if the partner's funding fell
    below its threshold. The slot the earn took from is one share of what is left, so
    when that slot alone still reaches the threshold, the sum of all of them is not read."""
    if low_threshold is None or low_raised:
        return
    if slot_left is None or slot_left < low_threshold:
        _maybe_low(session, partner_id, low_threshold)


def change(session: Session, partner_id: int, points: int, model: str,
           low_threshold: int | None = None, low_raised: bool = False) -> None:
    """Use (``points`` < 0, an earn) or give back (> 0, an earn reversal) funding, in the
    booking's transaction; raises :class:`InsufficientFunding` when nothing covers it."""
    if points == 0:
        return
    if points > 0:
        session.execute(update(FundingSlot.__table__)
                        .where(_S.partner_id == partner_id,
                               _S.slot == random.randrange(SLOTS))
                        .values(remaining=_S.remaining + points))
        return
    needed = -points
    slot_left = _guarded_take(session, partner_id, needed)
    if slot_left is None:
        _take_slowly(session, partner_id, needed, model)
    taken(session, partner_id, slot_left, low_threshold, low_raised)


def _take_slowly(session: Session, partner_id: int, needed: int, model: str) -> None:
    slots = session.execute(select(_S.slot, _S.remaining).where(_S.partner_id == partner_id)
                            .order_by(_S.slot).with_for_update()).all()
    settings = session.execute(select(PartnerFunding.__table__).where(
        _F.partner_id == partner_id)).one()
    now = clock.utcnow()
    if model == "prepaid":
        left = sum(remaining for _, remaining in slots)
        left += _activate_reserves(session, partner_id, needed - left, now)
        if left < needed and settings.topup_points:
            blocks = -(-(needed - left) // settings.topup_points)  # rounded up
            for _ in range(blocks):
                session.execute(insert(FundingBlock.__table__), {
                    "partner_id": partner_id, "kind": "topup",
                    "points": settings.topup_points, "price": settings.topup_price,
                    "currency": settings.topup_currency, "bought_at": now,
                    "activated_at": now})
                left += settings.topup_points
    else:
        if settings.credit_limit_points is None:
            return
        # what was issued includes this earn's own entry, already written
        left = settings.credit_limit_points - _unsettled(session, partner_id) + needed
    if left < needed:
        raise InsufficientFunding(
            f"The partner's funding covers {max(left, 0)} more points, not {needed}.")
    _spread(session, partner_id, left - needed, slots)


def _activate_reserves(session: Session, partner_id: int, short: int, now: datetime) -> int:
    """Bring reserve blocks into use, oldest first, until ``short`` points are covered;
    the points they add."""
    added = 0
    if short <= 0:
        return 0
    reserves = session.execute(select(_K.id, _K.points).where(
        _K.partner_id == partner_id, _K.kind == "reserve", _K.activated_at.is_(None))
        .order_by(_K.id)).all()
    for block_id, points in reserves:
        if added >= short:
            break
        session.execute(update(FundingBlock.__table__).where(_K.id == block_id)
                        .values(activated_at=now))
        added += points
    return added


def _spread(session: Session, partner_id: int, total: int,
            slots: Sequence[Any] | None = None) -> None:
    """Set the slots (locked by the caller) to share ``total`` evenly."""
    existing = {row[0] for row in slots} if slots is not None else {
        row[0] for row in session.execute(select(_S.slot).where(_S.partner_id == partner_id))}
    share, extra = divmod(total, SLOTS)
    for slot in range(SLOTS):
        value = share + (1 if slot < extra else 0)
        if slot in existing:
            session.execute(update(FundingSlot.__table__).where(
                _S.partner_id == partner_id, _S.slot == slot).values(remaining=value))
        else:
            session.execute(insert(FundingSlot.__table__), {
                "partner_id": partner_id, "slot": slot, "remaining": value})


def _add_evenly(session: Session, partner_id: int, points: int) -> None:
    """A block bought: its points shared out over every slot, so that earns find them
    wherever they look."""
    slots = session.execute(select(_S.slot, _S.remaining).where(_S.partner_id == partner_id)
                            .order_by(_S.slot).with_for_update()).all()
    _spread(session, partner_id, sum(r for _, r in slots) + points, slots)


def _closed_until(session: Session | Connection) -> datetime | None:
    return session.execute(select(func.max(_RUN.period_end))
                           .where(_RUN.status == "closed")).scalar()


def _issued_since(session: Session | Connection, partner_id: int,
                  since: datetime | None) -> int:
    """Points the partner issued (earns less earn reversals) booked from ``since``."""
    query = (select(func.coalesce(-func.sum(_P.points), 0))
             .select_from(Posting.__table__.join(Entry.__table__, _E.id == _P.entry_id))
             .where(_P.partner_id == partner_id, _P.account == "partner:issued"))
    if since is not None:
        query = query.where(_E.booked_at >= since)
    return int(session.execute(query).scalar_one())


def _unsettled(session: Session, partner_id: int) -> int:
    return _issued_since(session, partner_id, _closed_until(session))


def _maybe_low(session: Session, partner_id: int, threshold: int) -> None:
    """Raise ``funding.low`` once per crossing below the threshold."""
    left = session.execute(select(func.coalesce(func.sum(_S.remaining), 0))
                           .where(_S.partner_id == partner_id)).scalar_one()
    if left >= threshold:
        return
    raised = session.execute(update(PartnerFunding.__table__).where(
        _F.partner_id == partner_id, _F.low_raised.is_(False)).values(low_raised=True))
    if affected_rows(raised) == 1:
        webhooks.emit(session, partner_id, "funding.low", {
            "available_points": int(left), "low_threshold_points": threshold})


# --------------------------------------------------------------------------- operator


def _partner(session: Session, code: str) -> Partner:
    partner = session.scalar(select(Partner).where(Partner.code == code))
    if partner is None:
        raise NotFound(f"No partner {code!r}.")
    return partner


def configure(code: str, data: dict[str, Any], *, actor: Actor = SYSTEM) -> dict[str, Any]:
    """Record a block bought (``points, price, currency, reserve?``: the partner is then
    prepaid), or make the partner post-paid with ``credit_limit_points`` (``None``: no
    limit); either may also set ``low_threshold_points`` and ``auto_topup``."""
    block = "points" in data
    if block and "credit_limit_points" in data:
        message = "Give a block (points, price, currency) or a credit limit, not both."
        raise InvalidRequest(message, errors={"_schema": [message]})
    with UnitOfWork() as uow:
        session = uow.session
        partner = _partner(session, code)
        now = clock.utcnow()
        # the partner's funding row is locked for the change; earns never lock it
        row = session.execute(select(PartnerFunding.__table__).where(
            _F.partner_id == partner.id).with_for_update()).first()
        values: dict[str, Any] = {"updated_at": now}
        if block or "credit_limit_points" in data:
            model = "prepaid" if block else "postpaid"
            if row is None or row.model != model:
                values.update(model=model, since=now)
            if not block:
                values["credit_limit_points"] = data["credit_limit_points"]
        elif row is None:
            message = "The partner has no funding yet: give a block or a credit limit."
            raise InvalidRequest(message, errors={"_schema": [message]})
        if "low_threshold_points" in data:
            values["low_threshold_points"] = data["low_threshold_points"]
        if "auto_topup" in data:
            topup = data["auto_topup"] or {}
            if topup and topup["currency"] != partner.currency:
                message = f"This partner pays in {partner.currency}."
                raise InvalidRequest(message, errors={"auto_topup": {"currency": [message]}})
            values.update(topup_points=topup.get("points"), topup_price=topup.get("price"),
                          topup_currency=topup.get("currency"))
        if block and data["currency"] != partner.currency:
            message = f"This partner pays in {partner.currency}."
            raise InvalidRequest(message, errors={"currency": [message]})
        for name, money in (("price", data if block else None),
                            ("auto_topup", data.get("auto_topup"))):
            if money and round_money(money["price"], money["currency"]) != money["price"]:
                message = f"A price in {money['currency']} has no more places than its " \
                          f"minor unit."
                raise InvalidRequest(message, errors={name: [message]})
        if row is None:
            session.execute(insert(PartnerFunding.__table__), {
                "partner_id": partner.id, "low_raised": False, **values})
        else:
            session.execute(update(PartnerFunding.__table__)
                            .where(_F.partner_id == partner.id).values(**values))
        model_now = values.get("model", row.model if row is not None else None)
        if model_now == "postpaid" or values.get("model") == "prepaid":
            # a model taking effect starts from what it alone covers
            _reset_slots(session, partner.id, str(model_now),
                         values.get("credit_limit_points",
                                    row.credit_limit_points if row is not None else None))
        if block:
            kind = "reserve" if data.get("reserve") else "block"
            session.execute(insert(FundingBlock.__table__), {
                "partner_id": partner.id, "kind": kind, "points": data["points"],
                "price": data["price"], "currency": data["currency"], "bought_at": now,
                "activated_at": None if kind == "reserve" else now})
            if kind == "block":
                _add_evenly(session, partner.id, data["points"])
                session.execute(update(PartnerFunding.__table__)
                                .where(_F.partner_id == partner.id).values(low_raised=False))
        record(session, actor, "partner.funding_changed", f"partner:{code}",
               {key: str(value) if isinstance(value, Decimal) else value
                for key, value in data.items()})
        uow.commit()
    return funding(partner.id)


def _reset_slots(session: Session, partner_id: int, model: str,
                 credit_limit: int | None) -> None:
    slots = session.execute(select(_S.slot, _S.remaining).where(_S.partner_id == partner_id)
                            .order_by(_S.slot).with_for_update()).all()
    if model == "prepaid":
        _spread(session, partner_id, 0, slots)
    else:
        left = 0 if credit_limit is None else max(
            credit_limit - _unsettled(session, partner_id), 0)
        _spread(session, partner_id, left, slots)


# --------------------------------------------------------------------------- reading


def funding(partner_id: int) -> dict[str, Any]:
    """``GET /v1/funding``: the model, what the partner may still issue, its blocks."""
    with read() as session:
        row = session.execute(select(PartnerFunding.__table__).where(
            _F.partner_id == partner_id)).first()
        left = session.execute(select(func.coalesce(func.sum(_S.remaining), 0))
                               .where(_S.partner_id == partner_id)).scalar_one()
        blocks = session.execute(select(_K.id, _K.kind, _K.points, _K.price, _K.currency,
                                        _K.bought_at, _K.activated_at)
                                 .where(_K.partner_id == partner_id).order_by(_K.id)).all()
        if row is not None and row.model == "postpaid":
            used = _unsettled(session, partner_id)
            available = (None if row.credit_limit_points is None
                         else max(row.credit_limit_points - used, 0))
        else:
            used = None
            available = int(left) if row is not None else None
        reserve = sum(b.points for b in blocks if b.kind == "reserve" and not b.activated_at)
    return {
        "model": row.model if row is not None else "postpaid",
        "available_points": available,
        "reserve_points": reserve,
        "credit_limit_points": row.credit_limit_points if row is not None else None,
        "unsettled_points": used,
        "low_threshold_points": row.low_threshold_points if row is not None else None,
        "auto_topup": ({"points": row.topup_points,
                        "price": round_money(row.topup_price, row.topup_currency),
                        "currency": row.topup_currency}
                       if row is not None and row.topup_points else None),
        "since": row.since if row is not None else None,
        "blocks": [{"id": b.id, "kind": b.kind, "points": b.points,
                    "price": round_money(b.price, b.currency),
                    "currency": b.currency, "bought_at": b.bought_at,
                    "activated_at": b.activated_at} for b in blocks],
    }


def in_period(session: Session, code: str, start: datetime, end: datetime,
              issued_points: int) -> dict[str, Any]:
    """What a partner's statement shows of its funding for ``[start, end)``: the blocks
    bought (top-ups included) and, for a prepaid partner, the points they paid for that
    the period used (its issued points)."""
    partner_id = session.scalar(select(Partner.id).where(Partner.code == code))
    model = session.scalar(select(_F.model).where(_F.partner_id == partner_id))
    blocks = session.execute(select(_K.id, _K.kind, _K.points, _K.price, _K.currency,
                                    _K.bought_at).where(
        _K.partner_id == partner_id, _K.bought_at >= start, _K.bought_at < end)
        .order_by(_K.id)).all()
    return {
        "model": model or "postpaid",
        "blocks_bought": [{"id": b.id, "kind": b.kind, "points": b.points,
                           "price": round_money(b.price, b.currency), "currency": b.currency,
                           "bought_at": b.bought_at} for b in blocks],
        "points_bought": sum(b.points for b in blocks),
        "points_used": issued_points if model == "prepaid" else None,
    }


def partner_funding(code: str) -> dict[str, Any]:
    with read() as session:
        partner = _partner(session, code)
    return funding(partner.id)


# --------------------------------------------------------------------------- the check


def funded_points(conn: Connection, limit: int) -> CheckResult:
    """``coalition ledger check``: a prepaid partner never issued more points than it
    bought, and what its slots hold is what it bought less what it issued."""
    prepaid = conn.execute(select(_F.partner_id, _F.since).where(_F.model == "prepaid")).all()
    result = CheckResult("funded_points",
                         "points a prepaid partner issued since it became prepaid never "
                         "exceed the blocks it bought and used, and its remaining funding "
                         "is those blocks less what it issued",
                         {"prepaid_partners": len(prepaid)})
    found: list[dict[str, Any]] = []
    for partner_id, since in prepaid:
        bought = int(conn.execute(select(func.coalesce(func.sum(_K.points), 0)).where(
            _K.partner_id == partner_id, _K.activated_at.is_not(None),
            _K.activated_at >= since)).scalar_one())
        issued = _issued_since(conn, partner_id, since)
        left = int(conn.execute(select(func.coalesce(func.sum(_S.remaining), 0))
                                .where(_S.partner_id == partner_id)).scalar_one())
        if issued > bought or left != bought - issued:
            found.append({"problem": "issued beyond funding" if issued > bought
                          else "remaining funding disagrees with blocks less issued",
                          "partner_id": partner_id, "bought": bought, "issued": issued,
                          "remaining": left})
    result.found(len(found), found[:limit])
    return result
