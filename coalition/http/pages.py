"""What the server-rendered pages share: the CSRF token, security headers and filters.

A form carries a random token that is also kept in the signed session cookie; a POST
whose token does not match is refused, so another site cannot submit a member's forms.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    render_template,
    request,
    session,
)
from werkzeug.exceptions import HTTPException

from coalition.money import shown

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


def money(value: Mapping[str, Any]) -> str:
    """``{"amount": …, "currency": …}`` as people read it (:func:`coalition.money.shown`)."""
    return shown(value["amount"], value["currency"])


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


def protect_pages(blueprint: Blueprint, layout: str, home: str, home_label: str) -> None:
    """Security headers, and errors as pages rather than JSON, for a blueprint of pages.
    Its pages (the shared ``error.html`` and ``signin.html`` too) are laid out by
    ``layout``; an error page leads back to the endpoint ``home``."""
    blueprint.after_request(_security_headers)
    blueprint.register_error_handler(HTTPException, _html_error)
    blueprint.context_processor(
        lambda: {"layout": layout, "home": home, "home_label": home_label})


def init_pages(app: Flask) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.filters.update(points=points, signed=signed, day=day, moment=moment,
                                 iso=iso, money=money)
