"""The partner portal at ``/partner``: the operator creates a staff account (API and CLI)
with a one-time activation code; the person chooses a password with it and signs in through
the real authorization-code flow with PKCE; the portal shows their own partner's
transactions (filtered, searched, one with its reversals), batch files, webhooks and their
deliveries, funding and closed statements, and nothing of another partner's (404 exactly
as a made-up id). Every form carries a CSRF token. Last, a real headless Chromium clicks
through it on a desktop and on a phone.
"""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from html import unescape
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from coalition.db import read
from coalition.errors import InvalidRequest
from coalition.member import signin
from coalition.models import Partner
from coalition.oauth import partner_users
from coalition.oauth.clients import create_public_client
from coalition.oauth.models import OAuthToken, PartnerUser
from partners import batches, portal, webhooks
from partners.funding import configure
from tests.conftest import ARTIFACTS, bearer, snapshot
from tests.factories.coalition import seed
from tests.factories.members import csrf_of
from tests.factories.partner_api import burn, earn, enrol, post_ok

PASSWORD = "points-to-spare-2026"
GHOST = 987654321


def text_of(response) -> str:
    return response.get_data(as_text=True)


def staff_account(code: str = "acme", login: str = "lena@acme.example",
                  password: str = PASSWORD, role: str = "admin") -> str:
    """An activated account of partner ``code`` with ``role``; its login."""
    created = partner_users.create_user(code, login, "Lena Loyalty", role)
    partner_users.activate(login, created["activation_code"], password)
    return login


def sign_in(client: FlaskClient, login: str = "lena@acme.example",
            password: str = PASSWORD, status: int = 302) -> object:
    """Sign in on /partner with the Flask test client, through the real flow; the answer
    to the sign-in form (followed to the page it leads to when it succeeds)."""
    start = client.get("/partner/signin")
    assert start.status_code == 302, text_of(start)
    location = start.headers["Location"]
    assert "code_challenge_method=S256" in location and "partner%3Aportal" in location
    form = client.get(location)
    assert form.status_code == 200, text_of(form)
    answer = client.post(location, data={"csrf_token": csrf_of(text_of(form)),
                                         "login": login, "password": password})
    assert answer.status_code == status, text_of(answer)
    if status != 302:
        return answer
    return client.get(answer.headers["Location"], follow_redirects=True)


def staff_tokens() -> list[OAuthToken]:
    with read() as session:
        return list(session.scalars(select(OAuthToken).where(
            OAuthToken.partner_user_id.is_not(None), OAuthToken.revoked_at.is_(None))))


@pytest.fixture
def acme(client, make_partner):
    """Partner acme with a member, an earn, a burn and a reversal of the earn; bravo with a
    transaction of its own."""
    _, headers = make_partner("acme")
    _, bravo_headers = make_partner("bravo")
    member = enrol(client, headers, "ann")
    first = earn(client, headers, member, "till-1", points=500)
    second = burn(client, headers, member, "till-2", points=50)
    reversal = post_ok(client, f"/v1/transactions/{first['id']}/reversals", headers,
                       {"partner_txn_id": "till-1-refund", "points": 100})
    bravo_member = enrol(client, bravo_headers, "bob")
    theirs = earn(client, bravo_headers, bravo_member, "bravo-1", points=70)
    return {"headers": headers, "member": member, "earn": first, "burn": second,
            "reversal": reversal, "bravo": theirs, "bravo_headers": bravo_headers}


# --------------------------------------------------------------------------- accounts


