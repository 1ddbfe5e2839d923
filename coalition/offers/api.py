"""Promotions: ``/v1/offers`` (a partner's own), ``/v1/admin/offers`` (the operator's,
for the coalition or several funders) and ``/v1/me/offers`` (a member's open offers)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.audit.views import current_actor
from coalition.http.guard import protected
from coalition.member.api import MEMBER_KINDS, member_id
from coalition.oauth.server import current_principal
from coalition.offers import member_offers, publishing
from coalition.offers.schemas import (
    AdminOfferCreateSchema,
    MemberOfferListSchema,
    MemberOfferSchema,
    OfferCreateSchema,
    OfferListSchema,
    OfferSchema,
)

blp = Blueprint("offers", __name__, url_prefix="/v1", description="Promotions")

_ID = "int(max=9223372036854775807)"


def _partner_id() -> int:
    partner_id = current_principal().partner_id
    assert partner_id is not None, "partner tokens always carry their partner"
    return partner_id


@blp.route("/offers")
class Offers(MethodView):
    # a partner that issues points may fund promotions on its own earns
    @protected("points:earn", kinds=("partner",))
    @blp.arguments(OfferCreateSchema())
    @blp.response(201, OfferSchema)
    @blp.alt_response(422, description="A rule, period, tier or cost share that does not fit")
    def post(self, data: dict[str, Any]) -> Any:
        """Publish a promotion on your earns, funded by you."""
        return publishing.publish(data, partner_id=_partner_id(), actor=current_actor())

    @protected("points:earn", kinds=("partner",))
    @blp.response(200, OfferListSchema)
    def get(self) -> Any:
        """The promotions you fund a share of, with the points issued against each cap."""
        return {"offers": publishing.funded_by(_partner_id())}


@blp.route("/admin/offers")
class AdminOffers(MethodView):
    @protected("admin", kinds=("operator",))
    @blp.arguments(AdminOfferCreateSchema())
    @blp.response(201, OfferSchema)
    @blp.alt_response(422, description="A rule, period, tier, partner or cost share that "
                      "does not fit")
    def post(self, data: dict[str, Any]) -> Any:
        """Publish a promotion funded by the coalition or shared among funders."""
        return publishing.publish(data, partner_id=None, actor=current_actor())

    @protected("admin", kinds=("operator",))
    @blp.response(200, OfferListSchema)
    def get(self) -> Any:
        """Every promotion, with the points issued against each cap."""
        return {"offers": publishing.funded_by(None)}


@blp.route("/me/offers")
class MeOffers(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.response(200, MemberOfferListSchema)
    def get(self) -> Any:
        """The offers open to you now."""
        return {"offers": member_offers.open_to(member_id())}


@blp.route(f"/me/offers/<{_ID}:offer_id>/activate")
class MeOfferActivation(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.response(200, MemberOfferSchema)
    @blp.alt_response(404, description="No such offer open to you")
    @blp.alt_response(422, description="The offer applies without activation")
    def post(self, offer_id: int) -> Any:
        """Activate an opt-in offer (again: no change)."""
        return member_offers.activate(member_id(), offer_id)
