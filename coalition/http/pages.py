"""What the server-rendered pages share: the CSRF token, security headers and filters.

A form carries a random token that is also kept in the signed session cookie; a POST
whose token does not match is refused, so another site cannot submit a member's forms.
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    render_template,
    request,
    session,
)
from werkzeug.exceptions import HTTPException
from werkzeug.test import Client

from coalition.oauth.clients import create_public_client, find_public_client

CSRF_FIELD = "csrf_token"


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Abort with 400 unless the form's token matches the session's."""
    expected = session.get("csrf")
    given = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        abort(400, "The form expired or did not come from this site. Reload the page "
                   "and try again.")


def _security_headers(response: Response) -> Response:
    # no framing (clickjacking a sign-in form), no inline script or style, no Referer that
    # could carry an authorization code, no caching of personal pages
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def points(value: Any) -> str:
    """1234567 → ``1,234,567``."""
    return f"{int(value or 0):,}"


def signed(value: Any) -> str:
    number = int(value or 0)
    return f"+{number:,}" if number > 0 else f"−{-number:,}" if number < 0 else "0"


def day(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%-d %b %Y")


def moment(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _html_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    message = error.description if status != 500 else "Something went wrong on our side."
    return render_template("error.html", status=status, title=error.name,
                           message=message), status


def protect_pages(blueprint: Blueprint) -> None:
    """Security headers, and errors as pages rather than JSON, for a blueprint of pages."""
    blueprint.after_request(_security_headers)
    blueprint.register_error_handler(HTTPException, _html_error)


def init_pages(app: Flask) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.filters.update(points=points, signed=signed, day=day, moment=moment,
                                 iso=iso)


# --------------------------------------------------------------------------- a page as OAuth client


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
    response = Client(current_app._get_current_object()).post(
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