def test_the_operator_creates_an_account_with_a_one_time_code(client, app, operator_headers,
                                                              make_partner):
    make_partner("acme")
    created = client.post("/v1/admin/partners/acme/users", headers=operator_headers,
                          json={"login": "Lena@Acme.example", "name": "Lena Loyalty"})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["login"] == "lena@acme.example" and body["partner"] == "acme"
    assert body["activated"] is False
    assert re.fullmatch(r"[2-9A-Z]{5}-[2-9A-Z]{5}", body["activation_code"])
    listed = client.get("/v1/admin/partners/acme/users", headers=operator_headers).get_json()
    assert [u["login"] for u in listed] == ["lena@acme.example"]
    assert "activation_code" not in listed[0]
    with read() as session:
        row = session.scalars(select(PartnerUser)).one()
    assert row.password_hash is None and body["activation_code"] not in (row.activation_hash
                                                                         or "")

    partner_users.activate("lena@acme.example", body["activation_code"], PASSWORD)
    with pytest.raises(signin.ActivationFailed):  # the code works once
        partner_users.activate("lena@acme.example", body["activation_code"], PASSWORD + "x")
    assert partner_users.authenticate("LENA@acme.example", PASSWORD).partner_code == "acme"


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/v1/admin/partners/acme/users", {"login": "has space", "name": "X"}, 422,
     "invalid_request"),
    ("/v1/admin/partners/acme/users", {"login": "ok@acme", "name": "   "}, 422,
     "invalid_request"),
    ("/v1/admin/partners/acme/users", {"login": "ok@acme"}, 422, None),
    ("/v1/admin/partners/acme/users", {"login": "ok@acme", "name": "X", "extra": 1}, 422,
     None),
    ("/v1/admin/partners/nosuch/users", {"login": "ok@acme", "name": "X"}, 404, "not_found"),
    ("/v1/admin/partners/acme/users", {"login": "taken@acme", "name": "X"}, 409, None),
])
def test_a_bad_account_request_changes_nothing(client, app, operator_headers, make_partner,
                                               path, body, status, error):
    make_partner("acme")
    partner_users.create_user("acme", "taken@acme", "Taken")
    before = snapshot(app)
    answer = client.post(path, headers=operator_headers, json=body)
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["code"] == status and "message" in answer.get_json()
    if error:
        assert answer.get_json()["error"] == error
    assert snapshot(app) == before


def test_accounts_need_the_admin_scope(client, make_partner):
    _, headers = make_partner("acme")
    answer = client.post("/v1/admin/partners/acme/users", headers=headers,
                         json={"login": "x@acme", "name": "X"})
    assert answer.status_code in (401, 403)


def test_the_cli_creates_and_disables_an_account(app, make_partner):
    make_partner("acme")
    runner = app.test_cli_runner()
    made = runner.invoke(args=["partner", "user", "create", "acme", "cli@acme", "--name",
                               "Cli Person", "--json"])
    assert made.exit_code == 0, made.output
    code = json.loads(made.output)["activation_code"]
    partner_users.activate("cli@acme", code, PASSWORD)
    again = runner.invoke(args=["partner", "user", "create", "acme", "cli@acme", "--name",
                                "Someone"])
    assert again.exit_code != 0 and "already exists" in again.output
    gone = runner.invoke(args=["partner", "user", "disable", "acme", "cli@acme"])
    assert gone.exit_code == 0, gone.output
    with pytest.raises(signin.SignInFailed):
        partner_users.authenticate("cli@acme", PASSWORD)


def test_activation_page_sets_the_password(client, make_partner):
    make_partner("acme")
    created = partner_users.create_user("acme", "new@acme", "New Person")
    form = client.get("/partner/activate")
    assert form.status_code == 200
    csrf = csrf_of(text_of(form))
    short = client.post("/partner/activate", data={
        "csrf_token": csrf, "login": "new@acme", "activation_code": created["activation_code"],
        "password": "short"})
    assert short.status_code == 422 and "at least 12" in text_of(short)
    wrong = client.post("/partner/activate", data={
        "csrf_token": csrf, "login": "new@acme", "activation_code": "AAAAA-AAAAA",
        "password": PASSWORD})
    assert wrong.status_code == 422
    forged = client.post("/partner/activate", data={
        "login": "new@acme", "activation_code": created["activation_code"],
        "password": PASSWORD})
    assert forged.status_code == 400  # no CSRF token
    done = client.post("/partner/activate", data={
        "csrf_token": csrf, "login": "new@acme",
        "activation_code": created["activation_code"].lower(), "password": PASSWORD})
    assert done.status_code == 302
    assert sign_in(client, "new@acme").status_code == 200


def test_sign_in_is_throttled_and_locks(client, make_partner):
    make_partner("acme")
    staff_account()
    for _ in range(signin.MAX_FAILURES - 1):
        sign_in(client, password="wrong-password-1", status=401)
    locked = sign_in(client, password="wrong-password-1", status=429)
    assert "Retry-After" in locked.headers
    sign_in(client, status=429)  # even the right password, while locked


