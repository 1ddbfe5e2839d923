"""The OAuth 2.0 server: client credentials (RFC 6749), revocation (RFC 7009), introspection
(RFC 7662), and the bearer-token check on protected endpoints."""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from sqlalchemy import func, select, update

from coalition.db import UnitOfWork, db, read, utcnow
from coalition.ledger.models import Entry
from coalition.migrations import runner
from coalition.oauth.clients import create_operator_client
from coalition.oauth.models import OAuthClient, OAuthToken, digest
from partners.service import create_partner, issue_partner_client
from tests.conftest import (
    basic_auth,
    bearer,
    fetch_token,
    make_test_app,
    snapshot,
)
from tests.factories.partner_api import enrol, publish

TOKEN_ERROR_KEYS = {"code", "status", "message", "error", "error_description"}


@pytest.fixture
def partner_client(app):
    """A partner ``acme`` with a client holding ``points:earn points:burn``."""
    create_partner(code="acme", name="Acme", kind="merchant", currency="GBP",
                   earn_rate=Decimal("1"), issue_price=Decimal("0.01"),
                   redeem_rate=Decimal("0.008"))
    issued = issue_partner_client("acme", ["points:earn", "points:burn"])
    return {"client_id": issued.client_id, "client_secret": issued.client_secret}


def token_request(client, credentials, **form):
    form.setdefault("grant_type", "client_credentials")
    return client.post("/oauth/token", data=form,
                       headers=basic_auth(credentials["client_id"],
                                          credentials["client_secret"]))


def expire(access_token: str) -> None:
    """Backdate a token's issue time past its lifetime."""
    with UnitOfWork() as uow:
        uow.session.execute(
            update(OAuthToken)
            .where(OAuthToken.access_token_hash == digest(access_token))
            .values(issued_at=utcnow() - timedelta(seconds=901))
        )
        uow.commit()


def introspect(client, operator, token):
    return client.post("/oauth/introspect", data={"token": token},
                       headers=basic_auth(operator["client_id"], operator["client_secret"]))


# --------------------------------------------------------------------------- token endpoint


def test_client_secret_basic_without_scope_gets_registered_scopes(client, operator):
    response = token_request(client, operator)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "admin settlement:run"
    # 15 minutes by default, not Authlib's 10 days for client credentials
    assert body["expires_in"] == 900
    assert response.headers["Cache-Control"] == "no-store"


def test_client_secret_post(client, operator):
    response = client.post("/oauth/token", data={
        "grant_type": "client_credentials", "scope": "admin",
        "client_id": operator["client_id"], "client_secret": operator["client_secret"]})
    assert response.status_code == 200
    assert response.get_json()["scope"] == "admin"


def test_requested_scope_narrows_the_token(client, operator):
    response = token_request(client, operator, scope="settlement:run")
    assert response.status_code == 200
    token = response.get_json()["access_token"]
    # settlement:run alone is not admin
    refused = client.get("/v1/admin/partners", headers=bearer(token))
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "insufficient_scope"


@pytest.mark.parametrize("secret", ["wrong", ""])
def test_wrong_secret_is_refused(app, client, operator, secret):
    before = snapshot(app)
    response = token_request(client, {**operator, "client_secret": secret})
    assert response.status_code == 401
    body = response.get_json()
    assert set(body) == TOKEN_ERROR_KEYS
    assert body["code"] == 401 and body["status"] == "Unauthorized"
    assert body["error"] == "invalid_client"
    assert "WWW-Authenticate" in response.headers
    assert snapshot(app) == before


