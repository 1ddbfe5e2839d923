"""The wire formats of promotions (API.md "Partner": ``/v1/offers``; "Members":
``/v1/me/offers``)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate, validates_schema

from coalition.offers.models import RULES
from coalition.schemas import (
    DecimalString,
    PointsField,
    StrictBoolean,
    StrictInteger,
    StrictSchema,
    UTCTimestamp,
    refuse,
)

_SHARE = DecimalString(positive=True, metadata={"example": "0.5"})


class OfferCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    rule = fields.String(required=True, validate=validate.OneOf(RULES), metadata={
        "description": "multiplier: the earn's points × multiplier in all; bonus: "
                       "bonus_points more on each earn from a spend"})
    multiplier = DecimalString(positive=True, places=2, max_digits=3)
    bonus_points = PointsField()
    valid_from = UTCTimestamp(required=True)
    valid_to = UTCTimestamp(required=True)
    tiers = fields.List(fields.String(validate=validate.Length(min=1, max=32)),
                        validate=validate.Length(min=1), metadata={
                            "description": "the tier codes it is for (default: every tier)"})
    new_member_days = StrictInteger(validate=validate.Range(min=1, max=3660), metadata={
        "description": "only for members enrolled within this many days of the earn"})
    opt_in = StrictBoolean(required=True, metadata={
        "description": "the member activates it first (page or POST "
                       "/v1/me/offers/{id}/activate)"})
    cap_points = PointsField(required=True, metadata={
        "description": "the most points it awards in all, net of reversals: a reversal "
                       "of a promoted earn gives back its part of the award, as room "
                       "under the cap; the last earns get what is left"})
    cost_share = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=32)),
                             values=_SHARE, metadata={
                                 "description": "each funder's share of its points, exact "
                                 "decimals adding up to 1 (a partner's code, or coalition); "
                                 "a partner funds its own alone (the default)"})

    @validates_schema
    def _period(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "valid_from" in data and "valid_to" in data and data["valid_to"] <= data["valid_from"]:
            raise refuse("valid_to", "Must be after valid_from.")


class AdminOfferCreateSchema(OfferCreateSchema):
    partners = fields.List(fields.String(validate=validate.Length(min=1, max=32)),
                           required=True, validate=validate.Length(min=1), metadata={
                               "description": "the partners whose earns it applies to"})
    cost_share = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=32)),
                             values=_SHARE, required=True, metadata={
                                 "description": "each funder's share of its points, exact "
                                 "decimals adding up to 1: partners by code, and coalition"})


class OfferSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    rule = fields.String(metadata={"enum": list(RULES)})
    multiplier = DecimalString(allow_none=True)
    bonus_points = fields.Integer(allow_none=True)
    valid_from = UTCTimestamp()
    valid_to = UTCTimestamp()
    tiers = fields.List(fields.String(), allow_none=True)
    new_member_days = fields.Integer(allow_none=True)
    opt_in = fields.Boolean()
    cap_points = fields.Integer()
    issued_points = fields.Integer(metadata={"description": "points awarded so far less "
                                             "what reversals gave back, never above "
                                             "cap_points"})
    cost_share = fields.Dict(keys=fields.String(), values=DecimalString())
    partners = fields.List(fields.String())
    published_by = fields.String(metadata={"description": "a partner's code, or coalition"})


class OfferListSchema(Schema):
    offers = fields.List(fields.Nested(OfferSchema))


class OfferPartnerSchema(Schema):
    code = fields.String()
    name = fields.String()


class MemberOfferSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    rule = fields.String(metadata={"enum": list(RULES)})
    multiplier = DecimalString(allow_none=True)
    bonus_points = fields.Integer(allow_none=True)
    valid_from = UTCTimestamp()
    valid_to = UTCTimestamp()
    opt_in = fields.Boolean()
    activated = fields.Boolean(allow_none=True, metadata={
        "description": "for an opt-in offer, whether you activated it"})
    activated_at = UTCTimestamp(allow_none=True)
    partners = fields.List(fields.Nested(OfferPartnerSchema))


class MemberOfferListSchema(Schema):
    offers = fields.List(fields.Nested(MemberOfferSchema))
