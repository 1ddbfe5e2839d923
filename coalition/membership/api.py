"""The membership API: the plans (public), a member's own memberships (buy with points,
auto-renew, cancel), and a partner's record of a membership it sold for money.

Thin: parse, call one use case, serialise.
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition import clock
from coalition.errors import Forbidden
from coalition.http.guard import protected
from coalition.ledger.booking import PartnerRef
from coalition.ledger.idempotency import Outcome
from coalition.member.ledger_api import IdempotencyHeaderSchema
from coalition.membership import changes, purchase, queries
from coalition.membership.plans import plans_on_sale
from coalition.membership.schemas import (
    BuyRequestSchema,
    ChangeRequestSchema,
    MembershipSchema,
    MoneyPurchaseRequestSchema,
    MyMembershipsSchema,
    PlansSchema,
    PurchaseSchema,
)
from coalition.oauth.server import current_principal

blp = Blueprint("memberships", __name__, url_prefix="/v1",
                description="Paid membership: plans, a member's memberships, partner sales")

_MEMBER = ("public",)
_PARTNER = ("partner",)
_REPLAY = {"Idempotent-Replayed": {"description": "true when this is the original result "
                                   "of an earlier request with the same key",
                                   "schema": {"type": "string"}}}


def _member_id() -> int:
    member_id = current_principal().member_id
    if member_id is None:
        raise Forbidden("This call needs a member's token.")
    return member_id


def _partner() -> PartnerRef:
    principal = current_principal()
    assert principal.partner_id is not None and principal.partner_code is not None
    return PartnerRef(principal.partner_id, principal.partner_code,
                      principal.partner_currency or "")


def _answer(outcome: Outcome) -> tuple[dict[str, Any], int, dict[str, str]]:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return outcome.body, 201, headers


@blp.route("/program/memberships")
class Plans(MethodView):
    @blp.response(200, PlansSchema)
    def get(self) -> dict[str, Any]:
        """The paid membership plans on sale (public)."""
        return plans_on_sale()


@blp.route("/me/memberships")
class MyMemberships(MethodView):
    @protected("member", kinds=_MEMBER)
    @blp.response(200, MyMembershipsSchema)
    def get(self) -> dict[str, Any]:
        """Your current membership and every period you paid for, newest first."""
        return queries.memberships_of(_member_id(), clock.utcnow())

    @protected("member", kinds=_MEMBER)
    @blp.arguments(BuyRequestSchema())
    @blp.arguments(IdempotencyHeaderSchema(), location="headers")
    @blp.response(201, PurchaseSchema, headers=_REPLAY)
    @blp.alt_response(409, description="membership_active (one plan at a time), "
                      "insufficient_points, member_closed, member_merged, "
                      "idempotency_conflict, period_closed")
    @blp.alt_response(422, description="invalid_request: no such plan, or one sold for "
                      "money only")
    def post(self, data: dict[str, Any], headers: dict[str, Any]) -> Any:
        """Buy a membership plan with points; it starts now."""
        return _answer(purchase.buy_with_points(_member_id(), data["plan"],
                                                data["auto_renew"],
                                                request_id=headers.get("idempotency_key")))


@blp.route("/me/memberships/current")
class CurrentMembership(MethodView):
    @protected("member", kinds=_MEMBER)
    @blp.arguments(ChangeRequestSchema())
    @blp.response(200, MembershipSchema)
    @blp.alt_response(404, description="You hold no membership in force")
    @blp.alt_response(409, description="member_closed, member_merged")
    @blp.alt_response(422, description="invalid_request: a cancelled membership does not "
                      "renew")
    def patch(self, data: dict[str, Any]) -> Any:
        """Choose whether your membership renews with points at the end of its period."""
        return changes.set_auto_renew(_member_id(), data["auto_renew"])

    @protected("member", kinds=_MEMBER)
    @blp.response(200, MembershipSchema)
    @blp.alt_response(404, description="You hold no membership in force")
    @blp.alt_response(409, description="member_closed, member_merged")
    def delete(self) -> Any:
        """Cancel your membership: its benefits last to the end of the period paid for, it
        does not renew, and nothing is refunded."""
        return changes.cancel(_member_id())


@blp.route("/memberships")
class MoneyPurchases(MethodView):
    @protected("members:write", kinds=_PARTNER)
    @blp.arguments(MoneyPurchaseRequestSchema())
    @blp.response(201, PurchaseSchema, headers=_REPLAY)
    @blp.alt_response(404, description="No such member")
    @blp.alt_response(409, description="membership_active, member_closed, member_merged, "
                      "idempotency_conflict, period_closed")
    @blp.alt_response(422, description="invalid_request: no such plan, one not sold for "
                      "money, a price other than the plan's, or another currency than yours")
    def post(self, data: dict[str, Any]) -> Any:
        """Record a membership you sold for money: it starts now, and the price appears on
        your statement as collected for the coalition."""
        return _answer(purchase.record_money_purchase(_partner(), data))