# --------------------------------------------------------------------------- signing in


def test_sign_in_goes_through_the_authorization_code_flow(client, acme):
    staff_account()
    home = sign_in(client)
    html = text_of(home)
    assert home.status_code == 200
    assert 'data-testid="staff-login">lena@acme.example<' in html
    [token] = staff_tokens()
    assert token.scope == "partner:portal" and token.partner_id is None
    # the token carries no partner API scope: it never calls the partner API
    with client.session_transaction() as session:
        access = session["partner_tokens"]["access_token"]
    for path in ("/v1/transactions", f"/v1/transactions/{acme['earn']['id']}",
                 "/v1/funding", "/v1/batches", "/v1/webhooks"):
        assert client.get(path, headers=bearer(access)).status_code in (401, 403), path

    out = client.post("/partner/signout", data={"csrf_token": csrf_of(html)})
    assert out.status_code == 302
    assert staff_tokens() == []
    assert client.get("/partner/transactions").status_code == 302


def test_a_disabled_account_is_signed_out(client, acme):
    staff_account()
    sign_in(client)
    partner_users.disable_user("acme", "lena@acme.example")
    assert staff_tokens() == []
    answer = client.get("/partner/transactions")
    assert answer.status_code == 302 and "/partner/signin" in answer.headers["Location"]


def test_the_portal_scope_is_never_mixed_with_another(client, acme):
    """A sign-in asking for partner:portal with member (or settlement:run) is refused
    before any form is shown, and a public client never holds both."""
    location = client.get("/partner/signin").headers["Location"]
    for other in ("member", "settlement%3Arun"):
        mixed = client.get(location.replace("partner%3Aportal", f"partner%3Aportal+{other}"))
        assert mixed.status_code == 302
        assert "error=invalid_scope" in mixed.headers["Location"]
    with pytest.raises(InvalidRequest):
        create_public_client("Mixed", ["https://example.test/cb"],
                             scopes=("partner:portal", "member"))


# --------------------------------------------------------------------------- transactions


def test_transactions_with_filters_and_search(client, acme):
    staff_account()
    sign_in(client)
    page = text_of(client.get("/partner/transactions"))
    for t in ("earn", "burn", "reversal"):
        assert f'/partner/transactions/{acme[t]["id"]}"' in page
    assert "bravo-1" not in page and f'/partner/transactions/{acme["bravo"]["id"]}"' not in page
    assert "<caption>" in page

    burns = text_of(client.get("/partner/transactions?type=burn"))
    assert "till-2" in burns and "till-1<" not in burns and "till-1-refund" not in burns
    by_member = text_of(client.get(f"/partner/transactions?member_number={acme['member']}"))
    assert "till-1-refund" in by_member
    nobody = text_of(client.get("/partner/transactions?member_number=000000000"))
    assert "No transactions match" in nobody
    today = acme["earn"]["booked_at"][:10]
    dated = text_of(client.get(f"/partner/transactions?from={today}&to={today}"))
    assert "till-2" in dated
    before = text_of(client.get("/partner/transactions?to=2000-01-01"))
    assert "No transactions match" in before

    found = client.get("/partner/transactions?q=till-2")
    assert found.status_code == 302
    assert found.headers["Location"].endswith(f"/partner/transactions/{acme['burn']['id']}")
    theirs = client.get("/partner/transactions?q=bravo-1")
    assert theirs.status_code == 422 and "No transaction of yours" in text_of(theirs)
    for bad in ("type=gift", "from=2026-13-01", "from=yesterday", "cursor=garbage",
                "from=2026-02-02&to=2026-02-01"):
        answer = client.get(f"/partner/transactions?{bad}")
        assert answer.status_code == 422, bad
        assert 'role="alert"' in text_of(answer)


def test_transactions_page_on(client, acme):
    staff_account()
    sign_in(client)
    member = acme["member"]
    for n in range(3):
        earn(client, acme["headers"], member, f"more-{n}", points=1)
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setattr(portal, "PAGE", 2)
        first = text_of(client.get("/partner/transactions?type=earn"))
        assert len(re.findall(r'<th scope="row"><a href="/partner/transactions/', first)) == 2
        cursor = unescape(re.search(r'href="([^"]*cursor=[^"]*)"', first).group(1))
        assert "type=earn" in cursor
        second = text_of(client.get(cursor))
        assert "more-0" in second and "more-2" not in second


