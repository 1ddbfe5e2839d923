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
        "enum": ["issued", "promotion", "redeemed", "owes", "owed", "fee_payable",
                 "fee_receivable", "collected"],
        "description": "issued, promotion (its share of promotions' points, at its issue "
                       "price), fee_payable, owes, collected (money of paid memberships "
                       "the partner sold, owed to the coalition): the partner pays; "
                       "redeemed, fee_receivable, owed: the partner is paid"})
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
    promotion_points = fields.Integer(metadata={
        "description": "its share of promotions' points (only when it funded some)"})
    payable = Amount()
    receivable = Amount()
    collected = Amount("money of paid memberships the partner sold, collected for the "
                       "coalition (absent when none)")
    net = Amount("receivable − payable − collected; positive: the coalition pays")
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
    promotion_points = fields.Integer(metadata={
        "description": "its share of promotions' points (only when it funded some)"})
    payable = Amount()
    receivable = Amount()
    collected = Amount("money of paid memberships the partner sold, collected for the "
                       "coalition (absent when none)")
    net = Amount("receivable − payable − collected; positive: the coalition pays")
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


class MembershipReportSchema(Schema):
    points = fields.Integer(metadata={"description": "points spent on memberships: "
                                      "redeemed by the coalition"})
    collected = fields.List(fields.Nested(MarginSchema), metadata={
        "description": "money partners collected for memberships they sold, per currency"})


class CoalitionReportSchema(Schema):
    breakage = fields.Nested(PointsReportSchema)
    forfeited = fields.Nested(PointsReportSchema)
    bonuses = fields.Nested(PointsTotalSchema)
    memberships = fields.Nested(MembershipReportSchema, metadata={
        "description": "paid memberships in the period (absent when none)"})
    promotions = fields.Nested(PointsTotalSchema, metadata={
        "description": "the coalition's own share of promotions' points (only when some)"})
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


# --------------------------------------------------------------------------- liability

_RATE = {"type": "string", "pattern": r"^\d+(\.\d+)?$"}


class RollforwardSchema(Schema):
    currency = fields.String()
    opening = Amount("the liability at the period start (a closed run's closing as closed)")
    issued = Amount("points issued in the period, at the period end's estimate")
    recognised_on_redemption = Amount("points redeemed in the period, at that estimate")
    recognised_as_breakage = Amount("points expired or forfeited in the period, at that "
                                    "estimate")
    estimate_change = Amount("the opening points re-measured at the period end's estimate "
                             "(and the rounding of the lines to the minor unit)")
    closing = Amount("the liability at the period end: Σ the cohorts' expected_cost")


class CohortSchema(Schema):
    origin = fields.String(metadata={"description": "partner where the points were earned, "
                                     "or 'coalition' for coalition-funded points"})
    earned_month = fields.String(metadata={"description": "YYYY-MM"})
    currency = fields.String(allow_none=True, metadata={
        "description": "where the points are expected to be paid for (none: no redemption "
                       "anywhere yet to price them)"})
    outstanding_points = fields.Integer()
    breakage_rate = fields.String(metadata={"description": "share expected never to be "
                                            "redeemed", **_RATE})
    unit_cost = fields.String(allow_none=True, metadata={
        "description": "expected money per point redeemed, in currency", **_RATE})
    expected_cost = Amount("outstanding_points × (1 − breakage_rate) × unit_cost, rounded "
                           "half even to the minor unit")


class ClosedCohortSchema(Schema):
    origin = fields.String()
    earned_month = fields.String()
    points = fields.Integer(metadata={"description": "points that stayed in the cohort"})
    lapsed_points = fields.Integer(metadata={"description": "expired or forfeited"})
    breakage_rate = fields.String(metadata=_RATE)


class PointsRollforwardSchema(Schema):
    origin = fields.String()
    opening = fields.Integer()
    issued = fields.Integer()
    redeemed = fields.Integer()
    expired = fields.Integer()
    forfeited = fields.Integer()
    closing = fields.Integer()


class UnitCostSchema(Schema):
    origin = fields.String()
    currency = fields.String()
    unit_cost = fields.String(metadata=_RATE)
    opening_unit_cost = fields.String(allow_none=True, metadata=_RATE)


