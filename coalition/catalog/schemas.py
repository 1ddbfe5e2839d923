"""Wire formats of the catalog: rewards, redemptions, vouchers."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from coalition.catalog.models import REWARD_KINDS
from coalition.member.ledger_api import BalanceAfterSchema
from coalition.schemas import PointsField, StrictBoolean, StrictInteger, StrictSchema, UTCTimestamp

_COUNT = validate.Range(min=0, max=2**53 - 1)
_PLAN = validate.Length(min=1, max=32)


class RewardCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=5000))
    kind = fields.String(required=True, validate=validate.OneOf(REWARD_KINDS))
    points = PointsField(required=True, metadata={"description": "its price in points"})
    stock = StrictInteger(allow_none=True, load_default=None, validate=_COUNT, metadata={
        "description": "units in total; none: unlimited"})
    per_member_limit = StrictInteger(allow_none=True, load_default=None,
                                     validate=validate.Range(min=1, max=2**53 - 1),
                                     metadata={"description": "units one member may redeem"})
    plan = fields.String(allow_none=True, load_default=None, validate=_PLAN, metadata={
        "description": "member-only: the code of the paid membership plan a member must "
                       "hold to redeem it (GET /v1/program/memberships); none: every member"})
    valid_from = UTCTimestamp(allow_none=True, load_default=None)
    valid_to = UTCTimestamp(allow_none=True, load_default=None,
                            metadata={"description": "exclusive"})
    terms = fields.String(load_default="", validate=validate.Length(max=20_000))
    active = StrictBoolean(load_default=True)
    partner = fields.String(validate=validate.Length(min=1, max=32), metadata={
        "description": "operator only: the code of the partner that fulfils a coalition "
                       "reward (a partner publishes only its own)"})


class RewardUpdateSchema(StrictSchema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(validate=validate.Length(max=5000))
    kind = fields.String(validate=validate.OneOf(REWARD_KINDS))
    points = PointsField()
    stock = StrictInteger(allow_none=True, validate=_COUNT)
    per_member_limit = StrictInteger(allow_none=True,
                                     validate=validate.Range(min=1, max=2**53 - 1))
    plan = fields.String(allow_none=True, validate=_PLAN)
    valid_from = UTCTimestamp(allow_none=True)
    valid_to = UTCTimestamp(allow_none=True)
    terms = fields.String(validate=validate.Length(max=20_000))
    active = StrictBoolean()


class RewardSchema(Schema):
    id = fields.Integer()
    partner = fields.String(metadata={"description": "the partner that fulfils it"})
    partner_name = fields.String()
    coalition = fields.Boolean(metadata={"description": "published by the operator"})
    kind = fields.String(metadata={"enum": list(REWARD_KINDS)})
    name = fields.String()
    description = fields.String()
    points = fields.Integer()
    stock = fields.Integer(allow_none=True)
    sold = fields.Integer()
    available = fields.Integer(allow_none=True, metadata={"description": "units left; "
                                                          "none: unlimited"})
    per_member_limit = fields.Integer(allow_none=True)
    plan = fields.String(allow_none=True, metadata={
        "description": "member-only: the paid membership plan it needs (none: every member)"})
    valid_from = UTCTimestamp(allow_none=True)
    valid_to = UTCTimestamp(allow_none=True)
    terms = fields.String()
    active = fields.Boolean()


class RewardListArgsSchema(Schema):
    mine = fields.Boolean(load_default=False, truthy={"true", "1"}, falsy={"false", "0"},
                          metadata={
        "description": "with a partner token: every reward you fulfil, inactive ones too"})


class RewardListSchema(Schema):
    items = fields.List(fields.Nested(RewardSchema))


class RedemptionRequestSchema(StrictSchema):
    reward_id = StrictInteger(required=True, validate=validate.Range(min=1, max=2**63 - 1))


class RedemptionSchema(Schema):
    id = fields.Integer(metadata={"description": "the voucher's id"})
    reward_id = fields.Integer()
    voucher_code = fields.String()
    points = fields.Integer()
    expires_at = UTCTimestamp()
    partner = fields.String(metadata={"description": "where it is used"})
    balance = fields.Nested(BalanceAfterSchema, metadata={"description": "yours, just after"})


_STATUSES = ["issued", "used", "expired", "refunded", "forfeited"]


class MemberVoucherSchema(Schema):
    id = fields.Integer()
    voucher_code = fields.String()
    reward_id = fields.Integer()
    reward = fields.String()
    kind = fields.String()
    terms = fields.String()
    partner = fields.String()
    partner_name = fields.String()
    points = fields.Integer()
    status = fields.String(metadata={"enum": _STATUSES})
    issued_at = UTCTimestamp()
    expires_at = UTCTimestamp()
    used_at = UTCTimestamp(allow_none=True)


class MemberVoucherListSchema(Schema):
    items = fields.List(fields.Nested(MemberVoucherSchema))


class VoucherSchema(Schema):
    voucher_code = fields.String()
    reward_id = fields.Integer()
    reward = fields.String()
    points = fields.Integer()
    status = fields.String(metadata={"enum": _STATUSES})
    issued_at = UTCTimestamp()
    expires_at = UTCTimestamp()
    used_at = UTCTimestamp(allow_none=True)
