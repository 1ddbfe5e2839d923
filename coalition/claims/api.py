"""``/v1/me/claims``: a member's missing-points claims."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.claims import opening, queries
from coalition.claims.schemas import (
    ClaimPageSchema,
    ClaimQueryArgsSchema,
    ClaimRequestSchema,
    ClaimSchema,
)
from coalition.errors import Forbidden
from coalition.http.guard import protected
from coalition.oauth.server import current_principal

blp = Blueprint("member_claims_api", __name__, url_prefix="/v1/me",
                description="Member: missing-points claims")


def _member_id() -> int:
    member_id = current_principal().member_id
    if member_id is None:
        raise Forbidden("This call needs a member's token.")
    return member_id


@blp.route("/claims")
class Claims(MethodView):
    @protected("member", kinds=("public",))
    @blp.arguments(ClaimRequestSchema())
    @blp.response(201, ClaimSchema)
    @blp.alt_response(409, description="already_booked (the partner booked partner_txn_id), "
                      "already_exists (this receipt was claimed before), claim_limit (as "
                      "many open claims as the program allows), member_closed, member_merged")
    @blp.alt_response(422, description="invalid_request: outside the claim window or the "
                      "late-posting limit, in the future, a partner that takes no claims, "
                      "another currency than the partner's")
    def post(self, data: dict[str, Any]) -> Any:
        """Claim points for a purchase the partner did not book."""
        return opening.open_claim(_member_id(), data)

    @protected("member", kinds=("public",))
    @blp.arguments(ClaimQueryArgsSchema(), location="query")
    @blp.response(200, ClaimPageSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Your claims and their status, newest first; follow ``next_cursor`` for more."""
        return queries.member_claims(_member_id(), args)
