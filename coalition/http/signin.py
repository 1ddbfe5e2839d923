"""The one way a server-rendered page signs its user in (the member page, the finance
page): as an OAuth public client of this server.

Each sign-in starts the authorization-code grant with PKCE (a fresh state and verifier
per attempt), the code is exchanged at ``/oauth/token`` in process, and the tokens are kept
in the signed, HTTP-only session cookie. Each view proves the access token the way the API
does, refreshing it (with rotation) when it is about to expire. Signing out revokes the
tokens at ``/oauth/revoke``.

A page's client is the oldest public client registered with its redirect URI
(``<this site>/<page>/callback``) and scope. Outside production one is registered on first
use; in production the operator registers it (``coalition client create --public``), so a
forged ``Host`` header can never register a redirect URI.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import Blueprint, abort, current_app, flash, redirect, request, session, url_for
from werkzeug.test import Client

from coalition.http.pages import check_csrf
from coalition.oauth.clients import create_public_client, find_public_client
from coalition.oauth.server import Principal, principal_for

#: refresh this long before the access token expires
REFRESH_MARGIN = 30


def page_client_id(redirect_uri: str, name: str, scope: str) -> str:
    """The public client a page signs in through: the one registered for its redirect URI
    and scope. Outside production the page registers it on first use; in production the
    operator must (a forged Host header must never register a redirect URI)."""
    client_id = find_public_client(redirect_uri, scope=scope)
    if client_id is None:
        if current_app.config["ENV"] == "production":
            abort(503, f"The {name.lower()} is not set up yet: the operator registers it with "
                       f"`coalition client create --public --scope {scope} --name \"{name}\" "
                       f"--redirect-uri {redirect_uri}`.")
        client_id = create_public_client(f"Coalition {name.lower()}", [redirect_uri],
                                         trusted=True, scopes=(scope,)).client_id
    return client_id


def oauth_call(path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST a form to this server's own OAuth endpoint, in process, through the whole WSGI
    stack (no network hop, and no deadlock on a single-worker server).

    The inner request carries the address of the person at the page: the token endpoints
    are limited per remote address, and without it every visitor of the page would share
    one bucket, so that one visitor sending bogus sign-ins could lock out everyone else."""
    # current_app is a proxy that Flask types as the Flask application it stands for
    response = Client(current_app._get_current_object()).post(  # type: ignore[attr-defined]
        path, data=form, base_url="https://localhost/",
        environ_base={"REMOTE_ADDR": request.remote_addr or ""})
    return response.status_code, response.get_json(silent=True) or {}


def token_refused(status: int, body: dict[str, Any]) -> NoReturn:
    """Abort a sign-in whose code exchange the token endpoint refused: 429 when the
    visitor's address is over its limit (the message says when to retry), else 400."""
    if status == 429:
        abort(429, body.get("message") or "Too many sign-in attempts. Try again later.")
    abort(400, body.get("error_description") or "The sign-in could not be completed.")


def revoke_tokens(tokens: dict[str, Any]) -> str | None:
    """Revoke a page session's tokens (revoking the refresh token revokes its access token
    with it). ``None`` once they are revoked; otherwise why not, for the page to tell the
    user, who is then still signed in and can try again."""
    refresh = tokens.get("refresh_token")
    status, body = oauth_call("/oauth/revoke", {
        "token": refresh or tokens["access_token"],
        "token_type_hint": "refresh_token" if refresh else "access_token",
        "client_id": tokens["client_id"]})
    if status == 200:
        return None
    return (f"You are still signed in: signing out failed "
            f"({body.get('message') or 'the server did not answer'}). Please try again.")


def keep_tokens(key: str, token: dict[str, Any], client_id: str) -> None:
    """Keep a page's tokens in the (signed, HttpOnly) session under ``key``."""
    session[key] = {
        "access_token": token["access_token"],
        "refresh_token": token.get("refresh_token"),
        "expires_at": int(time.time()) + int(token.get("expires_in", 0)),
        "client_id": client_id,
    }