def test_wrong_secret_in_post_body_is_refused(client, operator):
    response = client.post("/oauth/token", data={
        "grant_type": "client_credentials",
        "client_id": operator["client_id"], "client_secret": "wrong"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_unknown_client_is_refused(client, app):
    response = token_request(client, {"client_id": "op_nobody", "client_secret": "x" * 43})
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"] == "invalid_client"
    assert body["code"] == 401


def test_partner_client_may_not_ask_for_admin(client, app, partner_client):
    before = snapshot(app)
    response = token_request(client, partner_client, scope="points:earn admin")
    assert response.status_code == 400
    body = response.get_json()
    assert set(body) == TOKEN_ERROR_KEYS
    assert body["error"] == "invalid_scope"
    assert body["code"] == 400 and body["status"] == "Bad Request"
    assert body["message"] == "The client may not request: admin"
    assert snapshot(app) == before


def test_partner_client_may_not_ask_for_a_partner_scope_it_lacks(client, partner_client):
    response = token_request(client, partner_client, scope="members:write")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


def test_unknown_scope_is_refused(client, app, operator):
    before = snapshot(app)
    response = token_request(client, operator, scope="admin superuser")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"
    assert snapshot(app) == before


def test_unsupported_grant_type_is_refused(client, operator):
    response = token_request(client, operator, grant_type="password",
                             username="u", password="p")
    assert response.status_code == 400
    assert response.get_json()["error"] == "unsupported_grant_type"


def test_token_lifetime_comes_from_settings(app, tmp_path, operator):
    """Each app issues tokens with its own ACCESS_TOKEN_LIFETIME, even when another app in
    the same process was configured differently (Authlib's server object is shared)."""
    short = make_test_app(f"sqlite:///{tmp_path / 'short.sqlite3'}", ACCESS_TOKEN_LIFETIME=60)
    try:
        with short.app_context():
            runner.upgrade()
            issued = create_operator_client(["admin"])
            response = token_request(short.test_client(), {
                "client_id": issued.client_id, "client_secret": issued.client_secret})
            assert response.status_code == 200
            assert response.get_json()["expires_in"] == 60
    finally:
        with short.app_context():
            db.engine.dispose()
    # the session app, created before, still issues 15-minute tokens
    response = token_request(app.test_client(), operator)
    assert response.get_json()["expires_in"] == 900


def test_secrets_and_tokens_are_stored_hashed(app, client, operator, partner_client):
    token = fetch_token(client, operator["client_id"], operator["client_secret"])
    partner_token = fetch_token(client, partner_client["client_id"],
                                partner_client["client_secret"])
    stored = repr(snapshot(app))
    for plaintext in (operator["client_secret"], partner_client["client_secret"],
                      token, partner_token):
        assert plaintext not in stored
    with db.engine.connect() as conn:
        hashes = conn.execute(select(OAuthToken.access_token_hash)).scalars().all()
    assert sorted(hashes) == sorted([digest(token), digest(partner_token)])


# --------------------------------------------------------------------------- over real HTTP


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_oauth_client_library_round_trip(live_server, operator, auth_method):
    """Authlib's own OAuth client, over HTTP: fetch a token, call, revoke, be refused."""
    with OAuth2Session(operator["client_id"], operator["client_secret"],
                       token_endpoint_auth_method=auth_method, scope="admin") as session:
        token = session.fetch_token(f"{live_server.url}/oauth/token",
                                    grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "admin"
        assert token["expires_in"] == 900

        listed = session.get(f"{live_server.url}/v1/admin/partners")
        assert listed.status_code == 200
        assert listed.json() == []

        revoked = session.revoke_token(f"{live_server.url}/oauth/revoke",
                                       token=token["access_token"],
                                       token_type_hint="access_token")
        assert revoked.status_code == 200

        refused = session.get(f"{live_server.url}/v1/admin/partners")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith('Bearer realm="coalition"')
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
        assert refused.json() == {
            "code": 401, "status": "Unauthorized", "error": "unauthorized",
            "message": "The access token is invalid, expired or revoked.",
        }


# --------------------------------------------------------------------------- revocation


def test_revoking_an_unknown_token_is_not_an_error(client, operator):
    # RFC 7009 2.2: an invalid token is answered 200, so revocation reveals nothing
    response = client.post("/oauth/revoke", data={"token": "no-such-token"},
                           headers=basic_auth(operator["client_id"], operator["client_secret"]))
    assert response.status_code == 200
    assert response.get_json() == {}


def test_a_client_cannot_revoke_another_clients_token(client, operator, partner_client):
    token = fetch_token(client, operator["client_id"], operator["client_secret"])
    response = client.post("/oauth/revoke", data={"token": token},
                           headers=basic_auth(partner_client["client_id"],
                                              partner_client["client_secret"]))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"
    assert client.get("/v1/admin/partners", headers=bearer(token)).status_code == 200


def test_revocation_needs_client_authentication(client, operator):
    token = fetch_token(client, operator["client_id"], operator["client_secret"])
    response = client.post("/oauth/revoke", data={"token": token})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert client.get("/v1/admin/partners", headers=bearer(token)).status_code == 200


# --------------------------------------------------------------------------- introspection


def test_introspect_active_token(client, operator, partner_client):
    token = fetch_token(client, partner_client["client_id"], partner_client["client_secret"])
    response = introspect(client, operator, token)
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "active": True, "client_id": partner_client["client_id"],
        "sub": partner_client["client_id"], "scope": "points:earn points:burn",
        "token_type": "Bearer", "kind": "partner", "iat": body["iat"], "exp": body["iat"] + 900,
    }
    assert abs(body["iat"] - utcnow().timestamp()) < 60


def test_introspect_expired_token(client, operator):
    token = fetch_token(client, operator["client_id"], operator["client_secret"])
    expire(token)
    response = introspect(client, operator, token)
    assert response.status_code == 200
    assert response.get_json() == {"active": False}


def test_introspect_revoked_token(client, operator, partner_client):
    token = fetch_token(client, partner_client["client_id"], partner_client["client_secret"])
    revoked = client.post("/oauth/revoke", data={"token": token},
                          headers=basic_auth(partner_client["client_id"],
                                             partner_client["client_secret"]))
    assert revoked.status_code == 200
    response = introspect(client, operator, token)
    assert response.status_code == 200
    assert response.get_json() == {"active": False}


def test_introspect_unknown_token(client, operator):
    response = introspect(client, operator, "no-such-token")
    assert response.status_code == 200
    assert response.get_json() == {"active": False}


def test_partner_client_may_not_introspect(client, operator, partner_client):
    token = fetch_token(client, operator["client_id"], operator["client_secret"])
    response = introspect(client, partner_client, token)
    assert response.status_code == 403
    body = response.get_json()
    assert body["code"] == 403 and body["status"] == "Forbidden"
    assert body["error"] == "unauthorized_client"
    assert body["message"] == "Only operator clients may introspect tokens."
    assert "active" not in body


def test_introspection_needs_client_authentication(client, operator):
    token = fetch_token(client, operator["client_id"], operator["client_secret"])
    response = client.post("/oauth/introspect", data={"token": token})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
@pytest.mark.parametrize("header", [
    "Basic " + base64.b64encode(raw).decode()
    for raw in (b"\xff\xfe:\xff", b"op_x:\xe9t\xe9", b"\xc3:secret")
] + ["Basic  ", "Basic \t", "Bearer  "])
def test_unreadable_credentials_are_an_invalid_client(app, client, operator, path, header):
    """Basic credentials that are not UTF-8, or a scheme followed by blanks only: Authlib
    failed on both with a server error."""
    token = fetch_token(client, operator["client_id"], operator["client_secret"])
    before = snapshot(app)
    response = client.post(path, data={"grant_type": "client_credentials", "token": token},
                           headers={"Authorization": header})
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == TOKEN_ERROR_KEYS
    assert (body["code"], body["error"]) == (401, "invalid_client")
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert snapshot(app) == before
    assert introspect(client, operator, token).get_json()["active"] is True


# --------------------------------------------------------------------------- protected endpoints


def _bad_authorization(kind: str, client, operator) -> dict[str, str]:
    if kind == "missing":
        return {}
    if kind == "not bearer":
        return basic_auth(operator["client_id"], operator["client_secret"])
    if kind == "empty bearer":
        return {"Authorization": "Bearer "}
    if kind == "unknown":
        return bearer("not-a-token-we-issued")
    token = fetch_token(client, operator["client_id"], operator["client_secret"])
    if kind == "expired":
        expire(token)
    else:
        response = client.post("/oauth/revoke", data={"token": token},
                               headers=basic_auth(operator["client_id"],
                                                  operator["client_secret"]))
        assert response.status_code == 200
    return bearer(token)


@pytest.mark.parametrize("kind", ["missing", "not bearer", "empty bearer", "unknown",
                                  "expired", "revoked"])
def test_protected_endpoint_refuses_bad_tokens(client, operator, kind):
    response = client.get("/v1/admin/partners",
                          headers=_bad_authorization(kind, client, operator))
    assert response.status_code == 401
    body = response.get_json()
    assert body["code"] == 401
    assert body["status"] == "Unauthorized"
    assert body["error"] == "unauthorized"
    expected = ("An access token is required." if kind == "missing"
                else "The access token is invalid, expired or revoked.")
    assert body["message"] == expected
    assert set(body) == {"code", "status", "message", "error"}
    challenge = response.headers["WWW-Authenticate"]
    if kind in ("missing", "not bearer", "empty bearer"):
        # RFC 6750 3: a request without a bearer token gets a bare challenge
        assert challenge == 'Bearer realm="coalition"'
    else:
        assert challenge.startswith('Bearer realm="coalition", error="invalid_token"')


def test_partner_token_on_admin_endpoint_is_forbidden(client, make_partner):
    _, headers = make_partner("acme")
    response = client.get("/v1/admin/partners", headers=headers)
    assert response.status_code == 403
    assert response.get_json() == {
        "code": 403, "status": "Forbidden", "error": "insufficient_scope",
        "message": "This call needs the scope(s): admin",
    }
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="coalition", error="insufficient_scope", scope="admin"')


def test_unauthenticated_request_is_refused_before_its_body_is_read(client):
    # 401, not 422: the caller learns nothing about the schema without a token
    response = client.post("/v1/admin/partners", json={"code": 1})
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


# --------------------------------------------------------------------------- admin: revoke, rotate


def _issue(client, operator_headers, code="acme"):
    response = client.post(f"/v1/admin/partners/{code}/clients",
                           json={"scopes": ["points:earn"]}, headers=operator_headers)
    assert response.status_code == 201
    return response.get_json()


def test_revoking_a_client_kills_its_tokens_and_secret(client, operator_headers, make_partner):
    make_partner("acme")
    issued = _issue(client, operator_headers)
    token = fetch_token(client, issued["client_id"], issued["client_secret"])
    assert token_alive(client, token)

    response = client.delete(f"/v1/admin/partners/acme/clients/{issued['client_id']}",
                             headers=operator_headers)
    assert response.status_code == 204
    assert response.data == b""

    assert not token_alive(client, token)
    again = token_request(client, issued)
    assert again.status_code == 401
    assert again.get_json()["error"] == "invalid_client"
    listed = client.get("/v1/admin/partners/acme/clients", headers=operator_headers).get_json()
    assert [c["revoked_at"] is not None for c in listed] == [False, True]
    # revoking twice: the client is no longer active
    twice = client.delete(f"/v1/admin/partners/acme/clients/{issued['client_id']}",
                          headers=operator_headers)
    assert twice.status_code == 404
    assert twice.get_json()["error"] == "not_found"


def test_rotating_a_secret_kills_the_old_secret_and_its_tokens(client, operator_headers,
                                                                make_partner):
    make_partner("acme")
    issued = _issue(client, operator_headers)
    token = fetch_token(client, issued["client_id"], issued["client_secret"])

    response = client.post(f"/v1/admin/partners/acme/clients/{issued['client_id']}/secret",
                           headers=operator_headers)
    assert response.status_code == 200
    rotated = response.get_json()
    assert rotated["client_id"] == issued["client_id"]
    assert rotated["scopes"] == ["points:earn"]
    assert rotated["client_secret"] != issued["client_secret"]

    assert not token_alive(client, token)
    old = token_request(client, issued)
    assert old.status_code == 401
    assert old.get_json()["error"] == "invalid_client"
    new = token_request(client, rotated)
    assert new.status_code == 200
    assert new.get_json()["scope"] == "points:earn"


def test_rotating_another_partners_client_is_not_found(client, app, operator_headers,
                                                       make_partner):
    make_partner("acme")
    make_partner("bolt")
    issued = _issue(client, operator_headers, "acme")
    before = snapshot(app)
    for method, path in (("post", f"/v1/admin/partners/bolt/clients/{issued['client_id']}/secret"),
                         ("delete", f"/v1/admin/partners/bolt/clients/{issued['client_id']}")):
        response = getattr(client, method)(path, headers=operator_headers)
        assert response.status_code == 404
        assert response.get_json()["message"] == f"No active client {issued['client_id']}."
    assert snapshot(app) == before
    assert token_request(client, issued).status_code == 200


def token_alive(client, token) -> bool:
    """Whether a protected call with ``token`` still works (the partner token lacks admin, so
    a valid one is 403 and a dead one 401)."""
    status = client.get("/v1/admin/partners", headers=bearer(token)).status_code
    assert status in (401, 403)
    return status == 403


# --------------------------------------------------------------------------- races with revocation


class TokenHammer:
    """Threads asking a live server for tokens with the client's current secret, as fast
    as they can, each token kept with the round (secret) it was asked with."""

    def __init__(self, base_url: str, client_id: str, secret: str, threads: int = 4):
        self.url = f"{base_url}/oauth/token"
        self.client_id = client_id
        self.current = (0, secret)
        self.tokens: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            round_, secret = self.current
            response = session.post(self.url, data={"grant_type": "client_credentials"},
                                    auth=(self.client_id, secret), timeout=30)
            if response.status_code == 200:
                with self.lock:
                    self.tokens.append((round_, response.json()["access_token"]))
            else:
                assert response.json()["error"] == "invalid_client", response.text

    def __enter__(self) -> TokenHammer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def _earn_statuses(base_url: str, tokens: list[str], member: str, prefix: str) -> Counter:
    """The status of an earn with each token, asked by a few threads at once."""
    def earn(numbered: tuple[int, str]) -> int:
        n, token = numbered
        return requests.post(f"{base_url}/v1/earn", json={
            "member_number": member, "partner_txn_id": f"{prefix}-{n}", "points": 1},
            headers=bearer(token), timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        return Counter(pool.map(earn, enumerate(tokens)))


@pytest.mark.postgres
def test_no_token_outlives_a_rotation_or_revocation_it_raced(app, client, live_server,
                                                             operator_headers, make_partner):
    publish(client, operator_headers)
    _, acme = make_partner("acme")
    member = enrol(client, acme, "racer")
    base = "/v1/admin/partners/acme/clients"
    issued = client.post(base, json={"scopes": ["points:earn"]},
                         headers=operator_headers).get_json()
    client_id = issued["client_id"]
    rounds = 4
    entries = _entries()
    with TokenHammer(live_server.url, client_id, issued["client_secret"]) as hammer:
        for round_ in range(1, rounds + 1):
            time.sleep(0.1)
            rotated = requests.post(f"{live_server.url}{base}/{client_id}/secret",
                                    headers=operator_headers, timeout=30)
            assert rotated.status_code == 200, rotated.text
            hammer.current = (round_, rotated.json()["client_secret"])
            # every token asked for with an older secret is dead now, whatever the timing
            # (those still in flight when the rotation returned included)
            time.sleep(0.1)
            with hammer.lock:
                older = [token for r, token in hammer.tokens if r == round_ - 1]
            assert older
            statuses = _earn_statuses(live_server.url, older, member, f"r{round_}")
            assert statuses == {401: len(older)}, statuses
        time.sleep(0.1)
        revoked = requests.delete(f"{live_server.url}{base}/{client_id}",
                                  headers=operator_headers, timeout=30)
        assert revoked.status_code == 204
        time.sleep(0.1)
    current = [token for r, token in hammer.tokens if r == rounds]
    assert current
    statuses = _earn_statuses(live_server.url, current, member, "last")
    assert statuses == {401: len(current)}, statuses
    assert _entries() == entries


def _entries() -> int:
    with read() as session:
        return session.scalar(select(func.count()).select_from(Entry))


def test_a_token_saved_after_its_client_was_rotated_is_dead(app, client, operator,
                                                            partner_client):
    """What the race above leaves behind, built directly: a token row that a rotation's
    revocation did not see (saved after it) is refused because its generation is old."""
    token = fetch_token(client, partner_client["client_id"], partner_client["client_secret"])
    assert token_alive(client, token)
    with UnitOfWork() as uow:
        uow.session.execute(update(OAuthClient)
                            .where(OAuthClient.client_id == partner_client["client_id"])
                            .values(generation=OAuthClient.generation + 1))
        uow.commit()
    before = snapshot(app)
    assert not token_alive(client, token)
    assert introspect(client, operator, token).get_json() == {"active": False}
    assert snapshot(app) == before
    with read() as session:  # the row itself was never touched
        assert session.scalar(select(OAuthToken.revoked_at).where(
            OAuthToken.access_token_hash == digest(token))) is None
