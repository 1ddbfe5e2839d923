"""Finance users: their accounts (the CLI), sign-in through the authorization-code grant
with PKCE (driven end to end by Authlib's OAuth 2.0 client over real HTTP), throttling, and
where their tokens are (and are not) accepted. A member never obtains ``settlement:run``,
a finance user never ``member``; what a finance user does is recorded under their name."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select, update

from coalition.db import UnitOfWork, read, utcnow
from coalition.member import signin
from coalition.oauth import finance_users
from coalition.oauth.models import FinanceUser, OAuthAuthorizationCode, OAuthToken
from tests.conftest import basic_auth, bearer, snapshot
from tests.factories.finance import (
    FINANCE_PASSWORD,
    E,
    FinanceFlow,
    S,
    book_period,
    finance_client,
    finance_user,
)
from tests.factories.members import (
    Flow,
    active_member,
    after_the_grace,
    public_client,
    query_of,
)
from tests.factories.settlement import resolve, upload

PARTNER_CALLS = [("post", "/v1/earn", {"member_number": "x", "partner_txn_id": "t",
                                       "points": 1}),
                 ("post", "/v1/members", {"partner_member_ref": "r"}),
                 ("get", "/v1/transactions", None)]
ADMIN_CALLS = [("get", "/v1/admin/partners", None), ("get", "/v1/admin/clients", None),
               ("put", "/v1/admin/program", {"tiers": []})]
MEMBER_CALLS = [("get", "/v1/me", None), ("get", "/v1/me/transactions", None)]


@pytest.fixture
def fiona(app):
    return finance_user()


@pytest.fixture
def app_client(live_server):
    return finance_client(live_server.url)


def call(base_url: str, method: str, path: str, token: str, body=None) -> requests.Response:
    return requests.request(method, f"{base_url}{path}", json=body, timeout=10,
                            headers={"Authorization": f"Bearer {token}"})


def _authorize(live_server, client, scope: str) -> requests.Response:
    return requests.get(f"{live_server.url}/oauth/authorize", params={
        "response_type": "code", "client_id": client["client_id"],
        "redirect_uri": client["redirect_uri"], "scope": scope, "state": "s1",
        "code_challenge": "c" * 43, "code_challenge_method": "S256"},
        allow_redirects=False, timeout=10)


# --------------------------------------------------------------------------- the flow


def test_finance_sign_in_end_to_end(app, live_server, app_client, fiona, operator,
                                    monkeypatch):
    flow = FinanceFlow(live_server.url, app_client)
    form = flow.browser.get(flow.authorize_url, timeout=10)
    assert '<label for="username">' in form.text and "member_number" not in form.text
    assert "Finance app" in form.text
    token = flow.token("fiona")
    assert token["token_type"] == "Bearer" and token["scope"] == "settlement:run"
    assert token["expires_in"] == app.config["ACCESS_TOKEN_LIFETIME"]
    assert token["refresh_token"]
    with read() as session:
        row = session.scalars(select(OAuthToken)).one()
        user_id = session.scalar(select(FinanceUser.id))
    assert (row.kind, row.finance_user_id, row.member_id) == ("public", user_id, None)
    assert row.scope == "settlement:run" and row.client_id == app_client["client_id"]
    assert token["access_token"] not in (row.access_token_hash, row.refresh_token_hash)
    with read() as session:
        code = session.scalars(select(OAuthAuthorizationCode)).one()
    assert (code.finance_user_id, code.member_id) == (user_id, None)
    assert code.used_at is not None

    # the token works on the settlement API; an operator sees who it acts for
    assert call(live_server.url, "get", "/v1/settlement/runs",
                token["access_token"]).status_code == 200
    seen = requests.post(f"{live_server.url}/oauth/introspect",
                         data={"token": token["access_token"]},
                         headers=basic_auth(operator["client_id"], operator["client_secret"]),
                         timeout=10).json()
    assert seen["active"] is True and seen["sub"] == seen["username"] == "fiona"
    assert seen["scope"] == "settlement:run" and seen["kind"] == "public"

    # refresh rotates, and the old refresh token is then refused (after the grace)
    new = flow.oauth.refresh_token(f"{live_server.url}/oauth/token",
                                   refresh_token=token["refresh_token"])
    assert new["scope"] == "settlement:run" and new["refresh_token"] != token["refresh_token"]
    assert call(live_server.url, "get", "/v1/settlement/runs",
                token["access_token"]).status_code == 401
    assert call(live_server.url, "get", "/v1/settlement/runs",
                new["access_token"]).status_code == 200
    after_the_grace(monkeypatch, app)  # (within it, the same new pair is answered)
    reused = requests.post(f"{live_server.url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"],
        "client_id": app_client["client_id"]}, timeout=10)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # reuse means two parties hold it: the live pair is revoked too
    assert call(live_server.url, "get", "/v1/settlement/runs",
                new["access_token"]).status_code == 401


def test_a_code_replayed_revokes_the_finance_token(live_server, app_client, fiona):
    flow = FinanceFlow(live_server.url, app_client)
    answer = flow.sign_in("fiona")
    code = query_of(answer.headers["Location"])["code"]
    form = {"grant_type": "authorization_code", "code": code,
            "client_id": app_client["client_id"], "redirect_uri": app_client["redirect_uri"],
            "code_verifier": flow.verifier}
    first = requests.post(f"{live_server.url}/oauth/token", data=form, timeout=10)
    assert first.status_code == 200
    again = requests.post(f"{live_server.url}/oauth/token", data=form, timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert call(live_server.url, "get", "/v1/settlement/runs",
                first.json()["access_token"]).status_code == 401


def test_pkce_is_required_for_finance_users_too(live_server, app_client):
    answer = requests.get(f"{live_server.url}/oauth/authorize", params={
        "response_type": "code", "client_id": app_client["client_id"],
        "redirect_uri": app_client["redirect_uri"], "scope": "settlement:run",
        "state": "s1"}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    assert query_of(answer.headers["Location"])["error"] == "invalid_request"


# --------------------------------------------------------------------------- who gets what


def test_a_member_cannot_obtain_settlement_run(app, client, live_server, app_client, fiona,
                                               make_partner):
    member = active_member(client, make_partner("acme")[1])
    member_app = public_client(live_server.url)
    # a members' client may not ask for settlement:run, alone or with member
    for scope in ("settlement:run", "member settlement:run"):
        answer = _authorize(live_server, member_app, scope)
        assert answer.status_code == 302, scope
        assert query_of(answer.headers["Location"])["error"] == "invalid_scope", scope
    # on the finance client's form a member's number and password are no account
    flow = FinanceFlow(live_server.url, app_client)
    refused = flow.sign_in(member.member_number, member.password)
    assert refused.status_code == 401 and "The username or password is wrong." in refused.text
    # a member's token cannot be refreshed into settlement:run
    token = Flow(live_server.url, member_app).token(member)
    widened = requests.post(f"{live_server.url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"],
        "client_id": member_app["client_id"], "scope": "settlement:run"}, timeout=10)
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"
    # and a member's token is refused on the settlement API
    before = snapshot(app)
    for method, path in (("get", "/v1/settlement/runs"), ("post", "/v1/settlement/runs")):
        answer = call(live_server.url, method, path, token["access_token"],
                      {"period_start": "2001-01-01", "period_end": "2001-01-02"})
        assert answer.status_code == 403, path
    assert snapshot(app) == before
    with read() as session:
        assert not session.scalars(select(OAuthToken).where(
            OAuthToken.member_id.is_not(None), OAuthToken.scope != "member")).all()


def test_a_finance_user_cannot_obtain_member(live_server, app_client, fiona):
    # the finance client may not ask for member, alone or with settlement:run
    for scope in ("member", "member settlement:run"):
        answer = _authorize(live_server, app_client, scope)
        assert answer.status_code == 302, scope
        assert query_of(answer.headers["Location"])["error"] == "invalid_scope", scope
    # on a members' client's form a finance username is no member number
    member_app = public_client(live_server.url)
    refused = Flow(live_server.url, member_app).sign_in("fiona", FINANCE_PASSWORD)
    assert refused.status_code == 401
    # a finance token cannot be refreshed into member, and is refused on /v1/me
    token = FinanceFlow(live_server.url, app_client).token("fiona")
    widened = requests.post(f"{live_server.url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"],
        "client_id": app_client["client_id"], "scope": "member"}, timeout=10)
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"
    for method, path, body in MEMBER_CALLS:
        assert call(live_server.url, method, path, token["access_token"],
                    body).status_code == 403, path


def test_the_grants_check_the_scope_against_who_signed_in():
    from coalition.member.signin import SignedInMember
    from coalition.oauth.finance_users import SignedInFinanceUser
    from coalition.oauth.member_grants import audience, scope_fits

    member, user = SignedInMember(1, "400000000006"), SignedInFinanceUser(1, "fiona", "F")
    assert scope_fits(member, "member") and scope_fits(user, "settlement:run")
    for scope in ("settlement:run", "member settlement:run", "admin", ""):
        assert not scope_fits(member, scope), scope
    for scope in ("member", "member settlement:run", "settlement:run admin", ""):
        assert not scope_fits(user, scope), scope
    assert audience("settlement:run") == "finance" and audience("member") == "member"


def test_public_clients_hold_one_audience(app):
    from coalition.errors import InvalidRequest
    from coalition.oauth.clients import create_public_client

    for scopes in (("member", "settlement:run"), ("admin",), ("settlement:run", "admin")):
        with pytest.raises(InvalidRequest):
            create_public_client("x", ["https://a.example/cb"], scopes=scopes)


# --------------------------------------------------------------------------- where it works


def test_a_finance_token_runs_settlement_and_nothing_else(app, live_server, app_client, fiona,
                                                          make_partner):
    make_partner("acme")
    token = FinanceFlow(live_server.url, app_client).token("fiona")["access_token"]
    assert call(live_server.url, "get", "/v1/settlement/runs", token).json() == []
    before = snapshot(app)
    for method, path, body in PARTNER_CALLS + ADMIN_CALLS:
        answer = call(live_server.url, method, path, token, body)
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error"] in ("insufficient_scope", "forbidden")
    assert snapshot(app) == before


def test_what_a_finance_user_does_is_in_their_name(app, client, make_partner, clock,
                                                   live_server, app_client, fiona):
    booked = book_period(client, make_partner, clock)
    token = bearer(FinanceFlow(live_server.url, app_client).token("fiona")["access_token"])
    created = client.post("/v1/settlement/runs", headers=token, json={
        "period_start": S.isoformat(), "period_end": E.isoformat()})
    assert created.status_code == 201, created.get_json()
    run = created.get_json()
    assert run["created_by"] == "fiona"
    report = upload(client, token, run["id"], "grocer", booked.grocer_file(1010)).get_json()
    assert report["uploaded_by"] == "fiona"
    [brk] = report["breaks"]
    # a finance user cannot resolve in someone else's name
    other = resolve(client, token, run["id"], brk["id"], "accept", user="someone-else")
    assert other.status_code == 422 and "user" in other.get_json()["errors"]
    done = resolve(client, token, run["id"], brk["id"], "accept", user="fiona")
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["resolved_by"] == "fiona"
    closed = client.post(f"/v1/settlement/runs/{run['id']}/close", headers=token)
    assert closed.status_code == 200 and closed.get_json()["closed_by"] == "fiona"
    from coalition.audit.models import AuditEvent

    with read() as session:
        people = set(session.scalars(select(AuditEvent.actor_user).where(
            AuditEvent.action.like("settlement.%"))))
    assert people == {"fiona"}
    # statements, exports and the rest are open to the finance user
    for path in ("statements/grocer", "matrix", "payments", "export", "breaks"):
        assert client.get(f"/v1/settlement/runs/{run['id']}/{path}",
                          headers=token).status_code == 200, path


def test_an_operator_may_still_name_the_resolver(client, make_partner, clock,
                                                 operator_headers, operator):
    booked = book_period(client, make_partner, clock)
    run = client.post("/v1/settlement/runs", headers=operator_headers, json={
        "period_start": S.isoformat(), "period_end": E.isoformat()}).get_json()
    report = upload(client, operator_headers, run["id"], "grocer",
                    booked.grocer_file(1010)).get_json()
    assert report["uploaded_by"] == operator["client_id"]
    done = resolve(client, operator_headers, run["id"], report["breaks"][0]["id"], "accept",
                   user="olivia")
    assert done.get_json()["resolved_by"] == "olivia"


# --------------------------------------------------------------------------- accounts


def test_repeated_failures_lock_the_finance_user(live_server, app_client, fiona):
    flow = FinanceFlow(live_server.url, app_client)
    for attempt in range(signin.MAX_FAILURES - 1):
        assert flow.sign_in("fiona", "wrong password!!").status_code == 401, attempt
    assert flow.sign_in("fiona", "wrong password!!").status_code == 429
    locked = flow.sign_in("fiona")
    assert locked.status_code == 429 and "Too many failed attempts" in locked.text
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60 + 1
    with UnitOfWork() as uow:  # the lock ends by itself
        uow.session.execute(update(FinanceUser).values(
            locked_until=utcnow() - timedelta(seconds=1)))
        uow.commit()
    assert flow.sign_in("fiona").status_code == 302
    with read() as session:
        assert tuple(session.execute(select(FinanceUser.failed_sign_ins,
                                            FinanceUser.locked_until)).one()) == (0, None)


def test_unknown_and_disabled_users_are_refused_alike(app, live_server, app_client, fiona):
    token = FinanceFlow(live_server.url, app_client).token("fiona")
    answers = {}
    for username in ("nobody", "Not A Username!"):
        with pytest.raises(signin.SignInFailed) as failed:
            finance_users.authenticate(username, FINANCE_PASSWORD)
        answers[username] = failed.value.message
    finance_users.disable_user("fiona")
    with pytest.raises(signin.SignInFailed) as failed:
        finance_users.authenticate("fiona", FINANCE_PASSWORD)
    assert {failed.value.message, *answers.values()} == {"The username or password is wrong."}
    # disabling ends the tokens already issued, and their refresh
    assert call(live_server.url, "get", "/v1/settlement/runs",
                token["access_token"]).status_code == 401
    assert requests.post(f"{live_server.url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"],
        "client_id": app_client["client_id"]}, timeout=10).status_code == 400


def test_cli_manages_finance_users(app):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["finance", "user", "create", "fiona", "--name",
                                  "Fiona Ledger", "--password-stdin", "--json"],
                            input=FINANCE_PASSWORD + "\n")
    assert created.exit_code == 0, created.output
    data = json.loads(created.output)
    assert data["username"] == "fiona" and data["active"] is True
    assert finance_users.authenticate("fiona", FINANCE_PASSWORD).username == "fiona"

    prompted = runner.invoke(args=["finance", "user", "create", "gus", "--name", "Gus"],
                             input="a password of length\na password of length\n")
    assert prompted.exit_code == 0, prompted.output
    assert "created finance user gus" in prompted.output
    short = runner.invoke(args=["finance", "user", "create", "hal", "--name", "Hal",
                                "--password-stdin"], input="eleven-char\n")
    assert short.exit_code == 2 and "at least 12 characters" in short.output
    again = runner.invoke(args=["finance", "user", "create", "fiona", "--name", "F",
                                "--password-stdin"], input=FINANCE_PASSWORD + "\n")
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(args=["finance", "user", "create", "Fiona Ledger", "--name", "F",
                              "--password-stdin"], input=FINANCE_PASSWORD + "\n")
    assert bad.exit_code == 2 and "USERNAME" in bad.output

    listed = runner.invoke(args=["finance", "user", "list", "--json"])
    assert [u["username"] for u in json.loads(listed.output)] == ["fiona", "gus"]
    disabled = runner.invoke(args=["finance", "user", "disable", "gus"])
    assert disabled.exit_code == 0 and "disabled finance user gus" in disabled.output
    text = runner.invoke(args=["finance", "user", "list"]).output
    assert "gus" in text and "disabled" in text
    missing = runner.invoke(args=["finance", "user", "disable", "nobody"])
    assert missing.exit_code == 1 and "No finance user" in missing.output
    # both are in the audit log, by the command line
    from coalition.audit.models import AuditEvent

    with read() as session:
        events = session.execute(select(AuditEvent.action, AuditEvent.actor, AuditEvent.target)
                                 .where(AuditEvent.action.like("finance_user.%"))
                                 .order_by(AuditEvent.id)).all()
    assert [tuple(e) for e in events] == [
        ("finance_user.created", "cli", "finance_user:fiona"),
        ("finance_user.created", "cli", "finance_user:gus"),
        ("finance_user.disabled", "cli", "finance_user:gus")]


def test_cli_registers_the_finance_page_client(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["client", "create", "--public", "--scope", "settlement:run",
                                 "--name", "Finance page", "--redirect-uri",
                                 "https://coalition.example/finance/callback", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["scopes"] == ["settlement:run"]
    refused = runner.invoke(args=["client", "create", "--public", "--scope", "admin",
                                  "--name", "x", "--redirect-uri", "https://a.example/cb"])
    assert refused.exit_code == 2
