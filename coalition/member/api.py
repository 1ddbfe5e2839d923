"""The member's own API (``/v1/me``, member tokens only) and account activation."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.http.guard import protected
from coalition.ledger import members
from coalition.member import account, signin
from coalition.member.schemas import (
    ActivatedSchema,
    ActivationSchema,
    ConsentListSchema,
    ConsentRequestSchema,
    ConsentSchema,
    MeSchema,
    MeTransactionPageSchema,
    MeTransactionQueryArgsSchema,
)
from coalition.oauth.server import current_principal

blp = Blueprint("me", __name__, url_prefix="/v1", description="Members: their own account")

#: member tokens come from public clients through the authorization-code grant
MEMBER_KINDS = ("public",)


def member_id() -> int:
    member = current_principal().member_id
    assert member is not None, "public-client tokens always act for a member"
    return member


@blp.route("/me")
class Me(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.response(200, MeSchema)
    def get(self) -> dict[str, Any]:
        """One balance across every partner: pending, held, expiring, origin, tier."""
        return account.summary(member_id())


@blp.route("/me/transactions")
class MeTransactions(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.arguments(MeTransactionQueryArgsSchema(), location="query")
    @blp.response(200, MeTransactionPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every entry of the member across all partners, newest first."""
        return account.transactions(member_id(), args)


@blp.route("/me/consents")
class MeConsents(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.response(200, ConsentListSchema)
    def get(self) -> dict[str, Any]:
        """Every partner, and whether you share your personal data with it."""
        return {"items": members.consents(member_id())}


@blp.route("/me/consents/<partner>")
class MeConsent(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.arguments(ConsentRequestSchema())
    @blp.response(200, ConsentSchema)
    @blp.alt_response(404, description="not_found: no such partner")
    @blp.alt_response(409, description="member_closed: the account is closed or merged")
    def put(self, data: dict[str, Any], partner: str) -> dict[str, Any]:
        """Share your name, e-mail and birth date with a partner, or stop sharing them.

        Without your consent a partner sees only the personal data it supplied itself
        (none when it linked your existing member number)."""
        return members.set_consent(member_id(), partner, data["share"])


@blp.route("/members/activate")
class Activate(MethodView):
    @blp.arguments(ActivationSchema())
    @blp.response(200, ActivatedSchema)
    @blp.alt_response(422, description="activation_failed: wrong number or code, or the "
                      "code was already used")
    @blp.alt_response(429, description="rate_limited: too many failed attempts; see "
                      "Retry-After")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Activate an account with the code from enrolment, choosing a password."""
        member = signin.activate(data["member_number"], data["activation_code"],
                                 data["password"])
        return {"member_number": member.member_number, "activated": True}
