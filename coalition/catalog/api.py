"""The catalog over HTTP (API.md): ``/v1/rewards`` (the public catalog, and the rewards a
partner fulfils), ``/v1/vouchers/{code}`` (the partner's till), ``/v1/me/redemptions`` and
``/v1/me/vouchers`` (members).

Rewards and vouchers are a partner's redemptions, so a partner's calls need
``points:burn``; the operator (``admin``) publishes and changes coalition rewards.
``GET /v1/rewards`` without a token is the public catalog (what is on offer now); with
``?mine=true`` and a partner token it lists every reward that partner fulfils, inactive
ones included.
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.audit.views import current_actor
from coalition.catalog import redemptions, rewards, vouchers
from coalition.catalog.schemas import (
    MemberVoucherListSchema,
    RedemptionRequestSchema,
    RedemptionSchema,
    RewardCreateSchema,
    RewardListArgsSchema,
    RewardListSchema,
    RewardSchema,
    RewardUpdateSchema,
    VoucherSchema,
)
from coalition.errors import Forbidden, InsufficientScope
from coalition.http.guard import protected
from coalition.ledger.idempotency import Outcome
from coalition.member.ledger_api import IdempotencyHeaderSchema
from coalition.oauth.server import current_principal, require_token

blp = Blueprint("catalog", __name__, url_prefix="/v1",
                description="Rewards catalog and vouchers")
member_blp = Blueprint("member_catalog", __name__, url_prefix="/v1/me",
                       description="Member: redeeming rewards, vouchers")

_ID = "int(max=9223372036854775807)"
_REPLAY = {"Idempotent-Replayed": {"description": "true when this is the original result "
                                   "of an earlier request with the same Idempotency-Key",
                                   "schema": {"type": "string"}}}


def _publisher() -> int | None:
    """The partner a reward call acts for, or None for the operator."""
    principal = current_principal()
    if principal.kind == "operator" and "admin" in principal.scopes:
        return None
    if principal.kind == "partner" and "points:burn" in principal.scopes:
        assert principal.partner_id is not None
        return principal.partner_id
    raise InsufficientScope("This call needs a partner token with points:burn, or the "
                            "operator's admin scope.")


def _partner_id() -> int:
    partner_id = current_principal().partner_id
    assert partner_id is not None, "partner tokens always carry their partner"
    return partner_id


def _answer(outcome: Outcome, status: int) -> tuple[dict[str, Any], int, dict[str, str]]:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return outcome.body, status, headers


@blp.route("/rewards")
class Rewards(MethodView):
    @blp.arguments(RewardListArgsSchema(), location="query")
    @blp.response(200, RewardListSchema)
    @blp.alt_response(401, description="?mine=true without a token")
    @blp.alt_response(403, description="?mine=true with a token that is not a partner's "
                      "with points:burn")
    @blp.doc(security=[{}, {"oauth2": ["points:burn"]}])
    def get(self, args: dict[str, Any]) -> Any:
        """The catalog: rewards on offer now, cheapest first (no token needed); with
        ?mine=true and a partner token, every reward you fulfil."""
        if args["mine"]:
            principal = require_token(["points:burn"], ("partner",))
            assert principal.partner_id is not None
            return {"items": rewards.catalog(partner_id=principal.partner_id,
                                             include_inactive=True)}
        return {"items": rewards.catalog()}

    @protected("points:burn", "admin", any_of=True, kinds=("partner", "operator"))
    @blp.arguments(RewardCreateSchema())
    @blp.response(201, RewardSchema)
    @blp.alt_response(422, description="invalid_request, e.g. valid_to before valid_from, "
                      "or a coalition reward without its fulfilling partner")
    def post(self, data: dict[str, Any]) -> Any:
        """Publish a reward you fulfil (the operator: a coalition reward, naming the
        partner that fulfils it)."""
        return rewards.publish(_publisher(), data, actor=current_actor())


@blp.route(f"/rewards/<{_ID}:reward_id>")
class RewardResource(MethodView):
    @blp.response(200, RewardSchema)
    @blp.alt_response(404, description="No such reward, or not published (inactive)")
    def get(self, reward_id: int) -> Any:
        """One reward of the catalog."""
        return rewards.reward(reward_id, published_only=True)

    @protected("points:burn", "admin", any_of=True, kinds=("partner", "operator"))
    @blp.arguments(RewardUpdateSchema())
    @blp.response(200, RewardSchema)
    @blp.alt_response(403, description="A coalition reward is changed by the operator")
    @blp.alt_response(404, description="No reward of yours has this id")
    @blp.alt_response(422, description="invalid_request, e.g. a stock below the units sold")
    def patch(self, data: dict[str, Any], reward_id: int) -> Any:
        """Change a reward you fulfil: its details, price, stock, validity; active: false
        takes it off the catalog (vouchers issued stay valid)."""
        return rewards.update(_publisher(), reward_id, data, actor=current_actor())


@blp.route("/vouchers/<string(maxlength=64):code>")
class VoucherResource(MethodView):
    @protected("points:burn", kinds=("partner",))
    @blp.response(200, VoucherSchema)
    @blp.alt_response(404, description="No voucher of yours has this code")
    def get(self, code: str) -> Any:
        """Check a voucher at your till: its reward and whether it can be used."""
        return vouchers.check(_partner_id(), code)


@blp.route("/vouchers/<string(maxlength=64):code>/redeem")
class VoucherRedeem(MethodView):
    @protected("points:burn", kinds=("partner",))
    @blp.arguments(IdempotencyHeaderSchema(), location="headers")
    @blp.response(200, VoucherSchema, headers=_REPLAY)
    @blp.alt_response(404, description="No voucher of yours has this code")
    @blp.alt_response(409, description="voucher_used (used already, by another request), "
                      "voucher_expired (past its expiry, refunded or forfeited)")
    def post(self, headers: dict[str, Any], code: str) -> Any:
        """Mark a voucher used at your till; a retry with the same Idempotency-Key answers
        with the original result."""
        return _answer(vouchers.use(_partner_id(), code,
                                    request_id=headers.get("idempotency_key")), 200)


def _member_id() -> int:
    member_id = current_principal().member_id
    if member_id is None:
        raise Forbidden("This call needs a member's token.")
    return member_id


@member_blp.route("/redemptions")
class Redemptions(MethodView):
    @protected("member", kinds=("public",))
    @member_blp.arguments(RedemptionRequestSchema())
    @member_blp.arguments(IdempotencyHeaderSchema(), location="headers")
    @member_blp.response(201, RedemptionSchema, headers=_REPLAY)
    @member_blp.alt_response(409, description="insufficient_points, out_of_stock (sold out, "
                             "your limit reached, or not on offer now), member_closed, "
                             "member_merged, idempotency_conflict, period_closed")
    @member_blp.alt_response(422, description="invalid_request, e.g. no such reward")
    def post(self, data: dict[str, Any], headers: dict[str, Any]) -> Any:
        """Redeem a reward: its points are burned at the partner that fulfils it and you
        get a voucher to show there."""
        return _answer(redemptions.redeem(_member_id(), data["reward_id"],
                                          request_id=headers.get("idempotency_key")), 201)


@member_blp.route("/vouchers")
class MemberVouchers(MethodView):
    @protected("member", kinds=("public",))
    @member_blp.response(200, MemberVoucherListSchema)
    def get(self) -> Any:
        """Your vouchers, newest first."""
        return {"items": redemptions.vouchers_of(_member_id())}
