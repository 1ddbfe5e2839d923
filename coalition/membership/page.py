"""``/member/membership``: the member page's "Membership": the plans on sale, the member's
current membership and its period, buy with points, auto-renew, cancel.

Signed in as the member page is (:data:`coalition.member.page.page_sign_in`); each action
calls the same use case as ``/v1/me/memberships``.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from marshmallow import Schema, ValidationError

from coalition import clock
from coalition.errors import CoalitionError
from coalition.http.pages import check_csrf, protect_pages
from coalition.member import account
from coalition.member.forms import field_errors
from coalition.member.page import signed_in_member
from coalition.membership import changes, purchase, queries
from coalition.membership.forms import AutoRenewForm, BuyForm, CancelForm
from coalition.membership.plans import plans
from coalition.program.service import current_rules

bp = Blueprint("membership_page", __name__, url_prefix="/member/membership")
protect_pages(bp, "member/base.html", "member_page.home", "Back to my points")


def _page(member_id: int, status: int = 200) -> Any:
    mine = queries.memberships_of(member_id, clock.utcnow())
    return render_template(
        "member/membership.html", plans=plans(current_rules()), mine=mine,
        available=account.summary(member_id)["available"],
        request_key=secrets.token_urlsafe(18)), status


def _form(schema: Schema, member_id: int) -> dict[str, Any]:
    """The posted form as its schema parses it, or 422: the page with each refused
    field's message, and nothing done."""
    try:
        return schema.load(request.form.to_dict())
    except ValidationError as refused:
        for message in field_errors(refused).values():
            flash(message, "error")
        abort(make_response(_page(member_id, 422)))


@bp.get("")
def membership() -> Any:
    return _page(signed_in_member())


@bp.post("/buy")
def buy() -> Any:
    member_id = signed_in_member()
    check_csrf()
    form = _form(BuyForm(), member_id)
    try:
        outcome = purchase.buy_with_points(member_id, form["plan"], form["auto_renew"],
                                           request_id=form["idempotency_key"])
    except CoalitionError as refused:
        flash(f"The membership was not bought: {refused.message}", "error")
    else:
        body = outcome.body
        flash(f"You are a {body['name']} member until {body['ends_at']:%-d %B %Y}."
              + (" (This form was already sent; it was done once.)"
                 if outcome.replayed else ""), "success")
    return redirect(url_for(".membership"))


@bp.post("/auto-renew")
def auto_renew() -> Any:
    member_id = signed_in_member()
    check_csrf()
    form = _form(AutoRenewForm(), member_id)
    try:
        body = changes.set_auto_renew(member_id, form["auto_renew"])
    except CoalitionError as refused:
        flash(f"Your choice was not saved: {refused.message}", "error")
    else:
        flash(f"Your membership renews with points on {body['ends_at']:%-d %B %Y}."
              if body["auto_renew"] else
              f"Your membership ends on {body['ends_at']:%-d %B %Y} unless you renew it.",
              "success")
    return redirect(url_for(".membership"))


@bp.post("/cancel")
def cancel() -> Any:
    member_id = signed_in_member()
    check_csrf()
    _form(CancelForm(), member_id)
    try:
        body = changes.cancel(member_id)
    except CoalitionError as refused:
        flash(f"The membership was not cancelled: {refused.message}", "error")
    else:
        flash(f"Cancelled. Your {body['name']} benefits last until "
              f"{body['ends_at']:%-d %B %Y}; nothing is refunded.", "info")
    return redirect(url_for(".membership"))
