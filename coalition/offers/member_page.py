"""``/member/offers``: the member page's offers, open to the member now, and activating an
opt-in one. Signed in as the rest of the member page (:mod:`coalition.member.page`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for

from coalition.errors import CoalitionError
from coalition.http.pages import check_csrf, protect_pages
from coalition.member.page import signed_in_member
from coalition.offers import member_offers

bp = Blueprint("member_offers", __name__, url_prefix="/member/offers")
protect_pages(bp, "member/base.html", "member_page.home", "Back to my points")


@bp.get("")
def offers() -> Any:
    member_id = signed_in_member()
    return render_template("member/offers.html", offers=member_offers.open_to(member_id))


@bp.post("/<int:offer_id>/activate")
def activate(offer_id: int) -> Any:
    member_id = signed_in_member()
    check_csrf()
    try:
        offer = member_offers.activate(member_id, offer_id)
    except CoalitionError as refused:
        flash(f"The offer was not activated: {refused.message}", "error")
    else:
        flash(f"“{offer['name']}” is active: it applies to your next purchases.", "success")
    return redirect(url_for(".offers"))
