"""Wire formats of the settlement API (API.md "Settlement")."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from coalition.schemas import DecimalString, StrictSchema, UTCTimestamp

_AMOUNT = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}
_MODEL = {"enum": ["operator", "clearing"], "description": "the money model of the run: "
          "operator (each partner settles its net with the coalition) or clearing (partners "
          "pay each other and the coalition its fees)"}


def Amount(description: str = "decimal string") -> fields.String:  # noqa: N802
    """A money amount: a decimal string (reads as a field type)."""
    return fields.String(metadata={"description": description, **_AMOUNT})


class RunCreateSchema(StrictSchema):
    period_start = UTCTimestamp(required=True, metadata={"description": "inclusive"})
    period_end = UTCTimestamp(required=True, metadata={"description": "exclusive"})


class LineSchema(Schema):
    type = fields.String(metadata={
        "enum": ["issued", "redeemed", "owes", "owed", "fee_payable", "fee_receivable"],
        "description": "issued, fee_payable, owes: the partner pays; redeemed, "
                       "fee_receivable, owed: the partner is paid"})
    counterparty = fields.String(metadata={"description": "'coalition' or a partner"})
    points = fields.Integer(allow_none=True, metadata={
        "description": "none for the coalition's fee, which is money only"})
    rate = fields.String(allow_none=True, metadata={
        "description": "the rate card's rate; none for a line between partners (at the "
                       "redeeming partner's rates) or a fee", **_AMOUNT})
    rate_valid_from = fields.String(allow_none=True)
    amount = Amount("always positive; the type says who pays")


class LateEntrySchema(Schema):
    id = fields.Integer()
    type = fields.String()
    partner_txn_id = fields.String(allow_none=True)
    points = fields.Integer()
    occurred_at = fields.String()
    booked_at = fields.String()


class LateSchema(Schema):
    count = fields.Integer()
    entries = fields.List(fields.Nested(LateEntrySchema))


class FundingBlockSchema(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"enum": ["block", "reserve", "topup"]})
    points = fields.Integer()
    price = DecimalString()
    currency = fields.String()
    bought_at = UTCTimestamp()


class StatementFundingSchema(Schema):
    model = fields.String(metadata={"enum": ["prepaid", "postpaid"]})
    blocks_bought = fields.List(fields.Nested(FundingBlockSchema), metadata={
        "description": "point blocks bought in the period (top-ups included)"})
    points_bought = fields.Integer()
    points_used = fields.Integer(allow_none=True, metadata={
        "description": "prepaid: the points of the period's blocks and earlier ones that "
                       "the period's issued points used"})


class StatementSchema(Schema):
    run = fields.Integer()
    status = fields.String()
    model = fields.String(metadata=_MODEL)
    period_start = UTCTimestamp()
    period_end = UTCTimestamp()
    partner = fields.String()
    name = fields.String()
    kind = fields.String()
    currency = fields.String()
    issued_points = fields.Integer()
    redeemed_points = fields.Integer()
    payable = Amount()
    receivable = Amount()
    net = Amount("receivable − payable; positive: the coalition pays")
    lines = fields.List(fields.Nested(LineSchema))
    late_entries = fields.Nested(LateSchema, metadata={
        "description": "entries booked in the period for an earlier occurred_at"})
    funding = fields.Nested(StatementFundingSchema, metadata={
        "description": "the partner's funding in the period: blocks bought, points used"})


class RunStatementSchema(Schema):
    model = fields.String(metadata=_MODEL)
    partner = fields.String()
    name = fields.String()
    kind = fields.String()
    currency = fields.String()
    issued_points = fields.Integer()
    redeemed_points = fields.Integer()
    payable = Amount()
    receivable = Amount()
    net = Amount("receivable − payable; positive: the coalition pays")
    lines = fields.List(fields.Nested(LineSchema))
    late_entries = fields.Nested(LateSchema)


class CellSchema(Schema):
    origin = fields.String(metadata={"description": "partner where the points were earned, "
                                     "or 'coalition' for coalition-funded points"})
    redeemed_at = fields.String()
    points = fields.Integer()


class MatrixSchema(Schema):
    cells = fields.List(fields.Nested(CellSchema))


class PaymentSchema(Schema):
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    amount = Amount()
    currency = fields.String()
    model = fields.String(metadata=_MODEL)


class ObligationSchema(Schema):
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    points = fields.Integer(allow_none=True, metadata={
        "description": "points spent across partners; none for a settlement with the "
                       "coalition"})
    amount = Amount()
    currency = fields.String()


class PositionSchema(Schema):
    party = fields.String()
    currency = fields.String()
    amount = Amount("positive: the party is owed")


class PointsByOriginSchema(Schema):
    partner = fields.String()
    points = fields.Integer()


class PointsReportSchema(Schema):
    points = fields.Integer()
    by_origin = fields.List(fields.Nested(PointsByOriginSchema))


class PointsTotalSchema(Schema):
    points = fields.Integer()


class MarginSchema(Schema):
    currency = fields.String()
    amount = Amount()


class CoalitionReportSchema(Schema):
    breakage = fields.Nested(PointsReportSchema)
    forfeited = fields.Nested(PointsReportSchema)
    bonuses = fields.Nested(PointsTotalSchema)
    outstanding = fields.Nested(PointsReportSchema)
    margin = fields.List(fields.Nested(MarginSchema))
    position = fields.List(fields.Nested(MarginSchema), metadata={
        "description": "the coalition's own position per currency (positive: it is owed)"})


class RunSchema(Schema):
    id = fields.Integer()
    status = fields.String(metadata={"enum": ["draft", "closed"]})
    model = fields.String(metadata=_MODEL)
    period_start = UTCTimestamp()
    period_end = UTCTimestamp()
    created_at = UTCTimestamp()
    created_by = fields.String()
    computed_at = UTCTimestamp()
    closed_at = UTCTimestamp(allow_none=True)
    closed_by = fields.String(allow_none=True)
    digest = fields.String(metadata={"description": "SHA-256 of the figures"})
    open_breaks = fields.Integer()
    statements = fields.List(fields.Nested(RunStatementSchema))
    matrix = fields.Nested(MatrixSchema)
    obligations = fields.List(fields.Nested(ObligationSchema))
    positions = fields.List(fields.Nested(PositionSchema))
    payments = fields.List(fields.Nested(PaymentSchema))
    coalition = fields.Nested(CoalitionReportSchema)


class RunSummarySchema(Schema):
    id = fields.Integer()
    status = fields.String()
    model = fields.String(metadata=_MODEL)
    period_start = UTCTimestamp()
    period_end = UTCTimestamp()
    digest = fields.String()


class BreakSchema(Schema):
    id = fields.Integer()
    partner = fields.String()
    kind = fields.String(metadata={"enum": ["points_mismatch", "missing_in_ledger",
                                            "missing_in_file", "duplicated_in_file",
                                            "malformed"]})
    partner_txn_id = fields.String(allow_none=True)
    line = fields.Integer(allow_none=True)
    details = fields.Dict()
    status = fields.String(metadata={"enum": ["open", "accepted", "adjusted"]})
    resolved_at = UTCTimestamp(allow_none=True)
    resolved_by = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    adjustment_entry_id = fields.Integer(allow_none=True)


class ReconciliationSchema(Schema):
    id = fields.Integer()
    run = fields.Integer()
    partner = fields.String()
    uploaded_at = UTCTimestamp()
    uploaded_by = fields.String()
    file_sha256 = fields.String()
    rows = fields.Integer()
    summary = fields.Dict(keys=fields.String(), values=fields.Integer())
    breaks = fields.List(fields.Nested(BreakSchema))


class ResolveSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.OneOf(["accept", "adjust"]))
    reason = fields.String(required=True, validate=validate.Length(min=3, max=2000))
    user = fields.String(validate=validate.Length(min=1, max=64), metadata={
        "description": "operator clients: the person resolving it (default: the calling "
                       "client); a finance user always resolves in their own name"})


class BreakQueryArgsSchema(Schema):
    status = fields.String(validate=validate.OneOf(["open", "accepted", "adjusted"]))
