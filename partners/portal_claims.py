"""``/partner/claims``: members' missing-points claims at the signed-in person's partner,
confirmed (the earn booked as the API books it) or refused with a reason the member sees.
Signed in as the portal is; answering takes the operator role
(:func:`partners.portal.signed_in_as`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from coalition.claims import answers, queries
from coalition.claims.models import STATUSES
from coalition.errors import CoalitionError, NotFound
from coalition.http.pages import check_csrf, protect_pages
from coalition.ledger.booking import PartnerRef, partner_of
from coalition.oauth.partner_users import SignedInPartnerUser
from partners.claims_booking import book_reported
from partners.portal import ID, PAGE, signed_in_as

bp = Blueprint("partner_claims", __name__, url_prefix="/partner/claims")
protect_pages(bp, "partner/base.html", "partner_portal.home", "Back to the portal")

REASON_MAX = 500


def _partner(staff: SignedInPartnerUser) -> PartnerRef:
    return partner_of(staff.partner_id)


def _list(staff: SignedInPartnerUser, errors: dict[int, str] | None = None,
          status: int = 200) -> Any:
    shown = request.args.get("status", "open")
    if shown not in (*STATUSES, "all"):
        shown = "open"
    page = queries.partner_claims(staff.partner_id, {
        "limit": PAGE, "status": None if shown == "all" else shown})
    return render_template("partner/claims.html", staff=staff, page=page, shown=shown,
                           statuses=(*STATUSES, "all"), errors=errors or {},
                           reason_max=REASON_MAX), status


@bp.get("")
def claim_list() -> Any:
    return _list(signed_in_as("viewer"))


def _answered(claim_id: int, work: Any) -> Any:
    try:
        claim, replayed = work()
    except NotFound:
        abort(404, f"No claim {claim_id}.")
    except CoalitionError as refused:
        flash(f"Claim {claim_id} was not answered: {refused.message}", "error")
        return redirect(url_for(".claim_list"))
    if replayed:
        flash(f"Claim {claim_id} was {claim['status']} already.", "info")
    elif claim["status"] == "confirmed":
        flash(f"Claim {claim_id} is confirmed: {claim['points']:,} points booked for member "
              f"{claim['member_number']}.", "success")
    else:
        flash(f"Claim {claim_id} is refused; the member is told why.", "success")
    return redirect(url_for(".claim_list"))


@bp.post(f"/<{ID}:claim_id>/confirm")
def confirm(claim_id: int) -> Any:
    staff = signed_in_as("operator")
    check_csrf()
    return _answered(claim_id, lambda: answers.confirm(
        _partner(staff), claim_id, staff.login, book=book_reported))


@bp.post(f"/<{ID}:claim_id>/refuse")
def refuse(claim_id: int) -> Any:
    staff = signed_in_as("operator")
    check_csrf()
    reason = request.form.get("reason", "").strip()
    if not reason or len(reason) > REASON_MAX:
        return _list(staff, {claim_id: f"Say why, in 1 to {REASON_MAX} characters: the "
                                       f"member reads it."}, 422)
    return _answered(claim_id, lambda: answers.refuse(
        _partner(staff), claim_id, reason, staff.login))
