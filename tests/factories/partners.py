"""Partners: the one recipe for a test partner, its rate card and its client."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask.testing import FlaskClient

from tests.factories.tokens import partner_headers

#: a merchant earning 1 point per GBP, issued at 0.01 and redeemed at 0.008 a point
DEFAULTS: dict[str, Any] = dict(kind="merchant", currency="GBP", earn_rate=Decimal("1"),
                                issue_price=Decimal("0.01"), redeem_rate=Decimal("0.008"))


def new_partner(code: str, **fields: Any) -> dict[str, Any]:
    """Partner ``code`` with the defaults above, ``fields`` overriding them."""
    from partners.service import create_partner

    spec: dict[str, Any] = {"name": code.title(), **DEFAULTS, **fields}
    return create_partner(code=code, **spec)  # type: ignore[no-any-return]


def partner_maker(client: FlaskClient) -> Any:
    """``make(code="acme", *, scopes=every partner scope, **fields) -> (partner dict,
    headers with a token of those scopes)`` (the ``make_partner`` fixture)."""
    from coalition.oauth.models import PARTNER_SCOPES

    def make(code: str = "acme", *, scopes: tuple[str, ...] = PARTNER_SCOPES,
             **fields: Any) -> tuple[dict[str, Any], dict[str, str]]:
        partner = new_partner(code, **fields)
        return partner, partner_headers(client, code, scopes)

    return make
