"""Funding: the partner's view (``GET /v1/funding``) and the operator's
(``/v1/admin/partners/{code}/funding``), API.md "Partner operations"."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from coalition.audit.views import current_actor
from coalition.http.guard import protected
from coalition.oauth.server import current_principal
from coalition.schemas import (
    MAX_POINTS,
    Currency,
    DecimalString,
    PointsField,
    StrictInteger,
    StrictSchema,
    UTCTimestamp,
)
from partners import funding
from partners.models import BLOCK_KINDS, FUNDING_MODELS

blp = Blueprint("partner_funding", __name__, url_prefix="/v1",
                description="Funding: point blocks bought, credit limits")



class TopUpSchema(StrictSchema):
    points = PointsField(required=True)
    price = DecimalString(required=True, metadata={"description": "money for the block"})
    currency = Currency(required=True)


class FundingChangeSchema(StrictSchema):
    """A block bought (``points, price, currency, reserve?``: the partner is prepaid) or
    the post-paid credit limit; either may also set the threshold and the top-up."""

    points = PointsField(metadata={"description": "a block of points bought"})
    price = DecimalString(metadata={"description": "what the block cost"})
    currency = Currency()
    reserve = fields.Boolean(load_default=False, metadata={
        "description": "held back until the other blocks run out"})
    credit_limit_points = StrictInteger(allow_none=True, validate=validate.Range(
        min=0, max=MAX_POINTS), metadata={
        "description": "post-paid: points issued and not yet settled may not exceed it "
                       "(null: no limit)"})
    low_threshold_points = StrictInteger(allow_none=True, validate=validate.Range(
        min=1, max=MAX_POINTS), metadata={
        "description": "funding.low is raised once each time the points left fall below it"})
    auto_topup = fields.Nested(TopUpSchema, allow_none=True, metadata={
        "description": "prepaid: a block bought automatically when the others run out"})

    @validates_schema
    def _block(self, data: dict[str, Any], **kwargs: Any) -> None:
        block = [name for name in ("points", "price", "currency") if name in data]
        if block and len(block) != 3:
            raise ValidationError("A block needs points, price and currency.",
                                  field_name="points")
        if data.get("reserve") and not block:
            raise ValidationError("reserve describes a block.", field_name="reserve")
        if not block and not {"credit_limit_points", "low_threshold_points",
                              "auto_topup"} & set(data):
            raise ValidationError("Give a block, a credit limit, a threshold or a top-up.",
                                  field_name="_schema")


class BlockSchema(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"enum": list(BLOCK_KINDS)})
    points = fields.Integer()
    price = DecimalString()
    currency = fields.String()
    bought_at = UTCTimestamp()
    activated_at = UTCTimestamp(allow_none=True, metadata={
        "description": "when its points became usable (a reserve: when it took over)"})


class TopUpOutSchema(Schema):
    points = fields.Integer()
    price = DecimalString()
    currency = fields.String()


class FundingSchema(Schema):
    model = fields.String(metadata={"enum": list(FUNDING_MODELS)})
    available_points = fields.Integer(allow_none=True, metadata={
        "description": "points that may still be issued (null: post-paid without a limit)"})
    reserve_points = fields.Integer()
    credit_limit_points = fields.Integer(allow_none=True)
    unsettled_points = fields.Integer(allow_none=True, metadata={
        "description": "post-paid: points issued since the last closed settlement period"})
    low_threshold_points = fields.Integer(allow_none=True)
    auto_topup = fields.Nested(TopUpOutSchema, allow_none=True)
    since = UTCTimestamp(allow_none=True)
    blocks = fields.List(fields.Nested(BlockSchema))


@blp.route("/funding")
class Funding(MethodView):
    @protected("settlement:read", kinds=("partner",))
    @blp.response(200, FundingSchema)
    def get(self) -> Any:
        """Your funding: prepaid or post-paid, points left, blocks bought."""
        partner_id = current_principal().partner_id
        assert partner_id is not None
        return funding.funding(partner_id)


@blp.route("/admin/partners/<code>/funding")
class PartnerFunding(MethodView):
    @protected("admin", kinds=("operator",))
    @blp.response(200, FundingSchema)
    @blp.alt_response(404, description="No such partner")
    def get(self, code: str) -> Any:
        """A partner's funding."""
        return funding.partner_funding(code)

    @protected("admin", kinds=("operator",))
    @blp.arguments(FundingChangeSchema())
    @blp.response(201, FundingSchema)
    @blp.alt_response(404, description="No such partner")
    def post(self, data: dict[str, Any], code: str) -> Any:
        """Record a point block bought, or set the post-paid credit limit (and the low
        threshold and automatic top-up)."""
        return funding.configure(code, data, actor=current_actor())
