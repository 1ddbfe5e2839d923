"""Onboarding partners, their rate cards and their OAuth clients."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from coalition.audit.service import SYSTEM, Actor, record
from coalition.db import UnitOfWork, read, utcnow
from coalition.errors import AlreadyExists, InvalidRequest, NotFound, PeriodClosed
from coalition.ledger import fence
from coalition.models import Partner, RateCard
from coalition.oauth import clients
from coalition.oauth.clients import IssuedClient
from coalition.oauth.models import OAuthToken, PartnerUser, revoke_tokens
from settlement.compute import COALITION

#: names that settlement, its exports and the finance page use beside partner codes for
#: themselves: the coalition's own accounts (a party in every run's matrix, positions and
#: payments), the totals of statements and matrix, and the two money models
RESERVED_CODES = frozenset({COALITION, "total", "operator", "clearing"})


def _card(card: RateCard) -> dict[str, Any]:
    return {"valid_from": card.valid_from, "earn_rate": card.earn_rate,
            "issue_price": card.issue_price, "redeem_rate": card.redeem_rate}


def describe(partner: Partner, now: datetime | None = None) -> dict[str, Any]:
    current = partner.rate_card_at(now or utcnow())
    return {
        "code": partner.code, "name": partner.name, "kind": partner.kind,
        "currency": partner.currency, "status": partner.status,
        "created_at": partner.created_at,
        "current_rate": _card(current) if current else None,
        "rate_cards": [_card(c) for c in partner.rate_cards],
    }


def _now_to_second() -> datetime:
    return utcnow().replace(microsecond=0)


def create_partner(
    code: str, name: str, kind: str, currency: str, earn_rate: Decimal,
    issue_price: Decimal, redeem_rate: Decimal, valid_from: datetime | None = None,
    *, actor: Actor = SYSTEM,
) -> dict[str, Any]:
    if code in RESERVED_CODES:
        message = f"{code!r} is reserved: settlement uses it for itself."
        raise InvalidRequest(message, errors={"code": [message]})
    with UnitOfWork() as uow:
        if uow.session.scalar(select(Partner.id).where(Partner.code == code)) is not None:
            raise AlreadyExists(f"A partner with code {code!r} exists.",
                                errors={"code": ["Already taken."]})
        partner = Partner(code=code, name=name, kind=kind, currency=currency, status="active")
        partner.rate_cards.append(RateCard(
            valid_from=valid_from or _now_to_second(), earn_rate=earn_rate,
            issue_price=issue_price, redeem_rate=redeem_rate,
        ))
        uow.session.add(partner)
        try:
            uow.session.flush()
        except IntegrityError as exc:  # a concurrent create of the same code
            raise AlreadyExists(f"A partner with code {code!r} exists.",
                                errors={"code": ["Already taken."]}) from exc
        record(uow.session, actor, "partner.created", f"partner:{code}",
               {"code": code, "name": name, "kind": kind, "currency": currency,
                "rate_card": _card(partner.rate_cards[0])})
        uow.commit()
        return describe(partner)


def _get(session: Any, code: str, lock: bool = False) -> Partner:
    query = select(Partner).where(Partner.code == code)
    if lock:
        query = query.with_for_update()
    partner = session.scalar(query)
    if partner is None:
        raise NotFound(f"No partner {code!r}.")
    return partner


def get_partner(code: str) -> dict[str, Any]:
    with read() as session:
        return describe(_get(session, code))


def list_partners() -> list[dict[str, Any]]:
    with read() as session:
        now = utcnow()
        return [describe(p, now) for p in session.scalars(select(Partner).order_by(Partner.code))]


def partner_id(code: str) -> int:
    with read() as session:
        return _get(session, code).id


def add_rate_card(
    code: str, valid_from: datetime, earn_rate: Decimal | None = None,
    issue_price: Decimal | None = None, redeem_rate: Decimal | None = None,
    *, actor: Actor = SYSTEM,
) -> dict[str, Any]:
    """Append a rate card. Prices not given carry over from the latest card.

    Cards form a chain in ``valid_from`` order and are never edited, so a new card starts
    after the latest one (history is never repriced by appending), or before the first
    one: nothing can be booked before a partner's first card, so an earlier card reprices
    nothing and lets the operator bring a partner's start forward. Either way it must not
    start inside a closed period.
    """
    if earn_rate is None and issue_price is None and redeem_rate is None:
        raise InvalidRequest(
            "Give at least one of earn_rate, issue_price, redeem_rate.",
            errors={"_schema": ["Give at least one of earn_rate, issue_price, redeem_rate."]},
        )
    with UnitOfWork() as uow:
        partner = _get(uow.session, code, lock=True)
        first, latest = partner.rate_cards[0], partner.rate_cards[-1]
        closed_until = fence.pass_for_rate_card(uow.session)
        if closed_until is not None and valid_from < closed_until:
            message = (f"Settlement is closed until {closed_until.isoformat()}; a rate card "
                       f"valid from earlier would reprice a closed period.")
            raise PeriodClosed(message, errors={"valid_from": [message]})
        if first.valid_from <= valid_from <= latest.valid_from:
            message = (f"valid_from must be after the latest rate card "
                       f"({latest.valid_from.isoformat()}) or before the first "
                       f"({first.valid_from.isoformat()}).")
            raise InvalidRequest(message, errors={"valid_from": [message]})
        # prices not given carry over from the card next to the new one
        base = first if valid_from < first.valid_from else latest
        card = RateCard(
            valid_from=valid_from,
            earn_rate=base.earn_rate if earn_rate is None else earn_rate,
            issue_price=base.issue_price if issue_price is None else issue_price,
            redeem_rate=base.redeem_rate if redeem_rate is None else redeem_rate,
        )
        partner.rate_cards.append(card)
        record(uow.session, actor, "partner.rate_card_added", f"partner:{code}",
               {"rate_card": _card(card), "previous": _card(base)})
        uow.commit()
        return _card(card)


def issue_partner_client(code: str, scopes: list[str], name: str = "", *,
                         actor: Actor = SYSTEM) -> IssuedClient:
    with UnitOfWork() as uow:
        partner = _get(uow.session, code)
        issued = clients.issue_client(uow, "partner", scopes, partner_id=partner.id,
                                      name=name or partner.name, actor=actor,
                                      partner_code=partner.code)
        uow.commit()
    return issued


def set_status(code: str, status: str, *, actor: Actor = SYSTEM) -> dict[str, Any]:
    """Suspend a partner (``suspended``) or let it back in (``active``).

    Suspending signs its portal staff out: every token they hold is revoked in the same
    transaction, and until the partner is active again none of them can sign in or
    activate an account (:mod:`coalition.oauth.partner_users`). Their accounts, and their
    roles, are kept for when it is. Setting the status it already has changes nothing.
    """
    if status not in ("active", "suspended"):
        message = "status is active or suspended."
        raise InvalidRequest(message, errors={"status": [message]})
    with UnitOfWork() as uow:
        partner = _get(uow.session, code, lock=True)
        if partner.status != status:
            before, partner.status = partner.status, status
            revoked = 0
            if status == "suspended":
                staff = select(PartnerUser.id).where(PartnerUser.partner_id == partner.id)
                revoked = revoke_tokens(uow.session,
                                        OAuthToken.__table__.c.partner_user_id.in_(staff))
            record(uow.session, actor,
                   "partner.suspended" if status == "suspended" else "partner.reactivated",
                   f"partner:{code}", {"from": before, "staff_tokens_revoked": revoked},
                   partner_id=partner.id)
        uow.commit()
        return describe(partner)