def test_one_transaction_with_its_reversals(client, acme):
    staff_account()
    sign_in(client)
    page = text_of(client.get(f"/partner/transactions/{acme['earn']['id']}"))
    assert 'data-testid="reference">till-1<' in page
    assert "till-1-refund" in page and '<td class="num">100</td>' in page
    reversal = text_of(client.get(f"/partner/transactions/{acme['reversal']['id']}"))
    assert f'/partner/transactions/{acme["earn"]["id"]}"' in reversal  # what it reverses
    burn_page = text_of(client.get(f"/partner/transactions/{acme['burn']['id']}"))
    assert "Not reversed." in burn_page


# --------------------------------------------------------------------------- isolation


def _same_404(client: FlaskClient, theirs: str, ghost: str, method: str = "GET",
              data: dict[str, str] | None = None) -> None:
    a = client.open(theirs, method=method, data=data)
    b = client.open(ghost, method=method, data=data)
    assert a.status_code == b.status_code == 404, (theirs, a.status_code, b.status_code)
    strip = re.compile(r"\d+")
    assert strip.sub("N", text_of(a)) == strip.sub("N", text_of(b)), theirs
    assert sorted(a.headers.keys()) == sorted(b.headers.keys())


def test_another_partners_objects_answer_404_as_made_up_ones(client, app, make_partner,
                                                             operator_headers):
    """Staff of acme try every portal page on bravo's transactions, batches, webhook
    endpoints and deliveries, and statements: each is 404 exactly as a made-up id, and
    nothing changes."""
    seeded = seed(client, make_partner, operator_headers, signed_in=False)
    staff_account("acme")
    bravo_id = client.get("/v1/funding", headers=seeded.bravo.headers)  # a live API call
    assert bravo_id.status_code == 200
    with read() as session:
        bravo = session.scalar(select(Partner.id).where(Partner.code == "bravo"))
    batch = batches.upload(bravo, {"points:earn"}, (
        "partner_txn_id,type,member_number,partner_member_ref,points,spend_amount,"
        f"spend_currency,occurred_at\nb-1,earn,{seeded.bravo_only},,2,,,\n").encode())
    endpoint = webhooks.create_endpoint(bravo, "http://127.0.0.1:18599/hook",
                                        ["transaction.booked"])
    earn(client, seeded.bravo.headers, seeded.bravo_only, "bravo-hooked", points=3)
    deliveries = webhooks.list_deliveries(bravo, endpoint["id"], {})["items"]
    assert deliveries, "the earn raised an event for bravo's endpoint"
    sign_in(client)
    csrf = csrf_of(text_of(client.get("/partner/transactions")))
    before = snapshot(app)

    for txn in seeded.bravo.transaction_ids():
        _same_404(client, f"/partner/transactions/{txn}", f"/partner/transactions/{GHOST}")
    _same_404(client, f"/partner/batches/{batch['id']}", f"/partner/batches/{GHOST}")
    _same_404(client, f"/partner/batches/{batch['id']}/results.csv",
              f"/partner/batches/{GHOST}/results.csv")
    _same_404(client, f"/partner/webhooks/{endpoint['id']}", f"/partner/webhooks/{GHOST}")
    _same_404(client, f"/partner/webhooks/{endpoint['id']}/deliveries/"
                      f"{deliveries[0]['id']}/replay",
              f"/partner/webhooks/{GHOST}/deliveries/{GHOST}/replay", "POST",
              {"csrf_token": csrf})
    for suffix in ("", ".csv", ".json"):
        # the draft run has a statement for acme, but a partner sees closed runs only
        _same_404(client, f"/partner/statements/{seeded.draft_run}{suffix}",
                  f"/partner/statements/{GHOST}{suffix}")
    # and the lists show acme's own alone
    assert f"Batch {batch['id']}" not in text_of(client.get("/partner/batches"))
    assert "18599" not in text_of(client.get("/partner/webhooks"))
    assert snapshot(app) == before

    closed = text_of(client.get(f"/partner/statements/{seeded.closed_run}"))
    assert "Statement of run" in closed
    assert "bravo-" not in closed


