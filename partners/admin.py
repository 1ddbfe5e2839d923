"""Operator API: partners, rate cards, partner clients and partner portal accounts
(``/v1/admin/partners``)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.audit.views import current_actor
from coalition.http.guard import protected
from coalition.oauth import clients, partner_users
from partners import service
from partners.schemas import (
    ClientCreateSchema,
    ClientSchema,
    IssuedClientSchema,
    IssuedPartnerUserSchema,
    PartnerCreateSchema,
    PartnerSchema,
    PartnerUserCreateSchema,
    PartnerUserSchema,
    RateCardCreateSchema,
    RateCardSchema,
    RoleChangeSchema,
)

blp = Blueprint("admin_partners", __name__, url_prefix="/v1/admin/partners",
                description="Operator: partners, rate cards and partner clients")

_OPERATOR = ("operator",)


@blp.route("")
class Partners(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, PartnerSchema(many=True))
    def get(self) -> list[dict[str, Any]]:
        """List partners with their rate cards."""
        return service.list_partners()

    @protected("admin", kinds=_OPERATOR)
    @blp.arguments(PartnerCreateSchema())
    @blp.response(201, PartnerSchema)
    @blp.alt_response(409, description="The code is taken")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Onboard a partner with its first rate card."""
        return service.create_partner(**data, actor=current_actor())


@blp.route("/<code>")
class PartnerResource(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, PartnerSchema)
    @blp.alt_response(404, description="No such partner")
    def get(self, code: str) -> dict[str, Any]:
        """A partner with its rate cards."""
        return service.get_partner(code)


@blp.route("/<code>/suspend")
class PartnerSuspend(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, PartnerSchema)
    @blp.alt_response(404, description="No such partner")
    def post(self, code: str) -> dict[str, Any]:
        """Suspend a partner: its portal staff are signed out and cannot sign in until it
        is reactivated."""
        return service.set_status(code, "suspended", actor=current_actor())


@blp.route("/<code>/reactivate")
class PartnerReactivate(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, PartnerSchema)
    @blp.alt_response(404, description="No such partner")
    def post(self, code: str) -> dict[str, Any]:
        """Let a suspended partner back in: its staff can sign in again."""
        return service.set_status(code, "active", actor=current_actor())


@blp.route("/<code>/rates")
class PartnerRates(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.arguments(RateCardCreateSchema())
    @blp.response(201, RateCardSchema)
    @blp.alt_response(404, description="No such partner")
    @blp.alt_response(409, description="period_closed: valid_from falls in a closed "
                      "settlement period, or one being closed")
    def post(self, data: dict[str, Any], code: str) -> dict[str, Any]:
        """Add a rate card after the latest, or before the first (to bring the partner's
        start forward); earlier cards are kept and never edited."""
        return service.add_rate_card(code, **data, actor=current_actor())


@blp.route("/<code>/clients")
class PartnerClients(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, ClientSchema(many=True))
    @blp.alt_response(404, description="No such partner")
    def get(self, code: str) -> list[Any]:
        """The partner's OAuth clients (secrets are never shown again)."""
        return clients.list_clients(partner_id=service.partner_id(code))

    @protected("admin", kinds=_OPERATOR)
    @blp.arguments(ClientCreateSchema())
    @blp.response(201, IssuedClientSchema)
    @blp.alt_response(404, description="No such partner")
    def post(self, data: dict[str, Any], code: str) -> Any:
        """Issue an OAuth client to the partner; the secret is shown once."""
        return service.issue_partner_client(code, data["scopes"], data["name"],
                                            actor=current_actor())


@blp.route("/<code>/clients/<client_id>/secret")
class PartnerClientSecret(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, IssuedClientSchema)
    @blp.alt_response(404, description="No such active client of this partner")
    def post(self, code: str, client_id: str) -> Any:
        """Rotate a client's secret; the old secret and its tokens stop working."""
        return clients.rotate_secret(client_id, partner_id=service.partner_id(code),
                                     actor=current_actor())


@blp.route("/<code>/clients/<client_id>")
class PartnerClient(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(204)
    @blp.alt_response(404, description="No such active client of this partner")
    def delete(self, code: str, client_id: str) -> None:
        """Revoke a client and every token issued to it."""
        clients.revoke_client(client_id, partner_id=service.partner_id(code),
                              actor=current_actor())


@blp.route("/<code>/users")
class PartnerUsers(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, PartnerUserSchema(many=True))
    @blp.alt_response(404, description="No such partner")
    def get(self, code: str) -> list[dict[str, Any]]:
        """The partner's portal accounts."""
        return partner_users.list_users(code)

    @protected("admin", kinds=_OPERATOR)
    @blp.arguments(PartnerUserCreateSchema())
    @blp.response(201, IssuedPartnerUserSchema)
    @blp.alt_response(404, description="No such partner")
    @blp.alt_response(409, description="The login is taken")
    def post(self, data: dict[str, Any], code: str) -> dict[str, Any]:
        """A partner portal account, with its one-time activation code (shown once)."""
        return partner_users.create_user(code, data["login"], data["name"], data["role"],
                                         actor=current_actor())


@blp.route("/<code>/users/<login>")
class PartnerUserResource(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, PartnerUserSchema)
    @blp.alt_response(404, description="No such account of this partner")
    def delete(self, code: str, login: str) -> dict[str, Any]:
        """Disable a portal account: no further sign-in, and its tokens stop working."""
        return partner_users.disable_user(code, login, actor=current_actor())

    @protected("admin", kinds=_OPERATOR)
    @blp.arguments(RoleChangeSchema())
    @blp.response(200, PartnerUserSchema)
    @blp.alt_response(404, description="No such account of this partner")
    def patch(self, data: dict[str, Any], code: str, login: str) -> dict[str, Any]:
        """Give a portal account another role (from the person's next request)."""
        return partner_users.change_role(code, login, data["role"], actor=current_actor())
