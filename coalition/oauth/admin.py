"""Operator API for OAuth clients that belong to no partner (``/v1/admin/clients``):
public clients, through which members sign in (a member app, the member page)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from coalition.audit.views import current_actor
from coalition.http.guard import protected
from coalition.oauth import clients
from coalition.schemas import StrictSchema, UTCTimestamp

blp = Blueprint("admin_clients", __name__, url_prefix="/v1/admin/clients",
                description="Operator: public clients for member sign-in")

_OPERATOR = ("operator",)


class PublicClientCreateSchema(StrictSchema):
    kind = fields.String(load_default="public", validate=validate.OneOf(["public"]),
                         metadata={"description": "only public clients are created here"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200),
                         metadata={"description": "shown to members when they sign in"})
    redirect_uris = fields.List(
        fields.String(validate=validate.Length(min=1, max=2000)), required=True,
        validate=validate.Length(min=1, max=20),
        metadata={"description": "exact URIs the authorization endpoint may redirect to: "
                  "https, http on a loopback host, or a private-use scheme "
                  "(com.example.app:/callback)"})


class AdminClientSchema(Schema):
    client_id = fields.String()
    kind = fields.String(metadata={"enum": ["operator", "partner", "public"]})
    name = fields.String()
    scopes = fields.List(fields.String())
    redirect_uris = fields.List(fields.String())
    token_endpoint_auth_method = fields.Method("_auth_method")
    created_at = UTCTimestamp()
    revoked_at = UTCTimestamp(allow_none=True)

    def _auth_method(self, client: Any) -> str:
        return "none" if client.kind == "public" else "client_secret_basic"


@blp.route("")
class Clients(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(200, AdminClientSchema(many=True))
    def get(self) -> list[Any]:
        """List public clients (partner and operator clients have their own listings)."""
        return clients.list_clients(kind="public")

    @protected("admin", kinds=_OPERATOR)
    @blp.arguments(PublicClientCreateSchema())
    @blp.response(201, AdminClientSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Register a public client (no secret; members sign in with PKCE)."""
        return clients.create_public_client(data["name"], data["redirect_uris"],
                                            actor=current_actor())


@blp.route("/<client_id>")
class PublicClient(MethodView):
    @protected("admin", kinds=_OPERATOR)
    @blp.response(204)
    @blp.alt_response(404, description="No such active client")
    def delete(self, client_id: str) -> None:
        """Revoke a client and every token issued through it."""
        clients.revoke_client(client_id, actor=current_actor())