# --------------------------------------------------------------------------- the other pages


def test_batch_upload_and_results(client, app, acme):
    staff_account()
    sign_in(client)
    page = text_of(client.get("/partner/batches"))
    csrf = csrf_of(page)
    content = ("partner_txn_id,type,member_number,partner_member_ref,points,spend_amount,"
               "spend_currency,occurred_at\n"
               f"file-1,earn,{acme['member']},,10,,,\n"
               f"till-1,earn,{acme['member']},,999,,,\n"
               f"file-2,burn,{acme['member']},,99999999,,,\n").encode()
    before = snapshot(app)
    refused = client.post("/partner/batches", data={"file": (io.BytesIO(b""), "empty.csv")},
                          content_type="multipart/form-data")
    assert refused.status_code == 400  # no CSRF token
    broken = client.post("/partner/batches", data={
        "csrf_token": csrf, "file": (io.BytesIO(b"not,a,batch\n1,2,3\n"), "bad.csv")},
        content_type="multipart/form-data")
    assert broken.status_code == 422, text_of(broken)
    assert "The file was not accepted" in text_of(broken), text_of(broken)
    short = client.post("/partner/batches", data={
        "csrf_token": csrf, "rows": "5", "file": (io.BytesIO(content), "day.csv")},
        content_type="multipart/form-data")
    assert short.status_code == 422
    assert snapshot(app) == before

    done = client.post("/partner/batches", data={"csrf_token": csrf, "rows": "3",
                                                 "file": (io.BytesIO(content), "day.csv")},
                       content_type="multipart/form-data")
    assert done.status_code == 302, text_of(done)
    batch_url = done.headers["Location"]
    assert "queued" in text_of(client.get(batch_url))
    while batches.book_some():
        pass
    page = text_of(client.get(batch_url))
    assert re.search(r'data-testid="booked">1<', page)
    assert re.search(r'data-testid="refused">2<', page)
    assert "idempotency_conflict" in page and "insufficient_points" in page
    results = client.get(f"{batch_url}/results.csv")
    assert results.status_code == 200 and results.mimetype == "text/csv"
    assert "attachment" in results.headers["Content-Disposition"]
    assert results.get_data(as_text=True).splitlines()[0].startswith("line,partner_txn_id")


def test_webhooks_deliveries_and_replay(client, app, acme):
    staff_account()
    with read() as session:
        acme_id = session.scalar(select(Partner.id).where(Partner.code == "acme"))
    endpoint = webhooks.create_endpoint(acme_id, "http://127.0.0.1:18598/hook",
                                        ["transaction.booked"])
    earn(client, acme["headers"], acme["member"], "hooked-1", points=4)
    sign_in(client)
    listing = text_of(client.get("/partner/webhooks"))
    assert "http://127.0.0.1:18598/hook" in listing and endpoint["secret"] not in listing
    page = text_of(client.get(f"/partner/webhooks/{endpoint['id']}"))
    [delivery] = webhooks.list_deliveries(acme_id, endpoint["id"], {})["items"]
    assert "transaction.booked" in page and "Send again" in page
    url = f"/partner/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/replay"
    before = snapshot(app)
    assert client.post(url).status_code == 400  # no CSRF token
    assert snapshot(app) == before
    again = client.post(url, data={"csrf_token": csrf_of(page)})
    assert again.status_code == 302
    after = webhooks.list_deliveries(acme_id, endpoint["id"], {})["items"]
    assert len(after) == 2 and after[0]["replay_of"] == delivery["id"]
    assert f"again as delivery {after[0]['id']}" in text_of(
        client.get(again.headers["Location"]))


def test_funding_page(client, acme):
    staff_account()
    configure("acme", {"points": 5000, "price": Decimal("40.00"), "currency": "GBP"})
    configure("acme", {"points": 1000, "price": Decimal("8.00"), "currency": "GBP",
                       "reserve": True})
    sign_in(client)
    page = text_of(client.get("/partner/funding"))
    assert "Prepaid" in page and 'data-testid="available">5,000<' in page
    assert "40.00 GBP" in page and "reserve" in page and "waiting" in page


