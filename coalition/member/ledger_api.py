"""Member ledger operations over HTTP: ``POST /v1/me/transfers``, ``/v1/me/donations``,
``/v1/me/close`` (member tokens), and the operator's ``POST /v1/admin/members/merge``.

Thin: parse, call one use case of :mod:`coalition.ledger`, serialise.
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import EXCLUDE, Schema, fields, validate

from coalition.audit.views import current_actor
from coalition.errors import Forbidden
from coalition.http.guard import protected
from coalition.ledger import closure, idempotency, merge, transfers
from coalition.ledger.idempotency import Outcome
from coalition.oauth.server import current_principal
from coalition.schemas import (
    MemberNumber,
    PointsField,
    StrictBoolean,
    StrictSchema,
    UTCTimestamp,
    WholeMatch,
)

blp = Blueprint("member_ledger", __name__, url_prefix="/v1/me",
                description="Member: transfers, donations, closing the account")
admin_blp = Blueprint("admin_members", __name__, url_prefix="/v1/admin/members",
                      description="Operator: members")

_MEMBER = ("public",)
_REPLAY = {"Idempotent-Replayed": {"description": "true when this is the original result "
                                   "of an earlier request with the same Idempotency-Key",
                                   "schema": {"type": "string"}}}


# --------------------------------------------------------------------------- schemas


class IdempotencyHeaderSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=WholeMatch(idempotency.IDEMPOTENCY_KEY, error=idempotency.IDEMPOTENCY_KEY_RULE),
        metadata={"description": "makes a retry safe: the same key with the same body "
                  "answers with the original result; with a different body, 409 "
                  "idempotency_conflict. Without it, every request is a new one."})


class BalanceAfterSchema(Schema):
    available = fields.Integer()
    pending = fields.Integer()
    held = fields.Integer()


class TransferRequestSchema(StrictSchema):
    to_member_number = MemberNumber(required=True)
    points = PointsField(required=True)
    share_name = StrictBoolean(load_default=False, metadata={
        "description": "show the receiver your first name; otherwise the receiver sees "
                       "that the points came from \"a member\" (never your number)"})


class TransferSchema(Schema):
    id = fields.Integer()
    type = fields.String(metadata={"enum": ["transfer"]})
    to_member_number = fields.String()
    points = fields.Integer()
    booked_at = UTCTimestamp()
    balance = fields.Nested(BalanceAfterSchema, metadata={"description": "yours, just after"})


class DonationRequestSchema(StrictSchema):
    partner = fields.String(required=True, validate=validate.Length(min=1, max=32),
                            metadata={"description": "code of a charity partner"})
    points = PointsField(required=True)


class DonationSchema(Schema):
    id = fields.Integer()
    type = fields.String(metadata={"enum": ["donation"]})
    partner = fields.String()
    points = fields.Integer()
    booked_at = UTCTimestamp()
    balance = fields.Nested(BalanceAfterSchema, metadata={"description": "yours, just after"})


class ForfeitedSchema(Schema):
    available = fields.Integer()
    pending = fields.Integer()


class ClosureSchema(Schema):
    member_number = fields.String()
    status = fields.String()
    closed_at = UTCTimestamp()
    forfeited = fields.Nested(ForfeitedSchema, metadata={"description": "points forfeited "
                              "(points have no cash value)"})
    holds_voided = fields.Integer()


class MergeRequestSchema(StrictSchema):
    absorbed = MemberNumber(required=True, metadata={"description": "the duplicate"})
    survivor = MemberNumber(required=True, metadata={"description": "the member that keeps "
                                                     "everything"})


class MergedMemberSchema(Schema):
    member_number = fields.String()
    status = fields.String()
    merged_into = fields.String()


class SurvivorSchema(Schema):
    member_number = fields.String()
    status = fields.String()
    tier = fields.String()
    balance = fields.Nested(BalanceAfterSchema)


class MovedSchema(Schema):
    available = fields.Integer()
    pending = fields.Integer()
    lots = fields.Integer()
    links = fields.Integer()
    holds_voided = fields.Integer()


class MergeSchema(Schema):
    absorbed = fields.Nested(MergedMemberSchema)
    survivor = fields.Nested(SurvivorSchema)
    moved = fields.Nested(MovedSchema)
    entry_id = fields.Integer(allow_none=True, metadata={
        "description": "the merge entry (none when there were no points to move)"})
    already_merged = fields.Boolean(metadata={"description": "true when the absorbed member "
                                              "was already merged into the survivor"})


# --------------------------------------------------------------------------- member


def _member_id() -> int:
    member_id = current_principal().member_id
    if member_id is None:
        raise Forbidden("This call needs a member's token.")
    return member_id


def _answer(outcome: Outcome) -> tuple[dict[str, Any], int, dict[str, str]]:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return outcome.body, 201, headers


@blp.route("/transfers")
class Transfers(MethodView):
    @protected("member", kinds=_MEMBER)
    @blp.arguments(TransferRequestSchema())
    @blp.arguments(IdempotencyHeaderSchema(), location="headers")
    @blp.response(201, TransferSchema, headers=_REPLAY)
    @blp.alt_response(404, description="No member has to_member_number")
    @blp.alt_response(409, description="insufficient_points, transfer_limit (transfers "
                      "disabled, below min_points, above max_points, or over "
                      "max_points_per_day since midnight UTC), member_closed, "
                      "member_merged, balance_limit, idempotency_conflict, period_closed")
    @blp.alt_response(422, description="invalid_request, e.g. a transfer to yourself")
    def post(self, data: dict[str, Any], headers: dict[str, Any]) -> Any:
        """Give points to another member (the program's transfer limits apply)."""
        return _answer(transfers.transfer(_member_id(), data["to_member_number"],
                                           data["points"],
                                           request_id=headers.get("idempotency_key"),
                                           share_name=data["share_name"]))


@blp.route("/donations")
class Donations(MethodView):
    @protected("member", kinds=_MEMBER)
    @blp.arguments(DonationRequestSchema())
    @blp.arguments(IdempotencyHeaderSchema(), location="headers")
    @blp.response(201, DonationSchema, headers=_REPLAY)
    @blp.alt_response(409, description="insufficient_points, member_closed, member_merged, "
                      "idempotency_conflict, no_rate_card (the charity has no rate card in "
                      "force yet), period_closed")
    @blp.alt_response(422, description="invalid_request, e.g. the partner is not an active "
                      "charity")
    def post(self, data: dict[str, Any], headers: dict[str, Any]) -> Any:
        """Donate points to a charity partner."""
        return _answer(transfers.donate(_member_id(), data["partner"], data["points"],
                                         request_id=headers.get("idempotency_key")))


@blp.route("/close")
class Close(MethodView):
    @protected("member", kinds=_MEMBER)
    @blp.response(200, ClosureSchema)
    @blp.alt_response(409, description="member_closed, member_merged")
    def post(self) -> Any:
        """Close your account: remaining points are forfeited, personal data erased, and
        this token (and every other one of yours) stops working. It cannot be undone."""
        return closure.close(_member_id())


# --------------------------------------------------------------------------- operator


@admin_blp.route("/merge")
class Merge(MethodView):
    @protected("admin", kinds=("operator",))
    @admin_blp.arguments(MergeRequestSchema())
    @admin_blp.response(200, MergeSchema)
    @admin_blp.alt_response(404, description="No member has one of the numbers")
    @admin_blp.alt_response(409, description="member_closed, member_merged, balance_limit")
    @admin_blp.alt_response(422, description="invalid_request, e.g. the same number twice")
    def post(self, data: dict[str, Any]) -> Any:
        """Merge a member found twice: points, lots, links and history move to the
        survivor; the absorbed number answers with a pointer to it from then on."""
        actor = current_actor()
        return merge.merge(data["absorbed"], data["survivor"],
                                operator=actor.client_id, actor=actor)
