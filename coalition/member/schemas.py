"""Wire formats of the member's own API (``/v1/me``) and of activation."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from coalition.ledger.models import ENTRY_KINDS
from coalition.schemas import (
    CursorQueryArgsSchema,
    DecimalString,
    MemberNumber,
    StrictBoolean,
    StrictSchema,
    UTCTimestamp,
)


class ActivationSchema(StrictSchema):
    member_number = MemberNumber(required=True)
    activation_code = fields.String(required=True, validate=validate.Length(min=1, max=64),
                                    metadata={"example": "K7M2Q-9XH4T"})
    password = fields.String(required=True, load_only=True,
                             validate=validate.Length(min=10, max=1024),
                             metadata={"description": "at least 10 characters"})


class ConsentRequestSchema(StrictSchema):
    share = StrictBoolean(required=True, metadata={
        "description": "true: the partner sees your name, e-mail and birth date; false: it "
                       "sees only what it supplied itself"})


class ConsentSchema(Schema):
    partner = fields.String()
    partner_name = fields.String()
    share = fields.Boolean()
    granted_at = UTCTimestamp(allow_none=True)


class ConsentListSchema(Schema):
    items = fields.List(fields.Nested(ConsentSchema))


class ActivatedSchema(Schema):
    member_number = fields.String()
    activated = fields.Boolean()


class MePointsAtSchema(Schema):
    points = fields.Integer()


class MePendingReleaseSchema(MePointsAtSchema):
    releases_at = UTCTimestamp(allow_none=True,
                               metadata={"description": "when the points become spendable"})


class MeHoldSchema(Schema):
    partner = fields.String()
    partner_name = fields.String()
    points = fields.Integer()
    expires_at = UTCTimestamp()


class MeExpiryWindowSchema(Schema):
    days = fields.Integer()
    until = UTCTimestamp()
    points = fields.Integer(metadata={"description": "points expiring before `until`"})


class MeExpiryDateSchema(MePointsAtSchema):
    date = fields.Date(metadata={"description": "the date (UTC) these points expire"})
    expires_at = UTCTimestamp(metadata={"description": "the first moment of that date at "
                                                       "which some of them expire"})


class MeExpiringSchema(Schema):
    policy = fields.String(metadata={"enum": ["none", "fixed", "inactivity"]})
    windows = fields.List(fields.Nested(MeExpiryWindowSchema),
                          metadata={"description": "the next 30, 60 and 90 days"})
    dates = fields.List(fields.Nested(MeExpiryDateSchema),
                        metadata={"description": "every expiry in the next 90 days"})


class MePartnerPointsSchema(Schema):
    partner = fields.String(metadata={"description": "partner code; `coalition` for "
                                      "coalition-funded points (bonuses)"})
    name = fields.String()
    points = fields.Integer()


class MeNextTierSchema(Schema):
    code = fields.String()
    name = fields.String()
    threshold = fields.Integer()
    multiplier = DecimalString()


class MeTierSchema(Schema):
    code = fields.String()
    name = fields.String()
    multiplier = DecimalString()
    qualifying_points = fields.Integer(metadata={
        "description": "earns less earn reversals booked in the rolling 12 months"})
    window_start = UTCTimestamp()
    next_tier = fields.Nested(MeNextTierSchema, allow_none=True)
    points_to_next_tier = fields.Integer(allow_none=True)


class MeSchema(Schema):
    member_number = fields.String()
    status = fields.String()
    name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    member_since = UTCTimestamp()
    available = fields.Integer(metadata={"description": "spendable now"})
    pending = fields.Integer(metadata={"description": "earned, not yet spendable"})
    held = fields.Integer(metadata={"description": "reserved by open holds"})
    pending_releases = fields.List(fields.Nested(MePendingReleaseSchema))
    awaiting_first_spend = fields.Integer(metadata={
        "description": "pending welcome bonus points, spendable from your first earn on a "
                       "purchase at any partner"})
    holds = fields.List(fields.Nested(MeHoldSchema))
    expiring = fields.Nested(MeExpiringSchema)
    by_partner = fields.List(fields.Nested(MePartnerPointsSchema),
                             metadata={"description": "spendable points by the partner "
                                       "where they were earned"})
    tier = fields.Nested(MeTierSchema)
    as_of = UTCTimestamp()


class MeBalanceChangeSchema(Schema):
    available = fields.Integer()
    pending = fields.Integer()
    held = fields.Integer()


class MeTransactionSchema(Schema):
    id = fields.Integer()
    type = fields.String(metadata={"enum": list(ENTRY_KINDS)})
    partner = fields.String(allow_none=True)
    partner_name = fields.String(allow_none=True)
    points = fields.Integer()
    change = fields.Nested(MeBalanceChangeSchema,
                           metadata={"description": "what the entry did to each balance"})
    booked_at = UTCTimestamp()
    occurred_at = UTCTimestamp()
    reference = fields.Integer(allow_none=True)
    partner_txn_id = fields.String(allow_none=True, metadata={
        "description": "the partner's id for the transaction, or your own Idempotency-Key "
                       "(after your member number) for your transfers and donations; none "
                       "on a transfer you received"})
    note = fields.String(allow_none=True, metadata={
        "description": "a transfer you sent says to whom; one you received says from whom: "
                       "the sender's first name if the sender chose to share it, otherwise "
                       "\"from a member\""})
    balance = fields.Nested(MeBalanceChangeSchema, allow_none=True,
                            metadata={"description": "balances just after the entry"})


class MeTransactionQueryArgsSchema(CursorQueryArgsSchema):
    type = fields.String(validate=validate.OneOf(ENTRY_KINDS))


class MeTransactionPageSchema(Schema):
    items = fields.List(fields.Nested(MeTransactionSchema))
    next_cursor = fields.String(allow_none=True)
