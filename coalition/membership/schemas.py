"""Wire formats of the membership API: the plans, a member's memberships, a purchase."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from coalition.member.ledger_api import BalanceAfterSchema
from coalition.schemas import (
    Currency,
    DecimalString,
    MemberNumber,
    StrictBoolean,
    StrictSchema,
    UTCTimestamp,
    WholeMatch,
)

_PLAN = fields.String(required=True, validate=validate.Length(min=1, max=32),
                      metadata={"description": "the plan's code (GET /v1/program/memberships)"})


class PaidPriceSchema(StrictSchema):
    amount = DecimalString(required=True, positive=True, places=4, max_digits=12)
    currency = Currency(required=True)


class PlanPriceSchema(Schema):
    amount = DecimalString()
    currency = fields.String()


class PlanSchema(Schema):
    code = fields.String()
    name = fields.String()
    description = fields.String()
    price_points = fields.Integer(allow_none=True, metadata={
        "description": "the price in points (null: sold for money only, at a partner)"})
    price = fields.Nested(PlanPriceSchema, allow_none=True, metadata={
        "description": "the price in money, paid at a partner (null: points only)"})
    period_months = fields.Integer()
    multiplier = DecimalString(metadata={"description": "earn multiplier while in force"})
    auto_renew_default = fields.Boolean()


class PlansSchema(Schema):
    version = fields.Integer(metadata={"description": "the program rules' version"})
    plans = fields.List(fields.Nested(PlanSchema))


class MembershipSchema(Schema):
    id = fields.Integer()
    plan = fields.String()
    name = fields.String()
    status = fields.String(metadata={"enum": ["active", "cancelled", "renewed", "lapsed",
                                              "ended"]})
    in_force = fields.Boolean(metadata={"description": "its benefits apply now"})
    auto_renew = fields.Boolean(metadata={"description": "renews with points at ends_at"})
    starts_at = UTCTimestamp()
    ends_at = UTCTimestamp()
    period_months = fields.Integer()
    multiplier = DecimalString()
    paid_with = fields.String(metadata={"enum": ["points", "money"]})
    points = fields.Integer(allow_none=True)
    price = fields.Nested(PlanPriceSchema, allow_none=True)
    partner = fields.String(allow_none=True, metadata={"description": "where it was paid "
                                                       "for in money"})
    member_number = fields.String()
    entry_id = fields.Integer(metadata={"description": "the journal entry that paid for it"})
    cancelled_at = UTCTimestamp(allow_none=True)
    ended_at = UTCTimestamp(allow_none=True)


class PurchaseSchema(MembershipSchema):
    balance = fields.Nested(BalanceAfterSchema, allow_none=True,
                            metadata={"description": "yours, just after (points purchases)"})


class MyMembershipsSchema(Schema):
    current = fields.Nested(MembershipSchema, allow_none=True)
    memberships = fields.List(fields.Nested(MembershipSchema),
                              metadata={"description": "every period, newest first"})


class BuyRequestSchema(StrictSchema):
    plan = _PLAN
    pay_with = fields.String(required=True, validate=validate.OneOf(["points"]), metadata={
        "description": "points (a money purchase is recorded by the partner that took it)"})
    auto_renew = StrictBoolean(load_default=None, metadata={
        "description": "renew with points at the end of each period (default: the plan's)"})


class ChangeRequestSchema(StrictSchema):
    auto_renew = StrictBoolean(required=True)


class MoneyPurchaseRequestSchema(StrictSchema):
    member_number = MemberNumber()
    partner_member_ref = fields.String(validate=validate.Length(min=1, max=64))
    plan = _PLAN
    partner_txn_id = fields.String(required=True, validate=WholeMatch(
        r"^[\x21-\x7e]{1,64}$", error="1 to 64 printable ASCII characters, no spaces."))
    price = fields.Nested(PaidPriceSchema, required=True, metadata={
        "description": "what the member paid: the plan's price, in your currency"})
    auto_renew = StrictBoolean(load_default=None, metadata={
        "description": "renew with the member's points at the end of each period "
                       "(default: the plan's)"})

    @validates_schema
    def _one_identity(self, data: dict[str, Any], **kwargs: Any) -> None:
        given = [k for k in ("member_number", "partner_member_ref") if k in data]
        if len(given) != 1:
            raise ValidationError("Name the member by member_number or partner_member_ref "
                                  "(exactly one).", field_name="member_number")
