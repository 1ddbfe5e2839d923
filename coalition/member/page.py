"""``/member``: the member web page.

The page is an OAuth public client of this server like any member app, signed in to the
way every page is (:mod:`coalition.http.signin`, scope ``member``, redirect URI
``<this site>/member/callback``); each view then calls the same service functions as
``/v1/me``.
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
    session,
    url_for,
)
from marshmallow import Schema, ValidationError

from coalition.errors import CoalitionError
from coalition.http.pages import check_csrf, protect_pages
from coalition.http.signin import PageSignIn, oauth_call
from coalition.ledger import closure, members, transfers
from coalition.member import account, signin
from coalition.member.forms import (
    ActivationForm,
    CloseForm,
    ConsentForm,
    DonationForm,
    TransferForm,
    field_errors,
)
from coalition.oauth.server import Principal
from coalition.program.service import program_terms

bp = Blueprint("member_page", __name__, url_prefix="/member")
protect_pages(bp, "member/base.html", "member_page.home", "Back to my points")

HISTORY_PAGE = 20

ENTRY_LABELS = {
    "earn": "Earned", "burn": "Spent", "earn_reversal": "Earn reversed",
    "burn_reversal": "Spend refunded", "hold": "Reserved for a purchase",
    "hold_capture": "Reserved points spent", "hold_void": "Reservation released",
    "release": "Became spendable", "expiry": "Expired", "transfer": "Transfer",
    "donation": "Donation", "forfeiture": "Forfeited", "bonus": "Bonus",
    "adjustment": "Adjustment", "merge": "Accounts merged", "membership": "Paid membership",
}


def describe(entry: dict[str, Any]) -> str:
    """A history line as a person would say it: ``Reserved 400 at Northwind``, ``Spent 250
    of the reservation at Northwind, released 150``, ``Released 150 of the reservation``."""
    kind, points, partner = entry["type"], f"{entry['points']:,}", entry.get("partner_name")
    at = f" at {partner}" if partner else ""
    if kind == "hold":
        return f"Reserved {points}{at}"
    if kind == "hold_capture":
        released = -entry["change"]["held"] - entry["points"]
        return f"Spent {points} of the reservation{at}" + (
            f", released {released:,}" if released > 0 else "")
    if kind == "hold_void":
        return f"Released {-entry['change']['held']:,} of the reservation{at}"
    return ENTRY_LABELS.get(kind, kind) + (f" · {partner}" if partner else "")


# --------------------------------------------------------------------------- sign in and out


def _member(principal: Principal) -> int | None:
    return principal.member_id if "member" in principal.scopes else None


page_sign_in = PageSignIn(bp, name="Member page", scope="member", tokens="member_tokens",
                          pending="oauth_pending", who=_member)


def signed_in_member() -> int:
    """The member signed in to the member page, or off to its sign-in (and back to the
    page asked for after): for every blueprint of the member page."""
    return int(page_sign_in.require())


# --------------------------------------------------------------------------- pages


@bp.get("")
def home() -> Any:
    member_id = page_sign_in.signed_in()
    if member_id is None:
        return render_template("member/welcome.html")
    return _account_page(member_id)


def _account_page(member_id: int, status: int = 200) -> Any:
    me = account.summary(member_id)
    history = account.transactions(member_id, {"limit": HISTORY_PAGE,
                                               "cursor": request.args.get("cursor")})
    terms = program_terms()
    charities = [p for p in terms["partners"] if p["kind"] == "charity"]
    return render_template(
        "member/account.html", me=me, history=history, describe=describe, terms=terms,
        charities=charities, consents=members.consents(member_id),
        request_key=secrets.token_urlsafe(18),
        older=request.args.get("cursor") is not None), status


@bp.get("/terms")
def terms() -> Any:
    return render_template("member/terms.html", terms=program_terms())


@bp.route("/activate", methods=["GET", "POST"])
def activate() -> Any:
    if request.method == "GET":
        return render_template("member/activate.html", form={}, errors={})
    check_csrf()
    form = {"member_number": request.form.get("member_number", ""),
            "activation_code": request.form.get("activation_code", "")}
    try:
        data = ActivationForm().load(request.form.to_dict())
    except ValidationError as refused:
        return render_template("member/activate.html", form=form,
                               errors=field_errors(refused)), 422
    try:
        signin.activate(data["member_number"], data["activation_code"], data["password"])
    except signin.SignInLocked as locked:
        return render_template("member/activate.html", form=form, errors={},
                               problem=locked.message), 429, locked.headers
    except CoalitionError as failed:
        return render_template("member/activate.html", form=form, errors={},
                               problem=failed.message), 422
    flash("Your account is active. Sign in with your member number and new password.",
          "success")
    return redirect(url_for(".home"))


# --------------------------------------------------------------------------- actions


def _form(schema: Schema, member_id: int) -> dict[str, Any]:
    """The posted form as its schema parses it; if a field is refused, the answer is 422:
    the account page with each refused field's message, and nothing is done."""
    try:
        return schema.load(request.form.to_dict())
    except ValidationError as refused:
        for message in field_errors(refused).values():
            flash(message, "error")
        abort(make_response(_account_page(member_id, 422)))