def test_statements_and_downloads(client, make_partner, operator_headers):
    seeded = seed(client, make_partner, operator_headers, signed_in=False)
    staff_account("acme")
    sign_in(client)
    listing = text_of(client.get("/partner/statements"))
    assert f"/partner/statements/{seeded.closed_run}\"" in listing
    assert f"/partner/statements/{seeded.draft_run}\"" not in listing
    page = text_of(client.get(f"/partner/statements/{seeded.closed_run}"))
    assert "Reconciliation" in page and "Download CSV" in page
    as_csv = client.get(f"/partner/statements/{seeded.closed_run}.csv")
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    assert all(row.startswith("acme,") for row in as_csv.get_data(as_text=True).splitlines()[1:])
    as_json = client.get(f"/partner/statements/{seeded.closed_run}.json")
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    doc = json.loads(as_json.get_data(as_text=True))
    api = client.get(f"/v1/settlement/runs/{seeded.closed_run}/statements/acme",
                     headers=seeded.acme.headers).get_json()
    assert doc["net"] == api["net"] and doc["issued_points"] == api["issued_points"]


def test_every_form_and_page_is_accessible_markup(client, acme):
    staff_account()
    sign_in(client)
    for path in ("/partner/transactions", f"/partner/transactions/{acme['earn']['id']}",
                 "/partner/batches", "/partner/webhooks", "/partner/funding",
                 "/partner/statements", "/partner/activate", "/partner/staff",
                 "/partner/audit"):
        answer = client.get(path)
        html = text_of(answer)
        assert answer.status_code == 200, path
        assert html.count("<h1") == 1 and "<main" in html, path
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
        for control in re.findall(r'<(?:input|select|textarea)\b[^>]*>', html):
            if 'type="hidden"' in control:
                continue
            ident = re.search(r'id="([^"]+)"', control).group(1)
            assert f'<label for="{ident}">' in html, (path, control)
        for form in re.findall(r'<form method="post".*?</form>', html, re.S):
            assert 'name="csrf_token"' in form, path
        assert "style=" not in html and "<script" not in html, path
        for table in re.findall(r"<table.*?</table>", html, re.S):
            assert "<caption>" in table, path


# --------------------------------------------------------------------------- a real browser


