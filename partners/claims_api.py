"""``/v1/claims``: members' missing-points claims at the calling partner, confirmed (the
earn booked as ``POST /v1/earn`` books it, with its funding and webhook) or refused."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.claims import answers, queries
from coalition.claims.schemas import (
    ClaimPageSchema,
    ClaimQueryArgsSchema,
    ClaimSchema,
    RefuseSchema,
)
from coalition.http.guard import protected
from coalition.ledger.booking import PartnerRef
from coalition.oauth.server import current_principal
from partners.claims_booking import book_reported

blp = Blueprint("partner_claims_api", __name__, url_prefix="/v1",
                description="Partner: members' missing-points claims")

_PARTNER = ("partner",)
#: ids are 64-bit: a larger one in a path names nothing (404)
_ID = "int(max=9223372036854775807)"
_REPLAYED = {"Idempotent-Replayed": {"description": "true when the claim was answered so "
                                     "already (nothing was done now)",
                                     "schema": {"type": "string"}}}


def _partner() -> PartnerRef:
    """The calling partner, as its token already told us."""
    principal = current_principal()
    assert principal.partner_id is not None and principal.partner_code is not None
    return PartnerRef(principal.partner_id, principal.partner_code,
                      principal.partner_currency or "")


def _answer(answer: tuple[dict[str, Any], bool]) -> tuple[dict[str, Any], int, dict[str, str]]:
    claim, replayed = answer
    return claim, 200, {"Idempotent-Replayed": "true"} if replayed else {}


@blp.route("/claims")
class Claims(MethodView):
    @protected("transactions:read", kinds=_PARTNER)
    @blp.arguments(ClaimQueryArgsSchema(), location="query")
    @blp.response(200, ClaimPageSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Members' claims at your stores, newest first; ``status=open`` for those to answer."""
        return queries.partner_claims(_partner().id, args)


@blp.route(f"/claims/<{_ID}:claim_id>")
class ClaimResource(MethodView):
    @protected("transactions:read", kinds=_PARTNER)
    @blp.response(200, ClaimSchema)
    @blp.alt_response(404, description="No such claim at your stores")
    def get(self, claim_id: int) -> Any:
        """One claim."""
        return queries.partner_claim(_partner().id, claim_id)


@blp.route(f"/claims/<{_ID}:claim_id>/confirm")
class ClaimConfirm(MethodView):
    @protected("points:earn", kinds=_PARTNER)
    @blp.response(200, ClaimSchema, headers=_REPLAYED)
    @blp.alt_response(404, description="No such claim at your stores")
    @blp.alt_response(409, description="claim_answered (refused already), already_booked "
                      "(its partner_txn_id is booked as something else), member_closed, "
                      "no_rate_card, balance_limit, insufficient_funding, period_closed")
    def post(self, claim_id: int) -> Any:
        """Confirm the claim: its earn is booked (once, however often this is sent)."""
        partner = _partner()
        return _answer(answers.confirm(partner, claim_id, "api", book=book_reported))


@blp.route(f"/claims/<{_ID}:claim_id>/refuse")
class ClaimRefuse(MethodView):
    @protected("points:earn", kinds=_PARTNER)
    @blp.arguments(RefuseSchema())
    @blp.response(200, ClaimSchema, headers=_REPLAYED)
    @blp.alt_response(404, description="No such claim at your stores")
    @blp.alt_response(409, description="claim_answered (confirmed already)")
    def post(self, data: dict[str, Any], claim_id: int) -> Any:
        """Refuse the claim, saying why (the member is told)."""
        return _answer(answers.refuse(_partner(), claim_id, data["reason"], "api"))
