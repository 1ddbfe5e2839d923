"""Operator-facing partner schemas."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from coalition.oauth.models import PARTNER_ROLES as ROLES
from coalition.oauth.models import PARTNER_SCOPES
from coalition.schemas import Currency, DecimalString, StrictSchema, UTCTimestamp, WholeMatch

PARTNER_CODE = WholeMatch(
    r"^[a-z][a-z0-9-]{1,31}$",
    error="2 to 32 characters: lower-case letters, digits and '-', starting with a letter.",
)


class RateCardSchema(Schema):
    valid_from = UTCTimestamp()
    earn_rate = DecimalString(metadata={"description": "points per currency unit spent"})
    issue_price = DecimalString(metadata={"description": "money per point the partner pays "
                                          "when its customers earn"})
    redeem_rate = DecimalString(metadata={"description": "money per point the coalition "
                                          "pays the partner when points are spent there"})


class PartnerCreateSchema(StrictSchema):
    code = fields.String(required=True, validate=PARTNER_CODE)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(required=True, validate=validate.OneOf(["merchant", "charity"]))
    currency = Currency(required=True)
    earn_rate = DecimalString(required=True)
    issue_price = DecimalString(required=True)
    redeem_rate = DecimalString(required=True)
    valid_from = UTCTimestamp(metadata={"description": "default: now"})


class RateCardCreateSchema(StrictSchema):
    valid_from = UTCTimestamp(required=True)
    earn_rate = DecimalString()
    issue_price = DecimalString()
    redeem_rate = DecimalString()


class PartnerSchema(Schema):
    code = fields.String()
    name = fields.String()
    kind = fields.String()
    currency = fields.String()
    status = fields.String()
    created_at = UTCTimestamp()
    current_rate = fields.Nested(RateCardSchema, allow_none=True)
    rate_cards = fields.List(fields.Nested(RateCardSchema))


class ClientCreateSchema(StrictSchema):
    scopes = fields.List(
        fields.String(validate=validate.OneOf(PARTNER_SCOPES)), required=True,
        validate=validate.Length(min=1),
    )
    name = fields.String(validate=validate.Length(max=200), load_default="")


class IssuedClientSchema(Schema):
    client_id = fields.String()
    client_secret = fields.String(metadata={"description": "shown once; store it now"})
    scopes = fields.List(fields.String())


class ClientSchema(Schema):
    client_id = fields.String()
    name = fields.String()
    scopes = fields.List(fields.String())
    created_at = UTCTimestamp()
    secret_rotated_at = UTCTimestamp(allow_none=True)
    revoked_at = UTCTimestamp(allow_none=True)


class PartnerUserCreateSchema(StrictSchema):
    login = fields.String(required=True, validate=validate.Length(min=1, max=254),
                          metadata={"description": "what the person signs in with (an e-mail "
                                    "address will do); unique across partners"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    role = fields.String(load_default="viewer", validate=validate.OneOf(ROLES), metadata={
        "description": "viewer reads everything of its partner; operator also uploads "
                       "batches, replays deliveries and manages webhook endpoints; admin "
                       "also manages the partner's other staff accounts from the portal"})


class RoleChangeSchema(StrictSchema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class PartnerUserSchema(Schema):
    login = fields.String()
    name = fields.String()
    partner = fields.String()
    role = fields.String(metadata={"enum": list(ROLES)})
    active = fields.Boolean()
    activated = fields.Boolean(metadata={"description": "whether a password was chosen"})
    created_at = fields.DateTime()
    locked_until = fields.DateTime(allow_none=True)


class IssuedPartnerUserSchema(PartnerUserSchema):
    activation_code = fields.String(metadata={
        "description": "one-time: the person chooses a password with it at "
                       "/partner/activate; shown once"})
