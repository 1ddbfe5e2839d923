"""``/oauth/authorize``: the member signs in and the client gets an authorization code.

The request is validated by Authlib before anything is shown: a known public client, a
redirect URI registered for it (exact match), ``response_type=code``, the scope it may ask
for, and a PKCE ``S256`` challenge. A request that fails before its redirect URI is proven
gets an error page (never a redirect to an unproven URI); later failures go back to the
client as RFC 6749 error parameters. The sign-in form is CSRF-protected and throttled
(:mod:`coalition.member.signin`). Clients are first-party (registered by the operator), so
signing in is the member's consent; "Cancel" answers ``access_denied``.

A request for the scope ``settlement:run`` (the finance page's client) signs in a finance
user with a username instead (:mod:`coalition.oauth.finance_users`); one for
``partner:portal`` (the partner portal's client) a partner staff member with their login
(:mod:`coalition.oauth.partner_users`); any other, a member.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, render_template, request

from coalition.http.pages import check_csrf, protect_pages
from coalition.member import signin
from coalition.oauth import finance_users, partner_users
from coalition.oauth.member_grants import audience
from coalition.oauth.server import authorization

bp = Blueprint("authorize", __name__)
protect_pages(bp, "member/base.html", "member_page.home", "Back to my points")


def _form(client: Any, status: int = 200, error: str | None = None,
          member_number: str = "", headers: dict[str, str] | None = None) -> Any:
    return (render_template("member/signin.html", client=client, error=error,
                            member_number=member_number, action=request.full_path),
            status, headers or {})


def _finance_form(client: Any, status: int = 200, error: str | None = None,
                  username: str = "", headers: dict[str, str] | None = None) -> Any:
    return (render_template("finance/signin.html", client=client, error=error,
                            username=username, action=request.full_path,
                            layout="finance/base.html"),
            status, headers or {})


def _finance_sign_in(grant: Any) -> Any:
    """A finance user signs in (the grant asks for ``settlement:run``)."""
    client = grant.request.client
    if request.method == "GET":
        return _finance_form(client)
    check_csrf()
    if "cancel" in request.form:
        return authorization.create_authorization_response(grant=grant, grant_user=None)
    username = request.form.get("username", "").strip().lower()
    try:
        user = finance_users.authenticate(username, request.form.get("password", ""))
    except signin.SignInLocked as locked:
        return _finance_form(client, 429, locked.message, username, locked.headers)
    except signin.SignInFailed as failed:
        return _finance_form(client, 401, failed.message, username)
    return authorization.create_authorization_response(grant=grant, grant_user=user)


def _staff_form(client: Any, status: int = 200, error: str | None = None,
                login: str = "", headers: dict[str, str] | None = None) -> Any:
    return (render_template("partner/signin.html", client=client, error=error,
                            login=login, action=request.full_path,
                            layout="partner/base.html", staff=None),
            status, headers or {})


def _staff_sign_in(grant: Any) -> Any:
    """A partner staff member signs in (the grant asks for ``partner:portal``)."""
    client = grant.request.client
    if request.method == "GET":
        return _staff_form(client)
    check_csrf()
    if "cancel" in request.form:
        return authorization.create_authorization_response(grant=grant, grant_user=None)
    login = partner_users.normalise_login(request.form.get("login", ""))
    try:
        user = partner_users.authenticate(login, request.form.get("password", ""))
    except signin.SignInLocked as locked:
        return _staff_form(client, 429, locked.message, login, locked.headers)
    except signin.SignInFailed as failed:
        return _staff_form(client, 401, failed.message, login)
    return authorization.create_authorization_response(grant=grant, grant_user=user)


@bp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize() -> Any:
    """Member sign-in and authorization (authorization code grant with PKCE)."""
    try:
        grant = authorization.get_consent_grant(end_user=None)
    except OAuth2Error as error:
        if error.redirect_uri:
            return authorization.handle_error_response(
                authorization.create_oauth2_request(request), error)
        return render_template("error.html", status=400, title="This sign-in link is not valid",
                               message=error.get_error_description() or error.error), 400
    client = grant.request.client
    who = audience(grant.request.payload.scope or client.scope)
    if who == "finance":
        return _finance_sign_in(grant)
    if who == "partner":
        return _staff_sign_in(grant)
    if request.method == "GET":
        return _form(client)
    check_csrf()
    if "cancel" in request.form:
        return authorization.create_authorization_response(grant=grant, grant_user=None)
    member_number = "".join(request.form.get("member_number", "").split())
    password = request.form.get("password", "")
    try:
        member = signin.authenticate(member_number, password)
    except signin.SignInLocked as locked:
        return _form(client, 429, locked.message, member_number, locked.headers)
    except signin.SignInFailed as failed:
        return _form(client, 401, failed.message, member_number)
    return authorization.create_authorization_response(grant=grant, grant_user=member)