class BreakageByAgeSchema(Schema):
    age = fields.Integer(metadata={"description": "whole months from the month earned to "
                                   "the period end's month"})
    breakage_rate = fields.String(metadata=_RATE)
    basis = fields.String(metadata={"enum": ["history", "prior"]})
    closed_cohorts = fields.Integer(metadata={
        "description": "closed cohorts that still held points at that age"})


class EstimateSchema(Schema):
    breakage_rate = fields.String(metadata={
        "description": "the rate at age 0 (all points lapsed ÷ all points that stayed, over "
                       "the closed cohorts)", **_RATE})
    basis = fields.String(metadata={"enum": ["history", "prior"]})
    closed_cohorts = fields.Integer()
    by_age = fields.List(fields.Nested(BreakageByAgeSchema), metadata={
        "description": "the rate each cohort is valued at, by its age"})
    opening_breakage_rate = fields.String(metadata=_RATE)
    prior = fields.String(metadata=_RATE)
    min_closed_cohorts = fields.Integer()
    unit_costs = fields.List(fields.Nested(UnitCostSchema))


class LiabilitySchema(Schema):
    run = fields.Integer()
    status = fields.String(metadata={"enum": ["draft", "closed"]})
    model = fields.String(metadata=_MODEL)
    period_start = fields.String()
    period_end = fields.String()
    estimate = fields.Nested(EstimateSchema)
    rollforward = fields.List(fields.Nested(RollforwardSchema))
    points = fields.List(fields.Nested(PointsRollforwardSchema), metadata={
        "description": "points by origin: opening + issued − redeemed − expired − "
                       "forfeited = closing"})
    cohorts = fields.List(fields.Nested(CohortSchema))
    closed_cohorts = fields.List(fields.Nested(ClosedCohortSchema))


# --------------------------------------------------------------------------- analytics


class AnalyticsQueryArgsSchema(Schema):
    from_ = fields.String(data_key="from", attribute="from", validate=validate.Regexp(
        r"^\d{4}-(0[1-9]|1[0-2])$", error="Give a month as YYYY-MM."),
        metadata={"description": "first month, YYYY-MM (default: eleven months before to)"})
    to = fields.String(validate=validate.Regexp(
        r"^\d{4}-(0[1-9]|1[0-2])$", error="Give a month as YYYY-MM."),
        metadata={"description": "last month, YYYY-MM (default: this month)"})
    partner = fields.String(validate=validate.Length(min=1, max=32), metadata={
        "description": "one partner's figures (or 'coalition' for coalition-funded points)"})


class MonthSchema(Schema):
    month = fields.String()
    partner = fields.String()
    enrolled = fields.Integer()
    active = fields.Integer()
    closed = fields.Integer()
    merged = fields.Integer()
    issued = fields.Integer(metadata={
        "description": "points issued less earn reversals at the partner, with the "
                       "promotion points on its earns whoever funds them (the earning "
                       "partner is their origin, as in the liability's cohorts)"})
    redeemed = fields.Integer()
    expired = fields.Integer()
    forfeited = fields.Integer()
    transferred = fields.Integer()
    donated = fields.Integer()
    redemption_rate = fields.String(allow_none=True, metadata={
        "description": "redeemed ÷ issued to four places; none when nothing was issued",
        **_RATE})


class TierCountSchema(Schema):
    month = fields.String()
    tier = fields.String()
    members = fields.Integer()


class TopRewardSchema(Schema):
    month = fields.String()
    reward_id = fields.Integer()
    reward = fields.String()
    partner = fields.String(metadata={"description": "the partner that fulfils it"})
    redemptions = fields.Integer(metadata={"description": "vouchers issued in the month"})
    points = fields.Integer(metadata={"description": "their points"})


class AnalyticsSchema(Schema):
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    partner = fields.String(allow_none=True)
    months = fields.List(fields.Nested(MonthSchema), metadata={
        "description": "one row per month and partner with any figure"})
    totals = fields.List(fields.Nested(MonthSchema), metadata={
        "description": "one row per month (partner 'all'); active counts each member once"})
    tiers = fields.List(fields.Nested(TierCountSchema), metadata={
        "description": "members per tier at each month end, by the tier rule under the "
                       "program rules then in force (not for one partner)"})
    top_rewards = fields.List(fields.Nested(TopRewardSchema), metadata={
        "description": "each month's most redeemed rewards, most redemptions first (at "
                       "most ten a month)"})
