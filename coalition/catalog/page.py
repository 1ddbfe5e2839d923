"""The member page's catalog: ``/member/rewards`` (browse, redeem after a confirm step) and
``/member/vouchers`` (each voucher with its scannable QR code, code, expiry and status).

Signed in the way the member page is (:data:`coalition.member.page.page_sign_in`); each view
calls the same services as ``/v1/rewards``, ``/v1/me/redemptions`` and ``/v1/me/vouchers``.
"""

from __future__ import annotations

import secrets
from typing import Any

import segno
from flask import Blueprint, flash, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError, fields

from coalition.catalog import redemptions, rewards
from coalition.errors import CoalitionError
from coalition.http.pages import check_csrf, protect_pages
from coalition.member import account
from coalition.member.forms import FormCheckbox, PageForm, _key, field_errors
from coalition.member.page import signed_in_member

bp = Blueprint("catalog_page", __name__, url_prefix="/member")
protect_pages(bp, "member/base.html", "member_page.home", "Back to my points")


class FormId(fields.Field):
    """The id of what the member chose, as the page wrote it."""

    default_error_messages = {"invalid": "Choose a reward from the catalog."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not value.isascii() or not value.isdigit() \
                or not 0 < int(value) < 2**63:
            raise self.make_error("invalid")
        return int(value)


class RedeemForm(PageForm):
    reward_id = FormId(required=True, error_messages={
        "required": "Choose a reward from the catalog."})
    idempotency_key = _key()
    #: the member saw what it costs and agreed (the page asks first)
    confirmed = FormCheckbox(load_default=False)


def qr_svg(code: str) -> Markup:
    """The voucher's code as a QR code, inline SVG (segno), titled for screen readers."""
    svg = segno.make(code, error="m").svg_inline(
        scale=5, border=2, dark="#000", light="#fff", omitsize=True,
        title=f"QR code of voucher {code}")
    return Markup(svg)  # noqa: S704 - segno's own SVG of a base32 code, nothing typed in


def grouped(code: str) -> str:
    """A code as it is read out or typed at a till: groups of four."""
    return " ".join(code[i:i + 4] for i in range(0, len(code), 4))


@bp.get("/rewards")
def catalog() -> Any:
    member_id = signed_in_member()
    me = account.summary(member_id)
    return render_template("member/rewards.html", rewards=rewards.catalog(),
                           available=me["available"])


@bp.post("/rewards/redeem")
def redeem() -> Any:
    member_id = signed_in_member()
    check_csrf()
    try:
        form = RedeemForm().load(request.form.to_dict())
    except ValidationError as refused:
        for message in field_errors(refused).values():
            flash(message, "error")
        return redirect(url_for(".catalog"))
    if not form["confirmed"]:
        # first show what it costs and where it is used, and redeem once the member agrees
        try:
            reward = rewards.reward(form["reward_id"])
        except CoalitionError as refused:
            flash(f"Nothing was redeemed: {refused.message}", "error")
            return redirect(url_for(".catalog"))
        return render_template("member/confirm_redemption.html", reward=reward,
                               available=account.summary(member_id)["available"],
                               request_key=secrets.token_urlsafe(18))
    try:
        outcome = redemptions.redeem(member_id, form["reward_id"],
                                     request_id=form["idempotency_key"])
    except CoalitionError as refused:
        flash(f"Nothing was redeemed: {refused.message}", "error")
        return redirect(url_for(".catalog"))
    flash(f"Redeemed for {outcome.body['points']:,} points. Your voucher is below."
          + (" (This form was already sent; it was done once.)" if outcome.replayed else ""),
          "success")
    return redirect(url_for(".vouchers", _anchor=f"voucher-{outcome.body['id']}"))


@bp.get("/vouchers")
def vouchers() -> Any:
    member_id = signed_in_member()
    return render_template("member/vouchers.html", vouchers=redemptions.vouchers_of(member_id),
                           qr_svg=qr_svg, grouped=grouped)
