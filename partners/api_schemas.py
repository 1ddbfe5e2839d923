"""Wire formats of the partner transaction API (API.md, "Partner")."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from coalition.ledger.models import HISTORY_TYPES
from coalition.schemas import (
    Currency,
    CursorQueryArgsSchema,
    DecimalString,
    MemberNumber,
    PointsField,
    StrictInteger,
    StrictSchema,
    UTCTimestamp,
    WholeMatch,
)

TXN_ID = WholeMatch(r"^[\x21-\x7e]{1,64}$",
                    error="1 to 64 printable ASCII characters, no spaces.")
REF = validate.Length(min=1, max=64)


class MemberIdentitySchema(StrictSchema):
    """The member, by coalition number or by the calling partner's own reference."""

    member_number = MemberNumber()
    partner_member_ref = fields.String(validate=REF)

    @validates_schema
    def _one_identity(self, data: dict[str, Any], **kwargs: Any) -> None:
        given = [k for k in ("member_number", "partner_member_ref") if k in data]
        if len(given) != 1:
            raise ValidationError("Name the member by member_number or partner_member_ref "
                                  "(exactly one).", field_name="member_number")


class MoneySchema(StrictSchema):
    amount = DecimalString(required=True, positive=True, places=4, max_digits=12)
    currency = Currency(required=True)


# --------------------------------------------------------------------------- members


class EnrolSchema(StrictSchema):
    partner_member_ref = fields.String(required=True, validate=REF)
    email = fields.Email(validate=validate.Length(max=320))
    name = fields.String(validate=validate.Length(min=1, max=200))
    birth_date = fields.Date()
    member_number = MemberNumber(metadata={"description": "link an existing member"})


class BalanceSummarySchema(Schema):
    available = fields.Integer()
    pending = fields.Integer()
    held = fields.Integer()


class MemberSchema(Schema):
    member_number = fields.String()
    status = fields.String()
    tier = fields.String()
    partner_member_ref = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    birth_date = fields.Date(allow_none=True)
    created_at = UTCTimestamp()
    merged_into = fields.String(allow_none=True, metadata={
        "description": "status merged: the member number that now holds this member's "
                       "points, links and history"})
    balance = fields.Nested(BalanceSummarySchema)
    activation_code = fields.String(metadata={
        "description": "one-time code the member activates the account with (choosing a "
                       "password at /member/activate); only in the 201 answer that enrols "
                       "the member, never shown again",
        "example": "K7M2Q-9XH4T"})


class MemberLookupArgsSchema(Schema):
    partner_member_ref = fields.String(required=True, validate=REF)


class ExpiringSchema(Schema):
    """Points that expire on one date (UTC)."""

    date = fields.Date()
    points = fields.Integer()
    expires_at = UTCTimestamp(metadata={"description": "the first moment of that date at "
                                                       "which some of them expire"})


class BalanceSchema(Schema):
    member_number = fields.String()
    available = fields.Integer()
    pending = fields.Integer()
    held = fields.Integer()
    expiring = fields.List(fields.Nested(ExpiringSchema))
    tier = fields.String()


# --------------------------------------------------------------------------- transactions


class EarnSchema(MemberIdentitySchema):
    partner_txn_id = fields.String(required=True, validate=TXN_ID)
    spend = fields.Nested(MoneySchema)
    points = PointsField()
    occurred_at = UTCTimestamp()

    @validates_schema
    def _spend_or_points(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("spend" in data) == ("points" in data):
            raise ValidationError("Give either spend or points (exactly one).",
                                  field_name="points")


class BurnSchema(MemberIdentitySchema):
    partner_txn_id = fields.String(required=True, validate=TXN_ID)
    points = PointsField(required=True)
    occurred_at = UTCTimestamp()


class HoldCreateSchema(MemberIdentitySchema):
    partner_txn_id = fields.String(required=True, validate=TXN_ID)
    points = PointsField(required=True)
    expires_in = StrictInteger(validate=validate.Range(min=1),
                               metadata={"description": "seconds; default from the program"})


class CaptureSchema(StrictSchema):
    partner_txn_id = fields.String(required=True, validate=TXN_ID)
    points = PointsField(metadata={"description": "default: all the points held"})


class VoidSchema(StrictSchema):
    partner_txn_id = fields.String(required=True, validate=TXN_ID)


class ReversalSchema(StrictSchema):
    partner_txn_id = fields.String(required=True, validate=TXN_ID)
    points = PointsField()
    refund = fields.Nested(MoneySchema, metadata={"description": "the refunded part of the "
                                                  "spend; points come back pro rata"})

    @validates_schema
    def _not_both(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "points" in data and "refund" in data:
            raise ValidationError("Give points or refund, not both.", field_name="points")


class MoneyOutSchema(Schema):
    amount = DecimalString()
    currency = fields.String()


class EarnLineSchema(Schema):
    kind = fields.String(metadata={"enum": ["base", "promotion"]})
    offer_id = fields.Integer()
    name = fields.String()
    points = fields.Integer()


class TransactionSchema(Schema):
    id = fields.Integer()
    type = fields.String(metadata={
        "enum": list(HISTORY_TYPES),
        "description": "membership_sale: a paid membership the partner sold for money (no "
                       "points; its price is spend)"})
    partner = fields.String()
    member_number = fields.String()
    partner_txn_id = fields.String()
    points = fields.Integer()
    status = fields.String(metadata={"description": "posted, or pending for an earn whose "
                                     "points are not yet spendable"})
    booked_at = UTCTimestamp()
    occurred_at = UTCTimestamp()
    reference = fields.Integer(allow_none=True,
                               metadata={"description": "the transaction this one reverses "
                                         "or the hold it captures"})
    spend = fields.Nested(MoneyOutSchema)
    balance = fields.Nested(BalanceSummarySchema)
    lines = fields.List(fields.Nested(EarnLineSchema), metadata={
        "description": "an earn's points by where they come from: the base points, then "
                       "each promotion's; they add up to points"})


class HoldSchema(Schema):
    id = fields.Integer()
    partner = fields.String()
    member_number = fields.String()
    partner_txn_id = fields.String()
    points = fields.Integer()
    captured_points = fields.Integer()
    status = fields.String(metadata={"enum": ["open", "captured", "voided", "expired"]})
    expires_at = UTCTimestamp()
    created_at = UTCTimestamp()
    balance = fields.Nested(BalanceSummarySchema)
    balance_at = fields.String(metadata={
        "enum": ["authorisation", "void", "now"],
        "description": "whose moment `balance` shows: just after the authorisation (the "
                       "answer to the hold and its replays), just after the void, or now "
                       "(`GET /v1/holds/{id}`)"})


class TransactionQueryArgsSchema(CursorQueryArgsSchema):
    member_number = MemberNumber()
    type = fields.String(validate=validate.OneOf(HISTORY_TYPES))
    booked_from = UTCTimestamp(metadata={"description": "inclusive"})
    booked_to = UTCTimestamp(metadata={"description": "exclusive"})


class TransactionPageSchema(Schema):
    items = fields.List(fields.Nested(TransactionSchema))
    next_cursor = fields.String(allow_none=True)
