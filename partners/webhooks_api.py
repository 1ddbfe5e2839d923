"""The partner's webhooks: endpoints, their deliveries, a replay (API.md "Partner
operations")."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from coalition.audit.views import current_actor
from coalition.http.guard import protected
from coalition.oauth.server import current_principal
from coalition.schemas import CursorQueryArgsSchema, StrictSchema, UTCTimestamp
from partners import webhooks
from partners.models import DELIVERY_STATUSES, EVENT_TYPES

blp = Blueprint("partner_webhooks", __name__, url_prefix="/v1/webhooks",
                description="Webhooks: events pushed to your endpoints, signed")

_PARTNER = ("partner",)
_ID = "int(max=9223372036854775807)"
#: managing webhooks sees the partner's transactions as they are booked
_SCOPE = "transactions:read"


class EndpointCreateSchema(StrictSchema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=2000), metadata={
        "description": "https:// (plain http only to 127.0.0.1, ::1 or localhost)"})
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), required=True,
                         validate=validate.Length(min=1, max=len(EVENT_TYPES)))


class EndpointSchema(Schema):
    id = fields.Integer()
    url = fields.String()
    events = fields.List(fields.String())
    created_at = UTCTimestamp()


class CreatedEndpointSchema(EndpointSchema):
    secret = fields.String(metadata={
        "description": "signs every delivery (Coalition-Signature); shown this once"})


class AttemptSchema(Schema):
    at = UTCTimestamp()
    duration_ms = fields.Integer()
    status_code = fields.Integer(allow_none=True, metadata={
        "description": "the receiver's HTTP status; none when it could not be reached"})
    error = fields.String(allow_none=True)
    response = fields.String(allow_none=True, metadata={
        "description": "the start of the receiver's answer"})


class DeliverySchema(Schema):
    id = fields.Integer()
    event_id = fields.String()
    event_type = fields.String()
    status = fields.String(metadata={"enum": list(DELIVERY_STATUSES)})
    created_at = UTCTimestamp()
    delivered_at = UTCTimestamp(allow_none=True)
    next_attempt_at = UTCTimestamp(allow_none=True)
    give_up_at = UTCTimestamp()
    replay_of = fields.Integer(allow_none=True)
    attempts = fields.List(fields.Nested(AttemptSchema))


class DeliveryQueryArgsSchema(CursorQueryArgsSchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class DeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)


def _partner_id() -> int:
    partner_id = current_principal().partner_id
    assert partner_id is not None, "partner tokens always carry their partner"
    return partner_id


@blp.route("")
class Endpoints(MethodView):
    @protected(_SCOPE, kinds=_PARTNER)
    @blp.arguments(EndpointCreateSchema())
    @blp.response(201, CreatedEndpointSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Register an endpoint for event types; the signing secret is shown once."""
        return webhooks.create_endpoint(_partner_id(), data["url"], data["events"],
                                        actor=current_actor())

    @protected(_SCOPE, kinds=_PARTNER)
    @blp.response(200, EndpointSchema(many=True))
    def get(self) -> Any:
        """Your endpoints."""
        return webhooks.list_endpoints(_partner_id())


@blp.route(f"/<{_ID}:endpoint_id>")
class Endpoint(MethodView):
    @protected(_SCOPE, kinds=_PARTNER)
    @blp.response(204)
    @blp.alt_response(404, description="No such endpoint of yours")
    def delete(self, endpoint_id: int) -> None:
        """Stop sending to an endpoint; its deliveries still pending are given up."""
        webhooks.delete_endpoint(_partner_id(), endpoint_id, actor=current_actor())


@blp.route(f"/<{_ID}:endpoint_id>/deliveries")
class Deliveries(MethodView):
    @protected(_SCOPE, kinds=_PARTNER)
    @blp.arguments(DeliveryQueryArgsSchema(), location="query")
    @blp.response(200, DeliveryPageSchema)
    @blp.alt_response(404, description="No such endpoint of yours")
    def get(self, args: dict[str, Any], endpoint_id: int) -> Any:
        """Deliveries to an endpoint, newest first, with every attempt and its answer."""
        return webhooks.list_deliveries(_partner_id(), endpoint_id, args)


@blp.route(f"/<{_ID}:endpoint_id>/deliveries/<{_ID}:delivery_id>/replay")
class Replay(MethodView):
    @protected(_SCOPE, kinds=_PARTNER)
    @blp.response(202, DeliverySchema)
    @blp.alt_response(404, description="No such delivery of an endpoint of yours")
    def post(self, endpoint_id: int, delivery_id: int) -> Any:
        """Send a delivery's event again (a new delivery, with the same event id)."""
        return webhooks.replay(_partner_id(), endpoint_id, delivery_id,
                               actor=current_actor())