class PageSignIn:
    """Sign-in, its callback and sign-out (``/signin``, ``/callback``, ``/signout``) for
    the page of ``blueprint``, and who is signed in to it.

    ``who`` says whom a proven token stands for on this page (``None``: not for this
    page). With ``come_back``, a sign-in asked for by a page returns to that page after;
    with ``clears_session``, signing out forgets the whole session, else only this page's
    tokens, a sign-in under way and the form token."""

    def __init__(self, blueprint: Blueprint, *, name: str, scope: str, tokens: str,
                 pending: str, who: Callable[[Principal], Any], come_back: bool = False,
                 clears_session: bool = True) -> None:
        self.blueprint, self.name, self.scope = blueprint, name, scope
        self.tokens, self.pending, self.who = tokens, pending, who
        self.come_back, self.clears_session = come_back, clears_session
        blueprint.add_url_rule("/signin", "sign_in", self.sign_in, methods=["GET"])
        blueprint.add_url_rule("/callback", "callback", self.callback, methods=["GET"])
        blueprint.add_url_rule("/signout", "sign_out", self.sign_out, methods=["POST"])

    def _redirect_uri(self) -> str:
        return url_for(f"{self.blueprint.name}.callback", _external=True)

    def _local(self, path: str | None) -> str | None:
        """A path on this page to come back to after signing in (never another site)."""
        prefix = self.blueprint.url_prefix or "/"
        if path and path.startswith(prefix) and not path.startswith("//") and "\\" not in path:
            return path
        return None

    def signed_in(self) -> Any:
        """Whom this session's tokens stand for (``who``), refreshing them if needed;
        ``None`` when nobody is signed in (tokens that no longer prove anyone are
        forgotten)."""
        tokens = session.get(self.tokens)
        if not tokens:
            return None
        if tokens["expires_at"] - REFRESH_MARGIN <= time.time():
            status, body = oauth_call("/oauth/token", {
                "grant_type": "refresh_token",
                "refresh_token": tokens.get("refresh_token") or "",
                "client_id": tokens["client_id"]})
            if status != 200:
                session.pop(self.tokens, None)
                return None
            keep_tokens(self.tokens, body, tokens["client_id"])
            tokens = session[self.tokens]
        principal = principal_for(tokens["access_token"])
        if (principal is None or principal.kind != "public"
                or self.scope not in principal.scopes):
            session.pop(self.tokens, None)
            return None
        whom = self.who(principal)
        if whom is None:
            session.pop(self.tokens, None)
        return whom

    def require(self) -> Any:
        """Whom this session stands for, or off to sign in (and, with ``come_back``, back
        to the page asked for after)."""
        whom = self.signed_in()
        if whom is None:
            back = (request.full_path.rstrip("?")
                    if self.come_back and request.method == "GET" else None)
            sign_in = f"{self.blueprint.name}.sign_in"  # from the page's other blueprints too
            abort(redirect(url_for(sign_in, next=back) if back else url_for(sign_in)))
        return whom

    def sign_in(self) -> Any:
        """Start the authorization-code flow: a fresh state and PKCE verifier per attempt."""
        client_id = page_client_id(self._redirect_uri(), self.name, self.scope)
        verifier = secrets.token_urlsafe(64)
        state = secrets.token_urlsafe(24)
        pending: dict[str, str | None] = {
            "state": state, "verifier": verifier, "client_id": client_id,
            "redirect_uri": self._redirect_uri()}
        if self.come_back:
            pending["next"] = self._local(request.args.get("next"))
        session[self.pending] = pending
        query = urlencode({
            "response_type": "code", "client_id": client_id,
            "redirect_uri": self._redirect_uri(), "scope": self.scope, "state": state,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        })
        return redirect(f"{url_for('authorize.authorize')}?{query}")

    def callback(self) -> Any:
        """Where the authorization server sends the user back with a code."""
        pending = session.pop(self.pending, None)
        state = request.args.get("state", "")
        if not pending or not hmac.compare_digest(pending["state"].encode(), state.encode()):
            abort(400, "This sign-in has expired or was started elsewhere. Please sign in "
                       "again.")
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
        keep_tokens(self.tokens, body, pending["client_id"])
        return redirect(self._local(pending.get("next")) or url_for(".home"))

    def sign_out(self) -> Any:
        check_csrf()
        tokens = session.get(self.tokens)
        if tokens:
            refused = revoke_tokens(tokens)
            if refused:
                flash(refused, "error")
                return redirect(url_for(".home"))
        if self.clears_session:
            session.clear()
        else:
            session.pop(self.tokens, None)
            session.pop(self.pending, None)
            session.pop("csrf", None)  # a new form token for whoever signs in next
        flash("You have signed out.", "info")
        return redirect(url_for(".home"))