@bp.post("/transfer")
def transfer() -> Any:
    member_id = page_sign_in.require()
    check_csrf()
    form = _form(TransferForm(), member_id)
    to, points = form["to_member_number"], form["points"]
    if not form["confirmed"]:
        # first show whom the points would reach, and send only once the member agrees
        try:
            to_whom = account.recipient(to)
        except CoalitionError as refused:
            flash(f"The transfer was not made: {refused.message}", "error")
            return redirect(url_for(".home"))
        return render_template("member/confirm_transfer.html", recipient=to_whom,
                               points=points, share_name=form["share_name"],
                               request_key=form["idempotency_key"] or "")
    try:
        outcome = transfers.transfer(member_id, to, points, share_name=form["share_name"],
                                      request_id=form["idempotency_key"])
    except CoalitionError as refused:
        flash(f"The transfer was not made: {refused.message}", "error")
    else:
        flash(f"You sent {points:,} points to member {to}."
              + (" (This form was already sent; it was done once.)"
                 if outcome.replayed else ""), "success")
    return redirect(url_for(".home"))


@bp.post("/donate")
def donate() -> Any:
    member_id = page_sign_in.require()
    check_csrf()
    form = _form(DonationForm(), member_id)
    try:
        outcome = transfers.donate(member_id, form["partner"], form["points"],
                                    request_id=form["idempotency_key"])
    except CoalitionError as refused:
        flash(f"The donation was not made: {refused.message}", "error")
    else:
        flash(f"You donated {form['points']:,} points. Thank you."
              + (" (This form was already sent; it was done once.)"
                 if outcome.replayed else ""), "success")
    return redirect(url_for(".home"))


@bp.post("/consents")
def consent() -> Any:
    """Share the member's personal data with a partner, or stop sharing it."""
    member_id = page_sign_in.require()
    check_csrf()
    form = _form(ConsentForm(), member_id)
    try:
        done = members.set_consent(member_id, form["partner"], form["share"])
    except CoalitionError as refused:
        flash(f"Your choice was not saved: {refused.message}", "error")
    else:
        flash(f"{done['partner_name']} now sees your name, e-mail and birth date."
              if done["share"] else
              f"{done['partner_name']} no longer sees your personal details, only what it "
              f"recorded itself.", "success")
    return redirect(url_for(".home"))


@bp.post("/close")
def close() -> Any:
    member_id = page_sign_in.require()
    check_csrf()
    _form(CloseForm(), member_id)
    try:
        closure.close(member_id)
    except CoalitionError as refused:
        flash(f"The account was not closed: {refused.message}", "error")
        return redirect(url_for(".home"))
    tokens = session.pop("member_tokens", None)
    if tokens:
        oauth_call("/oauth/revoke", {"token": tokens.get("refresh_token") or "",
                                      "client_id": tokens["client_id"]})
    session.clear()
    flash("Your account is closed.", "info")
    return redirect(url_for(".home"))
