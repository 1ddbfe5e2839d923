"""OAuth clients and their tokens: the operator's, a partner's, by the real token endpoint."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

#: an access token's lifetime that outlasts any span a test moves the clock through
#: (fifty years, in seconds: it still fits the 32-bit column of a token's lifetime)
OUTLASTING = 50 * 366 * 24 * 3600


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def fetch_token(client: FlaskClient, client_id: str, secret: str, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    response = client.post("/oauth/token", data=form, headers=basic_auth(client_id, secret))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]  # type: ignore[no-any-return]


@contextmanager
def tokens_outlive_the_clock(app: Flask) -> Iterator[None]:
    """Inside the block, ``app`` issues access tokens that outlast the test's moves of the
    clock, for tests that book over months of a clock they move and are not about token
    expiry (tests/coalition/test_oauth.py is). A token issued before the block keeps its
    lifetime."""
    before = app.config["ACCESS_TOKEN_LIFETIME"]
    app.config["ACCESS_TOKEN_LIFETIME"] = OUTLASTING
    try:
        yield
    finally:
        app.config["ACCESS_TOKEN_LIFETIME"] = before


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bearer_of(token: dict[str, Any]) -> dict[str, str]:
    """Headers with the access token of a token endpoint's answer."""
    return bearer(token["access_token"])


def operator_client(scopes: tuple[str, ...] = ("admin", "settlement:run"),
                    name: str = "test operator") -> dict[str, str]:
    """A new operator client: ``{client_id, client_secret}``."""
    from coalition.oauth.clients import create_operator_client

    issued = create_operator_client(list(scopes), name=name)
    return {"client_id": issued.client_id, "client_secret": issued.client_secret}


def operator_headers_now(client: FlaskClient, scopes: tuple[str, ...] = (
        "admin", "settlement:run")) -> dict[str, str]:
    """A fresh operator client's token (for tests that empty the database themselves)."""
    issued = operator_client(scopes, name="settlement test operator")
    return bearer(fetch_token(client, issued["client_id"], issued["client_secret"]))


def partner_headers(client: FlaskClient, code: str, scopes: tuple[str, ...]) -> dict[str, str]:
    """A new client of partner ``code`` with ``scopes``, and its token."""
    from partners.service import issue_partner_client

    issued = issue_partner_client(code, list(scopes))
    return bearer(fetch_token(client, issued.client_id, issued.client_secret))


def partner_reader(client: FlaskClient, code: str,
                   scopes: tuple[str, ...] = ("settlement:read",)) -> dict[str, str]:
    return partner_headers(client, code, scopes)
