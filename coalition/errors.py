"""Domain exceptions. Services raise these; :mod:`coalition.http.errors` maps them to HTTP.

Each carries a stable machine-readable ``code`` that partners can program against.
"""

from __future__ import annotations

from typing import Any


class CoalitionError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class InvalidRequest(CoalitionError):
    status, code = 422, "invalid_request"


class Unauthorized(CoalitionError):
    status, code = 401, "unauthorized"


class InsufficientScope(CoalitionError):
    status, code = 403, "insufficient_scope"


class Forbidden(CoalitionError):
    status, code = 403, "forbidden"


class NotFound(CoalitionError):
    status, code = 404, "not_found"


class Conflict(CoalitionError):
    status, code = 409, "conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class InsufficientPoints(Conflict):
    code = "insufficient_points"


class MemberClosed(Conflict):
    code = "member_closed"


class PeriodClosed(Conflict):
    code = "period_closed"


class NoRateCard(Conflict):
    """The partner has no rate card in force, so settlement could not price the booking."""

    code = "no_rate_card"


class MemberMerged(Conflict):
    code = "member_merged"


class HoldNotOpen(Conflict):
    code = "hold_not_open"


class BalanceLimit(Conflict):
    code = "balance_limit"


class TransferLimit(Conflict):
    """A transfer the program's transfer rules refuse (disabled, below the minimum, above
    the maximum, or over the sender's daily allowance)."""

    code = "transfer_limit"


class SaleAlreadyBooked(Conflict):
    """A missing-points claim, or its confirmation, for a sale the partner has booked."""

    code = "already_booked"


class ClaimAnswered(Conflict):
    """A claim the partner confirmed or refused already: the answer is final."""

    code = "claim_answered"


class ClaimLimit(Conflict):
    """A member with as many open claims as the program allows."""

    code = "claim_limit"
class MembershipActive(Conflict):
    """The member already holds a paid membership in force (cancelled or not): one plan at
    a time."""

    code = "membership_active"
class OutOfStock(Conflict):
    """A reward with no units left, none left for this member, or not on offer now."""

    code = "out_of_stock"


class VoucherUsed(Conflict):
    code = "voucher_used"


class VoucherExpired(Conflict):
    code = "voucher_expired"


class MembershipRequired(Conflict):
    """A member-only reward, redeemed by a member without the paid membership it needs."""

    code = "membership_required"