def test_partner_staff_in_a_real_browser(chromium, backend, live_server, acme):
    staff_account()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/partner")
        page.get_by_role("link", name="Sign in").click()
        page.wait_for_url("**/oauth/authorize?**")
        assert "code_challenge_method=S256" in page.url and "partner%3Aportal" in page.url
        page.get_by_label("Login").fill("lena@acme.example")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/partner")
        assert page.get_by_test_id("staff-login").inner_text() == "lena@acme.example"
        assert page.get_by_test_id("transactions").locator("tbody tr").count() == 3

        # filter to burns, and submit the filters from the keyboard (Enter in a field)
        page.get_by_label("Type").focus()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "member_number"
        page.get_by_label("Type").select_option("burn")
        page.get_by_label("Member number").press("Enter")
        page.wait_for_url("**type=burn**")
        assert page.get_by_test_id("transactions").locator("tbody tr").count() == 1

        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0).map(el => el.name)""")
        assert unlabelled == []
        for landmark in ("banner", "navigation", "main", "contentinfo"):
            assert page.get_by_role(landmark).count() >= 1, landmark
        page.screenshot(path=str(ARTIFACTS / f"partner-transactions-desktop-{backend}.png"),
                        full_page=True)

        page.goto(f"{live_server.url}/partner/transactions/{acme['earn']['id']}")
        assert page.get_by_test_id("reversals").locator("tbody tr").count() == 1
        page.screenshot(path=str(ARTIFACTS / f"partner-transaction-desktop-{backend}.png"),
                        full_page=True)

        page.get_by_role("link", name="Batch files").click()
        page.get_by_label("CSV file").set_input_files(files=[{
            "name": "day.csv", "mimeType": "text/csv",
            "buffer": ("partner_txn_id,type,member_number,partner_member_ref,points,"
                       "spend_amount,spend_currency,occurred_at\n"
                       f"web-1,earn,{acme['member']},,25,,,\n").encode()}])
        page.get_by_role("button", name="Upload").click()
        page.wait_for_url(re.compile(r".*/partner/batches/\d+$"))
        assert "queued for booking" in page.get_by_role("status").first.inner_text()

        page.set_viewport_size({"width": 390, "height": 844})
        for path in ("/partner", f"/partner/transactions/{acme['earn']['id']}",
                     "/partner/funding"):
            page.goto(f"{live_server.url}{path}")
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= 390, (path, overflow)
        page.goto(f"{live_server.url}/partner")
        page.screenshot(path=str(ARTIFACTS / f"partner-transactions-phone-{backend}.png"),
                        full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_load_state()
        assert page.get_by_role("link", name="Sign in").is_visible()
        assert staff_tokens() == []
    finally:
        context.close()


def test_the_demo_has_a_portal_account(app, client):
    """``make run``'s demo coalition: the README's portal login signs in at northwind."""
    loaded = app.test_cli_runner().invoke(args=["demo", "load", "--json"])
    assert loaded.exit_code == 0, loaded.output
    portal_account = json.loads(loaded.stdout)["portal"]
    assert portal_account == {"partner": "northwind", "login": "nora@northwind.example",
                              "password": "northwind-portal-demo"}
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "nora@northwind.example" in readme and "northwind-portal-demo" in readme
    home = sign_in(client, portal_account["login"], portal_account["password"])
    assert 'data-testid="staff-login">nora@northwind.example<' in text_of(home)


def test_the_other_pages_in_a_real_browser(chromium, backend, live_server, client, app,
                                           make_partner, operator_headers):
    """Batch files, webhooks, funding and statements, on a desktop and on a phone: each
    page lays out without sideways scrolling, and its tables have captions."""
    seeded = seed(client, make_partner, operator_headers, signed_in=False)
    staff_account("acme")
    with read() as session:
        acme_id = session.scalar(select(Partner.id).where(Partner.code == "acme"))
    configure("acme", {"points": 100000, "price": Decimal("900.00"), "currency": "GBP"})
    endpoint = webhooks.create_endpoint(acme_id, "http://127.0.0.1:18597/hook",
                                        ["transaction.booked"])
    earn(client, seeded.acme.headers, seeded.acme_only, "hooked-browser", points=3)
    batch = batches.upload(acme_id, {"points:earn", "points:burn"}, (
        "partner_txn_id,type,member_number,partner_member_ref,points,spend_amount,"
        f"spend_currency,occurred_at\nfile-a,earn,{seeded.acme_only},,2,,,\n"
        f"file-b,burn,{seeded.acme_only},,99999999,,,\n").encode())
    while batches.book_some():
        pass
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/partner/signin")
        page.get_by_label("Login").fill("lena@acme.example")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/partner")
        pages = {"batch": f"/partner/batches/{batch['id']}",
                 "webhook": f"/partner/webhooks/{endpoint['id']}",
                 "funding": "/partner/funding",
                 "statement": f"/partner/statements/{seeded.closed_run}"}
        for name, path in pages.items():
            for width, height, device in ((1280, 900, "desktop"), (390, 844, "phone")):
                page.set_viewport_size({"width": width, "height": height})
                page.goto(f"{live_server.url}{path}")
                assert page.locator("h1").count() == 1, path
                overflow = page.evaluate("document.documentElement.scrollWidth")
                wide = page.evaluate("""(w) => [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > w)
                    .map(e => e.tagName + '.' + e.className).slice(0, 8)""", width)
                assert overflow <= width, (path, device, overflow, wide)
                captions = page.evaluate("""() => [...document.querySelectorAll('table')]
                    .filter(t => !t.caption).length""")
                assert captions == 0, path
                page.screenshot(path=str(ARTIFACTS / f"partner-{name}-{device}-{backend}.png"),
                                full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{live_server.url}{pages['batch']}")
        assert page.get_by_test_id("refused").inner_text() == "1"
        page.goto(f"{live_server.url}{pages['webhook']}")
        page.get_by_role("button", name=re.compile(r"^Send delivery \d+ again$")).first.click()
        page.wait_for_load_state()
        assert "is sent again as delivery" in page.get_by_role("status").first.inner_text()
    finally:
        context.close()
