"""The member page's inbox and e-mail choices (``/member/inbox``,
``/member/preferences``), signed in as on the member page, and the unsubscribe page of
an e-mail's link (``/member/unsubscribe/<token>``), which needs no sign-in: the signed
token is what proves the member asked (so it also stands in for the form token, and the
one-click POST of RFC 8058 that mail programs send needs nothing else)."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from coalition.errors import CoalitionError, InvalidRequest
from coalition.http.pages import check_csrf, protect_pages
from coalition.member.page import signed_in_member
from coalition.notifications import inbox as inbox_service
from coalition.notifications import preferences, unsubscribe
from coalition.notifications.models import CHOICES
from coalition.oauth.server import principal_for

bp = Blueprint("notify_page", __name__, url_prefix="/member")
protect_pages(bp, "member/base.html", "member_page.home", "Back to my points")

INBOX_PAGE = 20


def unread_badge() -> dict[str, Any]:
    """``inbox_unread`` for the member pages' navigation: unread notifications of the
    member signed in (the page's own view has just proven or refreshed the token)."""
    blueprint = request.blueprint or ""
    if not (blueprint.startswith("member") or blueprint == bp.name):
        return {}  # the member pages' blueprints only (member_page, member_claims, …)
    tokens = session.get("member_tokens")
    principal = principal_for(tokens["access_token"]) if tokens else None
    if principal is None or principal.member_id is None:
        return {}
    return {"inbox_unread": inbox_service.unread_count(principal.member_id)}


@bp.get("/inbox")
def inbox() -> Any:
    member_id = signed_in_member()
    try:
        page = inbox_service.listing(member_id, {"limit": INBOX_PAGE,
                                                 "cursor": request.args.get("cursor")})
    except InvalidRequest:
        abort(404)
    return render_template("notifications/inbox.html", page=page,
                           older=request.args.get("cursor") is not None)


@bp.post("/inbox/read")
def mark_read() -> Any:
    """Mark read everything shown up to the newest notification on the page."""
    member_id = signed_in_member()
    check_csrf()
    up_to = request.form.get("up_to_id", "")
    if not (up_to.isascii() and up_to.isdigit() and 0 < int(up_to) < 2**63):
        abort(422, "Nothing to mark read.")
    done = inbox_service.mark_read(member_id, up_to_id=int(up_to))
    flash("All caught up." if not done["unread"] else
          f"Marked {done['marked']} read.", "success")
    return redirect(url_for(".inbox"))


@bp.route("/preferences", methods=["GET", "POST"])
def choose() -> Any:
    member_id = signed_in_member()
    if request.method == "GET":
        return render_template("notifications/preferences.html",
                               prefs=preferences.preferences(member_id))
    check_csrf()
    changes = {}
    for name in CHOICES:
        value = request.form.get(name)
        if value not in (None, "yes"):
            abort(422, f"{CHOICES[name]['label']}: tick the box or leave it empty.")
        changes[name] = value == "yes"
    try:
        preferences.set_preferences(member_id, changes, "page")
    except CoalitionError as refused:
        flash(f"Your choices were not saved: {refused.message}", "error")
    else:
        flash("Your e-mail choices are saved.", "success")
    return redirect(url_for(".choose"))


@bp.get("/unsubscribe/<token>")
def unsubscribe_page(token: str) -> Any:
    try:
        _, choice = unsubscribe.read(token)
    except InvalidRequest:
        return render_template("notifications/unsubscribe.html", invalid=True), 404
    return render_template("notifications/unsubscribe.html", invalid=False, done=False,
                           label=CHOICES[choice]["label"], token=token)


@bp.post("/unsubscribe/<token>")
def unsubscribe_post(token: str) -> Any:
    """The button of the page, or a mail program's one-click POST (RFC 8058)."""
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    try:
        done = unsubscribe.withdraw(token, "one_click" if one_click else "unsubscribe_link")
    except InvalidRequest:
        return render_template("notifications/unsubscribe.html", invalid=True), 404
    if one_click:
        return Response("Unsubscribed.\n", 200, mimetype="text/plain")
    return render_template("notifications/unsubscribe.html", invalid=False, done=True,
                           label=done["label"], token=token)
