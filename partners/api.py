"""The partner API: members, earn, burn, holds, reversals, history (API.md "Partner")."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import ValidationError

from coalition.errors import InsufficientScope, InvalidRequest
from coalition.http.guard import protected
from coalition.ledger import history, holds, members, reversals
from coalition.ledger.booking import PartnerRef
from coalition.ledger.idempotency import Outcome
from coalition.oauth.server import current_principal
from partners import transactions
from partners.api_schemas import (
    BalanceSchema,
    BurnSchema,
    CaptureSchema,
    EarnSchema,
    EnrolSchema,
    HoldCreateSchema,
    HoldSchema,
    MemberLookupArgsSchema,
    MemberNumber,
    MemberSchema,
    ReversalSchema,
    TransactionPageSchema,
    TransactionQueryArgsSchema,
    TransactionSchema,
    VoidSchema,
)

blp = Blueprint("partner_api", __name__, url_prefix="/v1", description="Partner API")

_PARTNER = ("partner",)
#: ids are 64-bit: a larger one in a path names nothing (404), rather than overflowing the
#: database driver (500)
_ID = "int(max=9223372036854775807)"
_REPLAY = {"Idempotent-Replayed": {"description": "true when this is the original result "
                                   "of an earlier request with the same partner_txn_id",
                                   "schema": {"type": "string"}}}


def _partner_id() -> int:
    partner_id = current_principal().partner_id
    assert partner_id is not None, "partner tokens always carry their partner"
    return partner_id


def _partner() -> PartnerRef:
    """The calling partner, as its token already told us."""
    principal = current_principal()
    assert principal.partner_id is not None and principal.partner_code is not None
    return PartnerRef(principal.partner_id, principal.partner_code,
                      principal.partner_currency or "")


def _answer(outcome: Outcome) -> tuple[dict[str, Any], int, dict[str, str]]:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return outcome.body, 201, headers


def _member_number(value: str) -> str:
    """Validate a member number from the path, so a typo is a 422 rather than a 404."""


    try:
        return MemberNumber()._deserialize(value, "member_number", None)
    except ValidationError as exc:
        raise InvalidRequest("Not a valid member number.",
                             errors={"member_number": exc.messages}) from exc


# --------------------------------------------------------------------------- members


@blp.route("/members")
class Members(MethodView):
    @protected("members:write", kinds=_PARTNER)
    @blp.arguments(EnrolSchema())
    @blp.response(201, MemberSchema, description="A new member")
    @blp.alt_response(200, schema=MemberSchema, description="An existing member, found or linked")
    @blp.alt_response(404, description="member_number names no member")
    @blp.alt_response(409, description="The reference is linked to another member, or the "
                      "member is closed")
    def post(self, data: dict[str, Any]) -> Any:
        """Enrol a member, or link your reference to an existing member."""
        member, created = members.enrol(_partner_id(), **data)
        return member, 201 if created else 200

    @protected("members:read", kinds=_PARTNER)
    @blp.arguments(MemberLookupArgsSchema(), location="query")
    @blp.response(200, MemberSchema)
    @blp.alt_response(404, description="No member has this reference of yours")
    def get(self, args: dict[str, Any]) -> Any:
        """Find a member by your own reference."""
        return members.get_member(_partner_id(), args)


@blp.route("/members/<member_number>")
class MemberResource(MethodView):
    @protected("members:read", kinds=_PARTNER)
    @blp.response(200, MemberSchema)
    @blp.alt_response(404, description="No such member")
    @blp.alt_response(422, description="The number fails its check digit")
    def get(self, member_number: str) -> Any:
        """A member with balances."""
        return members.get_member(_partner_id(), {"member_number": _member_number(member_number)})


@blp.route("/members/<member_number>/balance")
class MemberBalance(MethodView):
    @protected("members:read", kinds=_PARTNER)
    @blp.response(200, BalanceSchema)
    @blp.alt_response(404, description="No such member")
    @blp.alt_response(422, description="The number fails its check digit")
    def get(self, member_number: str) -> Any:
        """Balances, points expiring and tier."""
        return members.balance(_partner_id(), {"member_number": _member_number(member_number)})


# --------------------------------------------------------------------------- earn / burn

_TXN_ERRORS = (
    (404, "No such member"),
    (409, "member_closed, member_merged, insufficient_points, idempotency_conflict, "
          "balance_limit, no_rate_card (an earn or burn before your first rate card is in "
          "force), period_closed (a booking that met a settlement close and could not be "
          "booked after it; retry)"),
)


def _txn_errors(view: Any) -> Any:
    for status, description in _TXN_ERRORS:
        view = blp.alt_response(status, description=description)(view)
    return view


@blp.route("/earn")
class Earn(MethodView):
    @protected("points:earn", kinds=_PARTNER)
    @blp.arguments(EarnSchema())
    @blp.response(201, TransactionSchema, headers=_REPLAY)
    @_txn_errors
    def post(self, data: dict[str, Any]) -> Any:
        """Credit points for a spend or as given."""
        return _answer(transactions.earn(_partner(), data))


@blp.route("/burn")
class Burn(MethodView):
    @protected("points:burn", kinds=_PARTNER)
    @blp.arguments(BurnSchema())
    @blp.response(201, TransactionSchema, headers=_REPLAY)
    @_txn_errors
    def post(self, data: dict[str, Any]) -> Any:
        """Spend points at your store."""
        return _answer(transactions.burn(_partner(), data))


# --------------------------------------------------------------------------- holds


@blp.route("/holds")
class Holds(MethodView):
    @protected("points:burn", kinds=_PARTNER)
    @blp.arguments(HoldCreateSchema())
    @blp.response(201, HoldSchema, headers=_REPLAY)
    @_txn_errors
    def post(self, data: dict[str, Any]) -> Any:
        """Authorise a burn: hold points until captured or voided."""
        return _answer(holds.authorise_hold(_partner(), data))


@blp.route(f"/holds/<{_ID}:hold_id>")
class HoldResource(MethodView):
    @protected("points:burn", kinds=_PARTNER)
    @blp.response(200, HoldSchema)
    @blp.alt_response(404, description="No such hold of yours")
    def get(self, hold_id: int) -> Any:
        """One of your holds."""
        return holds.get_hold(_partner_id(), hold_id)


@blp.route(f"/holds/<{_ID}:hold_id>/capture")
class HoldCapture(MethodView):
    @protected("points:burn", kinds=_PARTNER)
    @blp.arguments(CaptureSchema())
    @blp.response(201, TransactionSchema, headers=_REPLAY)
    @blp.alt_response(404, description="No such hold of yours")
    @blp.alt_response(409, description="hold_not_open, idempotency_conflict, no_rate_card, "
                      "period_closed")
    def post(self, data: dict[str, Any], hold_id: int) -> Any:
        """Capture a hold in full or in part; the rest returns to the member."""
        return _answer(transactions.capture(_partner(), hold_id, data))


@blp.route(f"/holds/<{_ID}:hold_id>/void")
class HoldVoid(MethodView):
    @protected("points:burn", kinds=_PARTNER)
    @blp.arguments(VoidSchema())
    @blp.response(201, HoldSchema, headers=_REPLAY)
    @blp.alt_response(404, description="No such hold of yours")
    @blp.alt_response(409, description="hold_not_open, idempotency_conflict, period_closed")
    def post(self, data: dict[str, Any], hold_id: int) -> Any:
        """Void a hold; every held point returns to the member."""
        return _answer(holds.cancel_hold(_partner(), hold_id, data))


# --------------------------------------------------------------------------- reversals, history


@blp.route(f"/transactions/<{_ID}:transaction_id>/reversals")
class Reversals(MethodView):
    @protected("points:earn", "points:burn", kinds=_PARTNER, any_of=True)
    @blp.arguments(ReversalSchema())
    @blp.response(201, TransactionSchema, headers=_REPLAY)
    @blp.alt_response(404, description="No such transaction of yours")
    @blp.alt_response(409, description="member_closed, insufficient_points, "
                      "idempotency_conflict, no_rate_card, period_closed")
    def post(self, data: dict[str, Any], transaction_id: int) -> Any:
        """Reverse your earn, burn or capture, wholly or in part (by points or refund).

        An earn reversal needs ``points:earn``; a burn or capture reversal ``points:burn``.
        """
        scopes = current_principal().scopes
        may_reverse = {kind for kind in ("earn", "burn") if f"points:{kind}" in scopes}
        try:
            outcome = transactions.reverse(_partner(), transaction_id, data, may_reverse)
        except reversals.ReversalNotPermitted as exc:
            raise InsufficientScope(f"Reversing a {exc.kind} needs the scope "
                                    f"points:{exc.needs}.") from None
        return _answer(outcome)


@blp.route("/transactions")
class Transactions(MethodView):
    @protected("transactions:read", kinds=_PARTNER)
    @blp.arguments(TransactionQueryArgsSchema(), location="query")
    @blp.response(200, TransactionPageSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Your transactions, newest first; follow ``next_cursor`` for more."""
        return history.list_transactions(_partner_id(), args)


@blp.route(f"/transactions/<{_ID}:transaction_id>")
class TransactionResource(MethodView):
    @protected("transactions:read", kinds=_PARTNER)
    @blp.response(200, TransactionSchema)
    @blp.alt_response(404, description="No such transaction of yours")
    def get(self, transaction_id: int) -> Any:
        """One of your transactions."""
        return history.get_transaction(_partner_id(), transaction_id)
