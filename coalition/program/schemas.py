"""Wire format of the program rules (``PUT /v1/admin/program``, ``GET /v1/program``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from coalition.money import round_money
from coalition.schemas import (
    MAX_POINTS,
    Currency,
    DecimalString,
    StrictInteger,
    StrictSchema,
    UTCTimestamp,
    WholeMatch,
)

_CODE = WholeMatch(r"^[a-z][a-z0-9_-]{0,31}$",
                   error="Lower-case letters, digits, '-' and '_'; up to 32.")


class TierSchema(StrictSchema):
    code = fields.String(required=True, validate=_CODE)
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    threshold = StrictInteger(required=True, validate=validate.Range(min=0, max=MAX_POINTS),
                              metadata={"description": "qualifying points over 12 months"})
    multiplier = DecimalString(required=True, places=4, max_digits=2,
                               metadata={"description": "earn multiplier, 1 or more"})

    @validates_schema
    def _multiplier(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "multiplier" in data and not 1 <= data["multiplier"] <= 10:
            raise ValidationError({"multiplier": ["Must be between 1 and 10."]})


class ExpiryRulesSchema(StrictSchema):
    policy = fields.String(required=True, validate=validate.OneOf(["none", "fixed", "inactivity"]),
                           metadata={"description": "fixed: months after earn; inactivity: "
                                     "months after the member's last earn or burn"})
    months = StrictInteger(validate=validate.Range(min=1, max=240), load_default=None)

    @validates_schema
    def _months(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("policy") != "none" and data.get("months") is None:
            raise ValidationError({"months": ["Required unless the policy is 'none'."]})


class BonusRulesSchema(StrictSchema):
    welcome = StrictInteger(load_default=0, validate=validate.Range(min=0, max=1_000_000))
    birthday = StrictInteger(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class TransferRulesSchema(StrictSchema):
    enabled = fields.Boolean(load_default=True)
    min_points = StrictInteger(load_default=1, validate=validate.Range(min=1, max=MAX_POINTS))
    max_points = StrictInteger(load_default=100_000,
                               validate=validate.Range(min=1, max=MAX_POINTS))
    max_points_per_day = StrictInteger(load_default=250_000,
                                       validate=validate.Range(min=1, max=MAX_POINTS))

    @validates_schema
    def _bounds(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("min_points", 1) > data.get("max_points", MAX_POINTS):
            raise ValidationError({"min_points": ["Must not exceed max_points."]})


class HoldRulesSchema(StrictSchema):
    default_seconds = StrictInteger(load_default=900,
                                    validate=validate.Range(min=60, max=30 * 86400))
    max_seconds = StrictInteger(load_default=7 * 86400,
                                validate=validate.Range(min=60, max=30 * 86400))


class ClaimRulesSchema(StrictSchema):
    window_days = StrictInteger(
        load_default=30, validate=validate.Range(min=1, max=365),
        metadata={"description": "a member claims missing points at most this many days "
                  "after the purchase (the late-posting limit applies as well)"})
    max_open = StrictInteger(
        load_default=5, validate=validate.Range(min=1, max=100),
        metadata={"description": "open claims a member may have at once"})


class PriceSchema(StrictSchema):
    amount = DecimalString(required=True, positive=True, places=4, max_digits=12)
    currency = Currency(required=True)

    @validates_schema
    def _minor_unit(self, data: dict[str, Any], **kwargs: Any) -> None:
        amount, currency = data.get("amount"), data.get("currency")
        if amount is not None and currency and amount != round_money(amount, currency):
            raise ValidationError({"amount": [f"At most the minor unit of {currency}."]})


class MembershipPlanSchema(StrictSchema):
    """A paid membership plan: bought for ``period_months`` with points, or with money
    through a partner (at least one price)."""

    code = fields.String(required=True, validate=_CODE)
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    price_points = StrictInteger(load_default=None, allow_none=True,
                                 validate=validate.Range(min=1, max=MAX_POINTS),
                                 metadata={"description": "price in points (none: the plan "
                                           "is sold for money only)"})
    price = fields.Nested(PriceSchema, load_default=None, allow_none=True,
                          metadata={"description": "price in money, paid at a partner that "
                                    "records the purchase (none: points only)"})
    period_months = StrictInteger(required=True, validate=validate.Range(min=1, max=36))
    multiplier = DecimalString(load_default=Decimal(1), places=4, max_digits=2,
                               metadata={"description": "earn multiplier while the "
                                         "membership is in force, 1 to 10 (on top of the "
                                         "tier's)"})
    auto_renew_default = fields.Boolean(load_default=False, metadata={
        "description": "whether a purchase renews itself with points unless the member "
                       "says otherwise"})

    @validates_schema
    def _plan(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("price_points") is None and data.get("price") is None:
            raise ValidationError({"price_points": ["Give price_points, price or both."]})
        if "multiplier" in data and not 1 <= data["multiplier"] <= 10:
            raise ValidationError({"multiplier": ["Must be between 1 and 10."]})


class VoucherRulesSchema(StrictSchema):
    valid_days = StrictInteger(load_default=90, validate=validate.Range(min=1, max=3650),
                               metadata={"description": "days a reward's voucher can be "
                                         "used at the fulfilling partner's till"})
    unused = fields.String(
        load_default="refund", validate=validate.OneOf(["refund", "forfeit"]),
        metadata={"description": "what the daily job does with a voucher unused at its "
                  "expiry: refund the points to the member (a reversal of the redemption, "
                  "the points back in the lots they came from) or forfeit them (the "
                  "redemption stands)"})


class ProgramRulesSchema(StrictSchema):
    pending_days = StrictInteger(load_default=0, validate=validate.Range(min=0, max=365),
                                 metadata={"description": "days before earned points "
                                           "become spendable (the return window)"})
    expiry = fields.Nested(ExpiryRulesSchema, load_default=lambda: {"policy": "none",
                                                                 "months": None})
    tiers = fields.List(fields.Nested(TierSchema), required=True,
                        validate=validate.Length(min=1, max=10))
    bonuses = fields.Nested(BonusRulesSchema, load_default=lambda: {"welcome": 0, "birthday": 0})
    transfers = fields.Nested(TransferRulesSchema,
                              load_default=lambda: TransferRulesSchema().load({}))
    holds = fields.Nested(HoldRulesSchema, load_default=lambda: HoldRulesSchema().load({}))
    vouchers = fields.Nested(VoucherRulesSchema,
                             load_default=lambda: VoucherRulesSchema().load({}))
    earn_reversal_after_spend = fields.String(
        load_default="take_from_other_lots",
        validate=validate.OneOf(["take_from_other_lots", "refuse"]),
        metadata={"description": "when an earn is reversed after its points were spent: take "
                  "the points from the member's other lots, or refuse the reversal"},
    )
    settlement_model = fields.String(
        load_default="operator", validate=validate.OneOf(["operator", "clearing"]),
        metadata={"description": "who pays whom at settlement: operator (every partner "
                  "settles its statement with the coalition) or clearing (partners pay each "
                  "other for points spent across partners, and the coalition its fees)"},
    )
    late_posting_days = StrictInteger(
        load_default=30, validate=validate.Range(min=1, max=3650),
        metadata={"description": "a batch file's row that occurred more than this many "
                  "days before the file is booked is refused"})
    claims = fields.Nested(ClaimRulesSchema, load_default=lambda: ClaimRulesSchema().load({}))
    terms = fields.String(load_default="", validate=validate.Length(max=20_000))
    memberships = fields.List(fields.Nested(MembershipPlanSchema), load_default=list,
                              validate=validate.Length(max=20),
                              metadata={"description": "paid membership plans"})

    @validates_schema
    def _plans(self, data: dict[str, Any], **kwargs: Any) -> None:
        plans = [p["code"] for p in data.get("memberships") or []]
        if len(set(plans)) != len(plans):
            raise ValidationError({"memberships": ["Plan codes must be unique."]})

    @validates_schema
    def _tiers(self, data: dict[str, Any], **kwargs: Any) -> None:
        tiers = data.get("tiers") or []
        if not tiers:
            return
        if tiers[0]["threshold"] != 0:
            raise ValidationError({"tiers": ["The first tier must have threshold 0."]})
        thresholds = [t["threshold"] for t in tiers]
        if any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
            raise ValidationError({"tiers": ["Thresholds must rise strictly."]})
        codes = [t["code"] for t in tiers]
        if len(set(codes)) != len(codes):
            raise ValidationError({"tiers": ["Tier codes must be unique."]})
        holds = data.get("holds")
        if holds and holds["default_seconds"] > holds["max_seconds"]:
            raise ValidationError({"holds": ["default_seconds must not exceed max_seconds."]})


class PartnerTermsSchema(Schema):
    code = fields.String()
    name = fields.String()
    kind = fields.String()
    currency = fields.String()
    earn_rate = DecimalString(metadata={"description": "points per currency unit spent"})


class ProgramSchema(ProgramRulesSchema):
    version = fields.Integer(metadata={"description": "0 until rules are first published"})
    published_at = UTCTimestamp(allow_none=True)
    points_have_no_cash_value = fields.Boolean(dump_default=True)
    forfeiture = fields.String(metadata={"description": "what happens to points on closure"})
    partners = fields.List(fields.Nested(PartnerTermsSchema))
