"""Wire formats of missing-points claims (``/v1/me/claims``, ``/v1/claims``)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from coalition.claims.models import STATUSES
from coalition.schemas import (
    Currency,
    CursorQueryArgsSchema,
    DecimalString,
    StrictSchema,
    UTCTimestamp,
    WholeMatch,
)

#: a reference as a till prints it: printable ASCII, no spaces (as a ``partner_txn_id``)
REFERENCE = WholeMatch(r"^[\x21-\x7e]{1,64}$",
                       error="1 to 64 printable ASCII characters, no spaces.")


class SpendSchema(StrictSchema):
    amount = DecimalString(required=True, positive=True, places=4, max_digits=12)
    currency = Currency(required=True)


class ClaimRequestSchema(StrictSchema):
    partner = fields.String(required=True, validate=validate.Length(min=1, max=32),
                            metadata={"description": "code of the partner you bought from"})
    partner_txn_id = fields.String(validate=REFERENCE, metadata={
        "description": "the partner's own id of the sale, if you know it"})
    receipt = fields.String(validate=REFERENCE, metadata={
        "description": "the reference printed on the receipt (defaults to partner_txn_id)"})
    spend = fields.Nested(SpendSchema, required=True)
    occurred_at = UTCTimestamp(required=True, metadata={"description": "when you bought"})

    @validates_schema
    def _reference(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("receipt") and not data.get("partner_txn_id"):
            raise ValidationError("Give the receipt's reference (receipt or partner_txn_id).",
                                  field_name="receipt")


class ClaimSchema(Schema):
    id = fields.Integer()
    partner = fields.String(metadata={"description": "the partner's code"})
    partner_name = fields.String()
    member_number = fields.String()
    receipt = fields.String()
    partner_txn_id = fields.String(allow_none=True, metadata={
        "description": "the id the earn is (or would be) booked under"})
    spend = fields.Nested(SpendSchema)
    occurred_at = UTCTimestamp()
    status = fields.String(metadata={"enum": list(STATUSES)})
    opened_at = UTCTimestamp()
    answered_at = UTCTimestamp(allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": "why it was refused"})
    points = fields.Integer(allow_none=True, metadata={"description": "points booked"})
    transaction_id = fields.Integer(allow_none=True, metadata={
        "description": "the earn booked (or matched) by the confirmation"})


class ClaimPageSchema(Schema):
    items = fields.List(fields.Nested(ClaimSchema))
    next_cursor = fields.String(allow_none=True)


class ClaimQueryArgsSchema(CursorQueryArgsSchema):
    status = fields.String(validate=validate.OneOf(STATUSES))


class RefuseSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500),
                           metadata={"description": "shown to the member"})
