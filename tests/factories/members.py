"""Helpers for the member sign-in, ``/v1/me`` and member page tests (not a test module)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask
from flask.testing import FlaskClient

from coalition import clock as app_clock
from coalition.oauth.clients import create_public_client
from tests.factories.clock import HandClock
from tests.factories.tokens import bearer_of  # noqa: F401 - the members' tests take it here

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Enrolled:
    member_number: str
    activation_code: str
    password: str = PASSWORD


def enrol(client: FlaskClient, partner_headers: dict[str, str], ref: str,
          **fields: Any) -> Enrolled:
    response = client.post("/v1/members", json={"partner_member_ref": ref, **fields},
                           headers=partner_headers)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    return Enrolled(body["member_number"], body["activation_code"])


def activate(client: FlaskClient, member: Enrolled, password: str = PASSWORD) -> Any:
    return client.post("/v1/members/activate", json={
        "member_number": member.member_number, "activation_code": member.activation_code,
        "password": password})


def active_member(client: FlaskClient, partner_headers: dict[str, str],
                  ref: str = "cust-1", **fields: Any) -> Enrolled:
    member = enrol(client, partner_headers, ref, **fields)
    response = activate(client, member)
    assert response.status_code == 200, response.get_json()
    return member


def public_client(base_url: str, path: str = "/cb", name: str = "Member app") -> dict[str, str]:
    view = create_public_client(name, [f"{base_url}{path}"])
    return {"client_id": view.client_id, "redirect_uri": f"{base_url}{path}"}


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, html
    return match.group(1)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class Flow:
    """One authorization-code flow, driven by Authlib's own OAuth 2.0 client (the member
    app's side) and a browser-like requests session (the member's side)."""

    def __init__(self, base_url: str, app_client: dict[str, str], **session_args: Any):
        self.base_url = base_url
        self.client = app_client
        self.oauth = OAuth2Session(
            app_client["client_id"], redirect_uri=app_client["redirect_uri"], scope="member",
            code_challenge_method="S256", token_endpoint_auth_method="none", **session_args)
        self.verifier = generate_token(64)
        self.browser = requests.Session()
        self.authorize_url, self.state = self.oauth.create_authorization_url(
            f"{base_url}/oauth/authorize", code_verifier=self.verifier)

    def sign_in(self, member_number: str, password: str, url: str | None = None
                ) -> requests.Response:
        """Fill in the sign-in form; the answer is not followed (its Location carries the
        code)."""
        url = url or self.authorize_url
        form = self.browser.get(url, timeout=10)
        assert form.status_code == 200, form.text
        return self.browser.post(url, data={"csrf_token": csrf_of(form.text),
                                            "member_number": member_number,
                                            "password": password},
                                 allow_redirects=False, timeout=10)

    def code(self, member: Enrolled) -> str:
        answer = self.sign_in(member.member_number, member.password)
        assert answer.status_code == 302, answer.text
        self.location = answer.headers["Location"]
        params = query_of(self.location)
        assert self.location.startswith(self.client["redirect_uri"] + "?")
        assert params["state"] == self.state
        return params["code"]

    def token(self, member: Enrolled) -> dict[str, Any]:
        self.code(member)
        return dict(self.oauth.fetch_token(f"{self.base_url}/oauth/token",
                                           authorization_response=self.location,
                                           code_verifier=self.verifier))

    def exchange(self, code: str, verifier: str | None = None,
                 redirect_uri: str | None = None) -> requests.Response:
        """The token request by hand, to see refusals as they are."""
        form = {"grant_type": "authorization_code", "code": code,
                "client_id": self.client["client_id"],
                "redirect_uri": redirect_uri or self.client["redirect_uri"]}
        if verifier is not False:
            form["code_verifier"] = verifier or self.verifier
        return requests.post(f"{self.base_url}/oauth/token", data=form, timeout=10)


def refresh(base_url: str, client_id: str, refresh_token: str) -> requests.Response:
    return requests.post(f"{base_url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token,
        "client_id": client_id}, timeout=10)


def me(base_url: str, access_token: str, path: str = "/v1/me") -> requests.Response:
    return requests.get(f"{base_url}{path}",
                        headers={"Authorization": f"Bearer {access_token}"}, timeout=10)


def member_token(client: FlaskClient, member: Enrolled) -> dict[str, Any]:
    """A member token through the real authorization-code flow, in process (test client)."""
    from urllib.parse import urlencode

    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    app_client = public_client("http://localhost", "/cb")
    verifier = generate_token(64)
    query = urlencode({"response_type": "code", "client_id": app_client["client_id"],
                       "redirect_uri": app_client["redirect_uri"], "scope": "member",
                       "state": "s", "code_challenge": create_s256_code_challenge(verifier),
                       "code_challenge_method": "S256"})
    page = client.get(f"/oauth/authorize?{query}")
    assert page.status_code == 200, page.get_data(as_text=True)
    answer = client.post(f"/oauth/authorize?{query}", data={
        "csrf_token": csrf_of(page.get_data(as_text=True)),
        "member_number": member.member_number, "password": member.password})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    code = query_of(answer.headers["Location"])["code"]
    token = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "client_id": app_client["client_id"], "redirect_uri": app_client["redirect_uri"]})
    assert token.status_code == 200, token.get_json()
    return dict(token.get_json())


def after_the_grace(monkeypatch: pytest.MonkeyPatch, app: Flask) -> None:
    """Move the app's clock past the refresh grace, for the rest of the test (the ``app``
    fixture gives the system's clock back)."""
    later = HandClock()
    later.advance(seconds=app.config["REFRESH_GRACE"] + 1)
    app_clock.use(app, later)
