"""``/member/claims``: the member page's "Missing points": the claim form and the
member's claims with their answers. Signed in as the member page is
(:data:`coalition.member.page.page_sign_in`); the views call the same use cases as
``/v1/me/claims``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError

from coalition.claims import opening, queries
from coalition.claims.forms import ClaimForm
from coalition.errors import CoalitionError
from coalition.http.pages import check_csrf, protect_pages
from coalition.member.forms import field_errors
from coalition.member.page import signed_in_member
from coalition.program.service import current_rules, program_terms

bp = Blueprint("member_claims", __name__, url_prefix="/member/claims")
protect_pages(bp, "member/base.html", "member_page.home", "Back to my points")

LIST = 50


def _page(member_id: int, form: dict[str, str], errors: dict[str, str],
          status: int = 200) -> Any:
    partners = [p for p in program_terms()["partners"] if p["kind"] == "merchant"]
    rules = current_rules()
    days = min(rules["claims"]["window_days"], rules["late_posting_days"])
    return render_template("member/claims.html", partners=partners, form=form,
                           errors=errors, days=days,
                           claims=queries.member_claims(member_id, {"limit": LIST})),\
        status


@bp.get("")
def claims() -> Any:
    return _page(signed_in_member(), {}, {})


@bp.post("")
def open_claim() -> Any:
    member_id = signed_in_member()
    check_csrf()
    form = {k: request.form.get(k, "") for k in ("partner", "occurred_on", "amount",
                                                  "receipt")}
    try:
        data = ClaimForm().load(request.form.to_dict())
    except ValidationError as refused:
        return _page(member_id, form, field_errors(refused), 422)
    currency = next((p["currency"] for p in program_terms()["partners"]
                     if p["code"] == data["partner"]), "")
    try:
        claim = opening.open_claim(member_id, {
            "partner": data["partner"], "receipt": data["receipt"],
            "spend": {"amount": data["amount"], "currency": currency},
            "occurred_at": data["occurred_on"]})
    except CoalitionError as refused:
        errors = {("occurred_on" if k == "occurred_at" else "amount" if k == "spend" else k):
                  refused.message for k in (refused.errors or {}) if k in
                  ("partner", "occurred_at", "spend", "receipt")}
        if not errors:
            flash(f"The claim was not sent: {refused.message}", "error")
        return _page(member_id, form, errors, refused.status)
    flash(f"Your claim for receipt {claim['receipt']} at {claim['partner_name']} is sent: "
          f"you will be told when they answer.", "success")
    return redirect(url_for(".claims"))
