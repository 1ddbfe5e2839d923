"""A demo coalition: an operator client, two merchants and a charity, with rate cards."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from coalition.audit.service import SYSTEM, Actor
from coalition.db import read
from coalition.models import Partner
from coalition.oauth.clients import create_operator_client
from coalition.oauth.models import PARTNER_SCOPES
from coalition.program.service import publish_rules

DEMO_PARTNERS = (
    dict(code="northwind", name="Northwind Grocers", kind="merchant", currency="GBP",
         earn_rate=Decimal("1"), issue_price=Decimal("0.0100"), redeem_rate=Decimal("0.0080")),
    dict(code="skyline", name="Skyline Fuel", kind="merchant", currency="GBP",
         earn_rate=Decimal("2"), issue_price=Decimal("0.0090"), redeem_rate=Decimal("0.0085")),
    dict(code="greenhearts", name="Green Hearts Trust", kind="charity", currency="GBP",
         earn_rate=Decimal("0"), issue_price=Decimal("0"), redeem_rate=Decimal("0.0100")),
)

DEMO_RULES: dict[str, Any] = {
    "pending_days": 0,
    "expiry": {"policy": "fixed", "months": 24},
    "tiers": [
        {"code": "blue", "name": "Blue", "threshold": 0, "multiplier": Decimal("1")},
        {"code": "silver", "name": "Silver", "threshold": 5000, "multiplier": Decimal("1.25")},
        {"code": "gold", "name": "Gold", "threshold": 20000, "multiplier": Decimal("1.5")},
    ],
    "bonuses": {"welcome": 100, "birthday": 250},
    "transfers": {"enabled": True, "min_points": 100, "max_points": 50000,
                  "max_points_per_day": 100000},
    "holds": {"default_seconds": 900, "max_seconds": 7 * 86400},
    "earn_reversal_after_spend": "take_from_other_lots",
    "terms": "Earn points at every partner and spend them at any. Points have no cash value.",
}


def load_demo(actor: Actor = SYSTEM) -> dict[str, Any] | None:
    """Create the demo coalition, or return ``None`` if partners already exist."""
    from partners.service import create_partner, issue_partner_client

    with read() as session:
        if session.scalar(select(Partner.id).limit(1)) is not None:
            return None
    operator = create_operator_client(["admin", "settlement:run"], name="demo operator",
                                      actor=actor)
    issued = [{"for": "operator", "client_id": operator.client_id,
               "client_secret": operator.client_secret, "scopes": operator.scopes}]
    for spec in DEMO_PARTNERS:
        create_partner(**spec, actor=actor)
        client = issue_partner_client(spec["code"], list(PARTNER_SCOPES), actor=actor)
        issued.append({"for": spec["code"], "client_id": client.client_id,
                       "client_secret": client.client_secret, "scopes": client.scopes})
    publish_rules(DEMO_RULES, published_by=operator.client_id, actor=actor)
    return {"loaded": True, "clients": issued}
