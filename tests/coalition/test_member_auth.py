"""Member sign-in: activation, the authorization-code grant with PKCE (driven end to end by
Authlib's OAuth 2.0 client over real HTTP), refresh-token rotation, throttling, public
clients, and where member tokens are (and are not) accepted."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from sqlalchemy import select, update

from coalition.db import UnitOfWork, read, utcnow
from coalition.ledger.models import Member
from coalition.member import signin
from coalition.oauth.models import OAuthAuthorizationCode, OAuthClient, OAuthToken, digest
from coalition.passwords import COSTS, Passwords
from tests.conftest import basic_auth, snapshot
from tests.factories.members import (
    PASSWORD,
    Flow,
    activate,
    active_member,
    after_the_grace,
    csrf_of,
    enrol,
    me,
    public_client,
    query_of,
    refresh,
)


@pytest.fixture
def partner(make_partner):
    return make_partner("acme")[1]


@pytest.fixture
def member(client, partner):
    return active_member(client, partner)


@pytest.fixture
def app_client(live_server):
    return public_client(live_server.url)


def flow(live_server, app_client):
    return Flow(live_server.url, app_client)


# --------------------------------------------------------------------------- the whole flow


def test_authorization_code_flow_end_to_end(app, live_server, app_client, member, operator):
    token = flow(live_server, app_client).token(member)
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "member"
    assert token["expires_in"] == app.config["ACCESS_TOKEN_LIFETIME"] == 900
    assert token["refresh_token"]
    answer = me(live_server.url, token["access_token"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["member_number"] == member.member_number
    # the token is stored as digests only, acting for the member
    with read() as session:
        row = session.scalars(select(OAuthToken).where(OAuthToken.member_id.is_not(None))).one()
        assert token["access_token"] not in (row.access_token_hash, row.refresh_token_hash)
        assert row.kind == "public" and row.client_id == app_client["client_id"]
    # an operator introspecting it sees the member as its subject
    seen = requests.post(f"{live_server.url}/oauth/introspect",
                         data={"token": token["access_token"]},
                         headers=basic_auth(operator["client_id"], operator["client_secret"]),
                         timeout=10).json()
    assert seen["active"] is True and seen["sub"] == member.member_number
    assert seen["scope"] == "member" and seen["kind"] == "public"


def test_sign_in_form_is_a_page_with_the_client_name(live_server, app_client):
    page = requests.get(flow(live_server, app_client).authorize_url, timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Member app" in page.text
    assert '<label for="member_number">' in page.text and '<label for="password">' in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert 'href="/v1/program"' in page.text


def test_the_form_needs_its_csrf_token(live_server, app_client, member):
    f = flow(live_server, app_client)
    f.browser.get(f.authorize_url, timeout=10)
    answer = f.browser.post(f.authorize_url, data={
        "csrf_token": "forged", "member_number": member.member_number,
        "password": member.password}, allow_redirects=False, timeout=10)
    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_cancel_answers_access_denied(live_server, app_client):
    f = flow(live_server, app_client)
    page = f.browser.get(f.authorize_url, timeout=10)
    answer = f.browser.post(f.authorize_url, data={"csrf_token": csrf_of(page.text),
                                                   "cancel": "1"},
                            allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    params = query_of(answer.headers["Location"])
    assert params["error"] == "access_denied" and params["state"] == f.state
    assert "code" not in params


# --------------------------------------------------------------------------- PKCE


def _authorize(live_server, app_client, **params):
    query = {"response_type": "code", "client_id": app_client["client_id"],
             "redirect_uri": app_client["redirect_uri"], "scope": "member", "state": "s1",
             **params}
    return requests.get(f"{live_server.url}/oauth/authorize", params=query,
                        allow_redirects=False, timeout=10)


@pytest.mark.parametrize("params", [
    {},                                                            # no PKCE at all
    {"code_challenge": "x" * 43},                                  # no method: plain
    {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
    {"code_challenge_method": "S256"},                             # no challenge
    {"code_challenge": "short", "code_challenge_method": "S256"},
])
def test_pkce_s256_is_required(live_server, app_client, params):
    answer = _authorize(live_server, app_client, **params)
    # the redirect URI is proven, so the client hears of it (RFC 7636 4.4.1)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(app_client["redirect_uri"] + "?")
    assert query_of(location)["error"] == "invalid_request"
    assert query_of(location)["state"] == "s1"


def test_a_wrong_verifier_is_refused(live_server, app_client, member):
    f = flow(live_server, app_client)
    code = f.code(member)
    wrong = f.exchange(code, verifier="w" * 64)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    missing = f.exchange(code, verifier=False)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    # the right verifier still works: refusals did not spend the code
    assert f.exchange(code).status_code == 200


def test_authlib_client_with_a_wrong_verifier_gets_invalid_grant(live_server, app_client,
                                                                 member):
    f = flow(live_server, app_client)
    f.code(member)
    with pytest.raises(OAuthError) as refused:
        f.oauth.fetch_token(f"{live_server.url}/oauth/token",
                            authorization_response=f.location, code_verifier="v" * 50)
    assert refused.value.error == "invalid_grant"


# --------------------------------------------------------------------------- codes


def test_a_code_works_once_and_a_replay_revokes_what_it_bought(live_server, app_client,
                                                               member):
    f = flow(live_server, app_client)
    code = f.code(member)
    first = f.exchange(code)
    assert first.status_code == 200
    access = first.json()["access_token"]
    assert me(live_server.url, access).status_code == 200
    again = f.exchange(code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    # RFC 6749 4.1.2: a code used twice may have leaked; its tokens stop working
    assert me(live_server.url, access).status_code == 401
    assert refresh(live_server.url, app_client["client_id"],
                   first.json()["refresh_token"]).status_code == 400


def test_codes_live_for_the_configured_lifetime(app, live_server, app_client, member,
                                                monkeypatch, clock):
    f = flow(live_server, app_client)
    f.code(member)
    with read() as session:
        stored = session.scalars(select(OAuthAuthorizationCode)).one()
    assert stored.expires_at - stored.issued_at == timedelta(seconds=60)
    assert app.config["AUTHORIZATION_CODE_LIFETIME"] == 60

    monkeypatch.setitem(app.config, "AUTHORIZATION_CODE_LIFETIME", 1)
    short = flow(live_server, app_client)
    code = short.code(member)
    clock.advance(seconds=1.2)
    expired = short.exchange(code)
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"


def test_a_code_is_bound_to_its_client(live_server, app_client, member):
    other = public_client(live_server.url, "/other", name="Other app")
    code = flow(live_server, app_client).code(member)
    stolen = requests.post(f"{live_server.url}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "client_id": other["client_id"],
        "redirect_uri": app_client["redirect_uri"], "code_verifier": "v" * 64}, timeout=10)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"


# --------------------------------------------------------------------------- redirect URIs


@pytest.mark.parametrize("suffix", ["/", "?x=1", "x", "/../cb", "#frag"])
def test_redirect_uris_are_matched_exactly(live_server, app_client, suffix):
    answer = _authorize(live_server, app_client, redirect_uri=app_client["redirect_uri"] + suffix,
                        code_challenge="c" * 43, code_challenge_method="S256")
    # never a redirect to a URI that is not registered: an error page instead
    assert answer.status_code == 400
    assert "Location" not in answer.headers
    assert answer.headers["Content-Type"].startswith("text/html")


def test_another_port_or_host_is_another_uri(live_server, app_client):
    for uri in ("http://127.0.0.1:1/cb", "http://localhost/cb",
                app_client["redirect_uri"].replace("http://", "https://")):
        answer = _authorize(live_server, app_client, redirect_uri=uri,
                            code_challenge="c" * 43, code_challenge_method="S256")
        assert answer.status_code == 400, uri


def test_a_redirect_uri_is_required(live_server, app_client):
    answer = requests.get(f"{live_server.url}/oauth/authorize", params={
        "response_type": "code", "client_id": app_client["client_id"],
        "code_challenge": "c" * 43, "code_challenge_method": "S256"},
        allow_redirects=False, timeout=10)
    assert answer.status_code == 400


def test_the_token_request_must_repeat_the_redirect_uri(live_server, app_client, member):
    f = flow(live_server, app_client)
    code = f.code(member)
    answer = f.exchange(code, redirect_uri=app_client["redirect_uri"] + "/")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_unknown_client_gets_an_error_page(live_server, app_client):
    answer = _authorize(live_server, {**app_client, "client_id": "pub_nobody"},
                        code_challenge="c" * 43, code_challenge_method="S256")
    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_only_the_member_scope(live_server, app_client):
    answer = _authorize(live_server, app_client, scope="member admin",
                        code_challenge="c" * 43, code_challenge_method="S256")
    assert answer.status_code == 302
    assert query_of(answer.headers["Location"])["error"] == "invalid_scope"


# --------------------------------------------------------------------------- refresh tokens


def test_refresh_rotates_and_an_old_refresh_token_is_refused(app, live_server, app_client,
                                                             member, monkeypatch):
    first = flow(live_server, app_client).token(member)
    second = refresh(live_server.url, app_client["client_id"], first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["access_token"] != first["access_token"]
    assert rotated["scope"] == "member"
    # the old pair is gone, the new one works
    assert me(live_server.url, first["access_token"]).status_code == 401
    assert me(live_server.url, rotated["access_token"]).status_code == 200

    after_the_grace(monkeypatch, app)
    reused = refresh(live_server.url, app_client["client_id"], first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # RFC 9700 4.14.2: reuse means two parties hold the token; the live one is revoked too
    assert me(live_server.url, rotated["access_token"]).status_code == 401
    assert refresh(live_server.url, app_client["client_id"],
                   rotated["refresh_token"]).status_code == 400


def test_a_refresh_repeated_within_the_grace_answers_the_same_pair(app, live_server,
                                                                    app_client, member):
    """Two page views refreshing with one refresh token both get the one new pair."""
    first = flow(live_server, app_client).token(member)
    one = refresh(live_server.url, app_client["client_id"], first["refresh_token"])
    assert one.status_code == 200, one.text
    before = snapshot(app)
    two = refresh(live_server.url, app_client["client_id"], first["refresh_token"])
    assert two.status_code == 200, two.text
    pair = ("access_token", "refresh_token", "scope", "token_type")
    assert [two.json()[k] for k in pair] == [one.json()[k] for k in pair]
    assert 0 < two.json()["expires_in"] <= one.json()["expires_in"]
    assert snapshot(app) == before  # nothing new stored, nothing revoked
    assert me(live_server.url, one.json()["access_token"]).status_code == 200
    assert me(live_server.url, first["access_token"]).status_code == 401
    # the new pair rotates as usual
    three = refresh(live_server.url, app_client["client_id"], one.json()["refresh_token"])
    assert three.status_code == 200
    assert three.json()["refresh_token"] != one.json()["refresh_token"]


def test_reuse_after_the_grace_revokes_the_family(app, live_server, app_client, member,
                                                 monkeypatch):
    first = flow(live_server, app_client).token(member)
    rotated = refresh(live_server.url, app_client["client_id"], first["refresh_token"]).json()
    after_the_grace(monkeypatch, app)
    reused = refresh(live_server.url, app_client["client_id"], first["refresh_token"])
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert me(live_server.url, rotated["access_token"]).status_code == 401
    with read() as session:
        assert not session.scalars(select(OAuthToken).where(
            OAuthToken.member_id.is_not(None), OAuthToken.revoked_at.is_(None))).all()


def test_without_a_grace_any_reuse_revokes_the_family(app, live_server, app_client, member,
                                                     monkeypatch):
    monkeypatch.setitem(app.config, "REFRESH_GRACE", 0)
    first = flow(live_server, app_client).token(member)
    rotated = refresh(live_server.url, app_client["client_id"], first["refresh_token"]).json()
    reused = refresh(live_server.url, app_client["client_id"], first["refresh_token"])
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert me(live_server.url, rotated["access_token"]).status_code == 401


def test_the_grace_never_revives_a_pair_that_was_signed_out(app, live_server, app_client,
                                                            member):
    first = flow(live_server, app_client).token(member)
    rotated = refresh(live_server.url, app_client["client_id"], first["refresh_token"]).json()
    signed_out = requests.post(f"{live_server.url}/oauth/revoke", data={
        "token": rotated["refresh_token"], "token_type_hint": "refresh_token",
        "client_id": app_client["client_id"]}, timeout=10)
    assert signed_out.status_code == 200
    again = refresh(live_server.url, app_client["client_id"], first["refresh_token"])
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert me(live_server.url, rotated["access_token"]).status_code == 401
    with read() as session:
        assert not session.scalars(select(OAuthToken).where(
            OAuthToken.member_id.is_not(None), OAuthToken.revoked_at.is_(None))).all()


@pytest.mark.postgres
def test_parallel_refreshes_with_one_token_all_get_the_same_pair(app, live_server,
                                                                 app_client, member):
    first = flow(live_server, app_client).token(member)
    start = threading.Barrier(6)

    def one() -> requests.Response:
        start.wait(timeout=10)
        return refresh(live_server.url, app_client["client_id"], first["refresh_token"])

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: one(), range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert len({(a.json()["access_token"], a.json()["refresh_token"]) for a in answers}) == 1
    with read() as session:
        live = session.scalars(select(OAuthToken).where(
            OAuthToken.member_id.is_not(None), OAuthToken.revoked_at.is_(None))).all()
    assert [t.access_token_hash for t in live] == [digest(answers[0].json()["access_token"])]
    assert me(live_server.url, answers[0].json()["access_token"]).status_code == 200


def test_refresh_with_authlib_client(live_server, app_client, member):
    f = flow(live_server, app_client)
    first = f.token(member)
    new = f.oauth.refresh_token(f"{live_server.url}/oauth/token",
                                refresh_token=first["refresh_token"])
    assert new["refresh_token"] != first["refresh_token"]
    assert me(live_server.url, new["access_token"]).status_code == 200


def test_refresh_tokens_expire(app, live_server, app_client, member, monkeypatch, clock):
    token = flow(live_server, app_client).token(member)
    monkeypatch.setitem(app.config, "REFRESH_TOKEN_LIFETIME", 1)
    clock.advance(seconds=1.2)
    answer = refresh(live_server.url, app_client["client_id"], token["refresh_token"])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def test_a_refresh_token_is_bound_to_its_client(live_server, app_client, member):
    other = public_client(live_server.url, "/other", name="Other app")
    token = flow(live_server, app_client).token(member)
    answer = refresh(live_server.url, other["client_id"], token["refresh_token"])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def test_revoking_a_refresh_token_ends_the_pair(live_server, app_client, member):
    token = flow(live_server, app_client).token(member)
    revoked = requests.post(f"{live_server.url}/oauth/revoke", data={
        "token": token["refresh_token"], "token_type_hint": "refresh_token",
        "client_id": app_client["client_id"]}, timeout=10)
    assert revoked.status_code == 200
    assert me(live_server.url, token["access_token"]).status_code == 401
    assert refresh(live_server.url, app_client["client_id"],
                   token["refresh_token"]).status_code == 400


def test_a_closed_member_cannot_refresh(live_server, app_client, member):
    from coalition.ledger import closure

    token = flow(live_server, app_client).token(member)
    with read() as session:
        member_id = session.scalar(select(Member.id).where(
            Member.member_number == member.member_number))
    closure.close(member_id)
    assert refresh(live_server.url, app_client["client_id"],
                   token["refresh_token"]).status_code == 400
    assert me(live_server.url, token["access_token"]).status_code == 401


# --------------------------------------------------------------------------- clients and grants


def test_public_clients_cannot_use_client_credentials(live_server, app_client):
    answer = requests.post(f"{live_server.url}/oauth/token", data={
        "grant_type": "client_credentials", "client_id": app_client["client_id"]}, timeout=10)
    assert answer.status_code in (400, 401)
    assert answer.json()["error"] in ("invalid_client", "unauthorized_client")


def test_confidential_clients_cannot_use_the_member_grants(live_server, operator):
    for grant in ({"grant_type": "authorization_code", "code": "x", "redirect_uri": "x"},
                  {"grant_type": "refresh_token", "refresh_token": "x"}):
        answer = requests.post(f"{live_server.url}/oauth/token", data=grant, timeout=10,
                               headers=basic_auth(operator["client_id"],
                                                  operator["client_secret"]))
        assert answer.status_code in (400, 401)
        assert answer.json()["error"] == "invalid_client"


def test_client_credentials_still_work(client, operator, operator_headers):
    assert client.get("/v1/admin/clients", headers=operator_headers).status_code == 200


def test_operator_registers_public_clients(app, client, operator_headers, partner):
    created = client.post("/v1/admin/clients", headers=operator_headers, json={
        "name": "Member app", "redirect_uris": ["https://app.example/cb",
                                               "com.example.app:/oauth", "http://127.0.0.1:8123/cb"]})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["kind"] == "public" and body["scopes"] == ["member"]
    assert body["token_endpoint_auth_method"] == "none"
    assert body["redirect_uris"] == ["https://app.example/cb", "com.example.app:/oauth",
                                     "http://127.0.0.1:8123/cb"]
    assert "client_secret" not in body
    listed = client.get("/v1/admin/clients", headers=operator_headers).get_json()
    assert [c["client_id"] for c in listed] == [body["client_id"]]

    before = snapshot(app)
    for uris in (["http://app.example/cb"], ["https://app.example/cb#x"], ["/cb"],
                 ["myapp:/cb"], []):
        refused = client.post("/v1/admin/clients", headers=operator_headers,
                              json={"name": "Bad", "redirect_uris": uris})
        assert refused.status_code == 422, uris
        assert "redirect_uris" in refused.get_json()["errors"]
    assert client.post("/v1/admin/clients", headers=partner,
                       json={"name": "x", "redirect_uris": ["https://a.example/cb"]}
                       ).status_code == 403
    assert snapshot(app) == before

    assert client.delete(f"/v1/admin/clients/{body['client_id']}",
                         headers=operator_headers).status_code == 204
    with read() as session:
        assert session.scalar(select(OAuthClient.revoked_at).where(
            OAuthClient.client_id == body["client_id"])) is not None


def test_cli_registers_public_clients(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["client", "create", "--public", "--name", "Member app",
                                 "--redirect-uri", "https://app.example/cb",
                                 "--redirect-uri", "com.example.app:/cb", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["client_id"].startswith("pub_")
    assert data["redirect_uris"] == ["https://app.example/cb", "com.example.app:/cb"]
    assert data["token_endpoint_auth_method"] == "none" and "client_secret" not in data
    bad = runner.invoke(args=["client", "create", "--public", "--name", "x",
                              "--redirect-uri", "http://app.example/cb"])
    assert bad.exit_code == 2 and "loopback" in bad.output
    neither = runner.invoke(args=["client", "create", "--scope", "admin"])
    assert neither.exit_code == 2 and "Missing option '--operator'" in neither.output


# --------------------------------------------------------------------------- where tokens work


PARTNER_CALLS = [("post", "/v1/earn", {"member_number": "x", "partner_txn_id": "t",
                                       "points": 1}),
                 ("post", "/v1/members", {"partner_member_ref": "r"}),
                 ("get", "/v1/transactions", None)]
ADMIN_CALLS = [("get", "/v1/admin/partners", None), ("get", "/v1/admin/clients", None),
               ("put", "/v1/admin/program", {"tiers": []})]


def test_member_tokens_are_refused_on_partner_and_admin_endpoints(app, live_server, app_client,
                                                                  member):
    token = flow(live_server, app_client).token(member)["access_token"]
    before = snapshot(app)
    for method, path, body in PARTNER_CALLS + ADMIN_CALLS:
        answer = requests.request(method, f"{live_server.url}{path}", json=body, timeout=10,
                                  headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error"] in ("insufficient_scope", "forbidden")
    assert snapshot(app) == before


def test_partner_and_operator_tokens_are_refused_on_me(client, partner, operator_headers):
    for headers in (partner, operator_headers):
        for path in ("/v1/me", "/v1/me/transactions"):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 403, answer.get_json()
    anonymous = client.get("/v1/me")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")


# --------------------------------------------------------------------------- activation


def test_the_activation_code_is_shown_once(client, partner):
    created = client.post("/v1/members", json={"partner_member_ref": "c1"}, headers=partner)
    assert created.status_code == 201
    code = created.get_json()["activation_code"]
    assert len(code) == 11 and code[5] == "-"
    assert set(code.replace("-", "")) <= set(signin.ACTIVATION_ALPHABET)
    number = created.get_json()["member_number"]
    again = client.post("/v1/members", json={"partner_member_ref": "c1"}, headers=partner)
    assert again.status_code == 200 and "activation_code" not in again.get_json()
    linked = client.post("/v1/members", json={"partner_member_ref": "c2",
                                              "member_number": number}, headers=partner)
    assert linked.status_code == 200 and "activation_code" not in linked.get_json()
    read_back = client.get(f"/v1/members/{number}", headers=partner)
    assert "activation_code" not in read_back.get_json()
    with read() as session:
        stored = session.scalar(select(Member.activation_code_hash).where(
            Member.member_number == number))
    assert stored == signin.activation_digest(code) and code.replace("-", "") not in stored


def test_activation_sets_a_password_and_spends_the_code(client, partner):
    member = enrol(client, partner, "c1")
    wrong = activate(client, type(member)(member.member_number, "AAAAA-AAAAA"))
    assert wrong.status_code == 422 and wrong.get_json()["error"] == "activation_failed"
    short = activate(client, member, password="short")
    assert short.status_code == 422 and "password" in short.get_json()["errors"]
    # the code is typed as it is read: any case, with or without the dash
    typed = type(member)(member.member_number, member.activation_code.lower().replace("-", " "))
    done = activate(client, typed)
    assert done.status_code == 200, done.get_json()
    assert done.get_json() == {"member_number": member.member_number, "activated": True}
    with read() as session:
        row = session.scalars(select(Member).where(
            Member.member_number == member.member_number)).one()
        assert row.activation_code_hash is None and row.activated_at is not None
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
    again = activate(client, member, password="another password")
    assert again.status_code == 422 and again.get_json()["error"] == "activation_failed"
    assert signin.authenticate(member.member_number, PASSWORD).member_number \
        == member.member_number


def test_sign_in_before_activation_fails(client, partner):
    member = enrol(client, partner, "c1")
    with pytest.raises(signin.SignInFailed):
        signin.authenticate(member.member_number, "")


# --------------------------------------------------------------------------- throttling


def test_repeated_failures_lock_the_member(app, live_server, app_client, member):
    f = flow(live_server, app_client)
    for attempt in range(signin.MAX_FAILURES - 1):
        answer = f.sign_in(member.member_number, "wrong password!")
        assert answer.status_code == 401, attempt
        assert "wrong" in answer.text
    locking = f.sign_in(member.member_number, "wrong password!")
    assert locking.status_code == 429
    # locked: even the right password is refused, and says until when
    locked = f.sign_in(member.member_number, member.password)
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.text
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60 + 1
    with read() as session:
        until = session.scalar(select(Member.locked_until).where(
            Member.member_number == member.member_number))
    assert timedelta(minutes=14) < until - utcnow() <= timedelta(minutes=15)
    # the lock ends by itself
    with UnitOfWork() as uow:
        uow.session.execute(update(Member).where(Member.member_number == member.member_number)
                            .values(locked_until=utcnow() - timedelta(seconds=1)))
        uow.commit()
    assert f.sign_in(member.member_number, member.password).status_code == 302
    with read() as session:
        row = session.execute(select(Member.failed_sign_ins, Member.locked_until).where(
            Member.member_number == member.member_number)).one()
    assert tuple(row) == (0, None)


def test_a_success_resets_the_count(member):
    for _ in range(signin.MAX_FAILURES - 1):
        with pytest.raises(signin.SignInFailed):
            signin.authenticate(member.member_number, "nope nope nope")
    signin.authenticate(member.member_number, member.password)
    for _ in range(signin.MAX_FAILURES - 1):
        with pytest.raises(signin.SignInFailed):
            signin.authenticate(member.member_number, "nope nope nope")
    assert signin.authenticate(member.member_number, member.password)


def test_wrong_activation_codes_count_too(client, partner):
    member = enrol(client, partner, "c1")
    bad = type(member)(member.member_number, "22222-22222")
    for _ in range(signin.MAX_FAILURES - 1):
        assert activate(client, bad).status_code == 422
    assert activate(client, bad).status_code == 429
    refused = activate(client, member)
    assert refused.status_code == 429 and refused.get_json()["error"] == "rate_limited"
    assert "Retry-After" in refused.headers


@pytest.fixture
def full_cost(app):
    """Production's Argon2 cost for this test (the suite's own is the cheapest): timing is
    what it compares."""
    cheap = app.extensions["coalition.passwords"]
    app.extensions["coalition.passwords"] = Passwords(COSTS["full"])
    yield
    app.extensions["coalition.passwords"] = cheap


def test_unknown_members_take_as_long_and_say_the_same(full_cost, member):
    def timed(number: str) -> tuple[float, str]:
        start = time.perf_counter()
        with pytest.raises(signin.SignInFailed) as failed:
            signin.authenticate(number, "wrong password!")
        return time.perf_counter() - start, failed.value.message

    known, known_message = timed(member.member_number)
    unknown, unknown_message = timed("400000000006")
    assert known_message == unknown_message
    # both pay for one Argon2 verification; the unknown one must not be much quicker
    assert unknown > known * 0.5
