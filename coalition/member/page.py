"""``/member``: the member web page.

The page is an OAuth public client of this server like any member app: it signs the member
in with the authorization-code grant and PKCE (a fresh verifier and state per sign-in),
exchanges the code at ``/oauth/token`` from the server, and keeps the tokens in the
(signed, HTTP-only) session cookie. Each page view proves the access token the way the API
does, refreshes it (with rotation) when it is about to expire, and then calls the same
service functions as ``/v1/me``. Signing out revokes the tokens at ``/oauth/revoke``.

The page's client is the oldest public client registered with the redirect URI
``<this site>/member/callback``. Outside production one is registered on first use; in
production the operator registers it (``coalition client create --public``), so a forged
``Host`` header can never register a redirect URI.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
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
from coalition.oauth.server import principal_for
from coalition.pages import (
    check_csrf,
    keep_tokens,
    oauth_call,
    page_client_id,
    protect_pages,
    revoke_tokens,
    token_refused,
)
from coalition.program.service import program_terms

bp = Blueprint("member_page", __name__, url_prefix="/member")
protect_pages(bp)

#: refresh this long before the access token expires
REFRESH_MARGIN = 30
HISTORY_PAGE = 20

ENTRY_LABELS = {
    "earn": "Earned", "burn": "Spent", "earn_reversal": "Earn reversed",
    "burn_reversal": "Spend refunded", "hold": "Reserved for a purchase",
    "hold_capture": "Reserved points spent", "hold_void": "Reservation released",
    "release": "Became spendable", "expiry": "Expired", "transfer": "Transfer",
    "donation": "Donation", "forfeiture": "Forfeited", "bonus": "Bonus",
    "adjustment": "Adjustment", "merge": "Accounts merged",
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


# --------------------------------------------------------------------------- the OAuth client


def _redirect_uri() -> str:
    return url_for("member_page.callback", _external=True)


def _client_id() -> str:
    return page_client_id(_redirect_uri(), "Member page", "member")


def _keep_tokens(token: dict[str, Any], client_id: str) -> None:
    keep_tokens("member_tokens", token, client_id)


def _signed_in_member() -> int | None:
    """The member whose tokens this session holds, refreshing them if needed."""
    tokens = session.get("member_tokens")
    if not tokens:
        return None
    if tokens["expires_at"] - REFRESH_MARGIN <= time.time():
        status, body = oauth_call("/oauth/token", {
            "grant_type": "refresh_token", "refresh_token": tokens.get("refresh_token") or "",
            "client_id": tokens["client_id"]})
        if status != 200:
            session.pop("member_tokens", None)
            return None
        _keep_tokens(body, tokens["client_id"])
        tokens = session["member_tokens"]
    principal = principal_for(tokens["access_token"])
    if (principal is None or principal.kind != "public" or "member" not in principal.scopes
            or principal.member_id is None):
        session.pop("member_tokens", None)
        return None
    return principal.member_id


def _require_member() -> int:
    member_id = _signed_in_member()
    if member_id is None:
        abort(redirect(url_for(".sign_in")))
    return member_id


# --------------------------------------------------------------------------- sign in and out


@bp.get("/signin")
def sign_in() -> Any:
    """Start the authorization-code flow: a fresh state and PKCE verifier per attempt."""
    client_id = _client_id()
    verifier = secrets.token_urlsafe(64)
    state = secrets.token_urlsafe(24)
    session["oauth_pending"] = {"state": state, "verifier": verifier, "client_id": client_id,
                                "redirect_uri": _redirect_uri()}
    query = urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": _redirect_uri(),
        "scope": "member", "state": state,
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    })
    return redirect(f"{url_for('authorize.authorize')}?{query}")


@bp.get("/callback")
def callback() -> Any:
    """Where the authorization server sends the member back with a code."""
    pending = session.pop("oauth_pending", None)
    state = request.args.get("state", "")
    if not pending or not hmac.compare_digest(pending["state"].encode(), state.encode()):
        abort(400, "This sign-in has expired or was started elsewhere. Please sign in again.")
    if request.args.get("error"):
        if request.args["error"] == "access_denied":
            flash("Sign-in was cancelled.", "info")
            return redirect(url_for(".home"))
        abort(400, request.args.get("error_description") or request.args["error"])
    status, body = oauth_call("/oauth/token", {
        "grant_type": "authorization_code", "code": request.args.get("code", ""),
        "redirect_uri": pending["redirect_uri"], "client_id": pending["client_id"],
        "code_verifier": pending["verifier"]})
    if status != 200:
        token_refused(status, body)
    _keep_tokens(body, pending["client_id"])
    return redirect(url_for(".home"))


@bp.post("/signout")
def sign_out() -> Any:
    check_csrf()
    tokens = session.get("member_tokens")
    if tokens:
        refused = revoke_tokens(tokens)
        if refused:
            flash(refused, "error")
            return redirect(url_for(".home"))
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for(".home"))


# --------------------------------------------------------------------------- pages


@bp.get("")
def home() -> Any:
    member_id = _signed_in_member()
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
    member_id = _require_member()
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
    member_id = _require_member()
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
    member_id = _require_member()
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
    member_id = _require_member()
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
