"""The partner portal's staff: roles checked on every action, a suspended partner's staff
signed out and kept out, the partner's audit trail, webhook endpoints registered and
deleted from the portal, and lists paged with "older" links.

Every refused action is checked for its status and for changing nothing (``snapshot``).
"""

from __future__ import annotations

import io
import re
from html import unescape

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from coalition.audit.models import AuditEvent
from coalition.audit.service import Actor
from coalition.db import UnitOfWork, read
from coalition.member import signin
from coalition.models import Partner
from coalition.oauth import partner_users
from partners import batches, portal, service, webhooks
from tests.conftest import ARTIFACTS, snapshot
from tests.factories.members import csrf_of
from tests.factories.partner_api import earn, enrol
from tests.partners.test_portal import PASSWORD, sign_in, staff_account, staff_tokens, text_of

ROW = ("partner_txn_id,type,member_number,partner_member_ref,points,spend_amount,"
       "spend_currency,occurred_at\n{txn},earn,{member},,5,,,\n")
HOOK = "http://127.0.0.1:18601/hook"


def partner_id(code: str) -> int:
    with read() as session:
        found = session.scalar(select(Partner.id).where(Partner.code == code))
    assert found is not None
    return found


@pytest.fixture
def acme(client, make_partner):
    """Partner acme with a member and an earn; an endpoint with a delivery; bravo."""
    _, headers = make_partner("acme")
    make_partner("bravo")
    member = enrol(client, headers, "ann")
    endpoint = webhooks.create_endpoint(partner_id("acme"), HOOK, ["transaction.booked"])
    earn(client, headers, member, "till-1", points=500)
    [delivery] = webhooks.list_deliveries(partner_id("acme"), endpoint["id"], {})["items"]
    return {"headers": headers, "member": member, "endpoint": endpoint, "delivery": delivery}


def as_staff(client: FlaskClient, role: str, login: str = "lena@acme.example") -> str:
    """Sign ``client`` in as a new acme account with ``role``; a CSRF token of its
    session."""
    staff_account("acme", login, role=role)
    sign_in(client, login)
    return csrf_of(text_of(client.get("/partner/transactions")))


def trail(code: str = "acme") -> list[AuditEvent]:
    with read() as session:
        return list(session.scalars(select(AuditEvent).where(
            AuditEvent.partner_id == partner_id(code)).order_by(AuditEvent.id)))


# --------------------------------------------------------------------------- suspension


def test_a_suspended_partners_staff_are_signed_out_and_kept_out(client, app, acme,
                                                                operator_headers):
    staff_account()
    waiting = partner_users.create_user("acme", "new@acme", "New Person")
    sign_in(client)
    assert staff_tokens()
    answer = client.post("/v1/admin/partners/acme/suspend", headers=operator_headers)
    assert answer.status_code == 200 and answer.get_json()["status"] == "suspended"
    assert staff_tokens() == []  # revoked in the suspension's transaction
    gone = client.get("/partner/transactions")
    assert gone.status_code == 302 and "/partner/signin" in gone.headers["Location"]
    refused = sign_in(client, status=401)
    assert "The login or password is wrong." in text_of(refused)
    with pytest.raises(signin.SignInFailed):
        partner_users.authenticate("lena@acme.example", PASSWORD)
    with pytest.raises(signin.ActivationFailed):
        partner_users.activate("new@acme", waiting["activation_code"], PASSWORD)
    # bravo's staff are not touched
    staff_account("bravo", "bo@bravo.example")
    assert partner_users.authenticate("bo@bravo.example", PASSWORD).partner_code == "bravo"

    again = client.post("/v1/admin/partners/acme/reactivate", headers=operator_headers)
    assert again.status_code == 200 and again.get_json()["status"] == "active"
    assert sign_in(client).status_code == 200
    actions = [e.action for e in trail()]
    assert "partner.suspended" in actions and "partner.reactivated" in actions


def test_a_suspended_partners_token_stops_working_even_unrevoked(client, acme):
    """The portal checks the partner's status on every request, not only the token."""
    staff_account()
    sign_in(client)
    with UnitOfWork() as uow:
        uow.session.execute(Partner.__table__.update().where(Partner.code == "acme")
                            .values(status="suspended"))
        uow.commit()
    assert staff_tokens()  # not revoked: suspended by hand
    gone = client.get("/partner/transactions")
    assert gone.status_code == 302 and "/partner/signin" in gone.headers["Location"]


@pytest.mark.parametrize(("path", "status", "error"), [
    ("/v1/admin/partners/nosuch/suspend", 404, "not_found"),
    ("/v1/admin/partners/nosuch/reactivate", 404, "not_found"),
])
def test_suspending_no_partner_changes_nothing(client, app, operator_headers, make_partner,
                                               path, status, error):
    make_partner("acme")
    before = snapshot(app)
    answer = client.post(path, headers=operator_headers)
    assert answer.status_code == status and answer.get_json()["error"] == error
    assert snapshot(app) == before


def test_suspension_needs_the_admin_scope(client, app, make_partner):
    _, headers = make_partner("acme")
    before = snapshot(app)
    assert client.post("/v1/admin/partners/acme/suspend", headers=headers).status_code == 403
    assert snapshot(app) == before


def test_the_cli_suspends_and_reactivates(app, make_partner):
    make_partner("acme")
    staff_account()
    runner = app.test_cli_runner()
    done = runner.invoke(args=["partner", "suspend", "acme"])
    assert done.exit_code == 0 and "suspended" in done.output, done.output
    with pytest.raises(signin.SignInFailed):
        partner_users.authenticate("lena@acme.example", PASSWORD)
    assert runner.invoke(args=["partner", "reactivate", "acme"]).exit_code == 0
    assert partner_users.authenticate("lena@acme.example", PASSWORD).partner_code == "acme"
    missing = runner.invoke(args=["partner", "suspend", "nosuch"])
    assert missing.exit_code != 0 and "No partner" in missing.output


# --------------------------------------------------------------------------- roles


def test_the_operator_gives_a_role(client, app, operator_headers, make_partner):
    make_partner("acme")
    made = client.post("/v1/admin/partners/acme/users", headers=operator_headers,
                       json={"login": "op@acme", "name": "Op", "role": "operator"})
    assert made.status_code == 201 and made.get_json()["role"] == "operator"
    plain = client.post("/v1/admin/partners/acme/users", headers=operator_headers,
                        json={"login": "view@acme", "name": "View"})
    assert plain.get_json()["role"] == "viewer"  # the least, unless asked
    changed = client.patch("/v1/admin/partners/acme/users/view@acme",
                           headers=operator_headers, json={"role": "admin"})
    assert changed.status_code == 200 and changed.get_json()["role"] == "admin"
    listed = client.get("/v1/admin/partners/acme/users", headers=operator_headers).get_json()
    assert {u["login"]: u["role"] for u in listed} == {"op@acme": "operator",
                                                       "view@acme": "admin"}
    assert [e.details for e in trail() if e.action == "partner_user.role_changed"] == [
        {"partner": "acme", "from": "viewer", "to": "admin"}]


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), [
    ("post", "/v1/admin/partners/acme/users", {"login": "x@acme", "name": "X",
                                               "role": "owner"}, 422, "invalid_request"),
    ("patch", "/v1/admin/partners/acme/users/taken@acme", {"role": "owner"}, 422,
     "invalid_request"),
    ("patch", "/v1/admin/partners/acme/users/taken@acme", {}, 422, "invalid_request"),
    ("patch", "/v1/admin/partners/acme/users/nobody@acme", {"role": "admin"}, 404,
     "not_found"),
    ("patch", "/v1/admin/partners/bravo/users/taken@acme", {"role": "admin"}, 404,
     "not_found"),
])
def test_a_bad_role_request_changes_nothing(client, app, operator_headers, make_partner,
                                            method, path, body, status, error):
    make_partner("acme")
    make_partner("bravo")
    partner_users.create_user("acme", "taken@acme", "Taken")
    before = snapshot(app)
    answer = getattr(client, method)(path, headers=operator_headers, json=body)
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["error"] == error
    assert snapshot(app) == before


def test_the_cli_gives_and_changes_a_role(app, make_partner):
    make_partner("acme")
    runner = app.test_cli_runner()
    made = runner.invoke(args=["partner", "user", "create", "acme", "cli@acme", "--name",
                               "Cli", "--role", "operator", "--json"])
    assert made.exit_code == 0 and '"role": "operator"' in made.output, made.output
    changed = runner.invoke(args=["partner", "user", "role", "acme", "cli@acme", "admin"])
    assert changed.exit_code == 0 and "admin" in changed.output
    assert runner.invoke(args=["partner", "user", "role", "acme", "cli@acme",
                               "owner"]).exit_code != 0
    assert partner_users.list_users("acme")[0]["role"] == "admin"


def _actions(acme: dict, csrf: str) -> list[tuple[str, dict]]:
    """Every portal form that changes something, as (path, form)."""
    endpoint, delivery = acme["endpoint"]["id"], acme["delivery"]["id"]
    upload = ROW.format(txn="file-1", member=acme["member"]).encode()
    return [
        ("/partner/batches", {"csrf_token": csrf,
                              "file": (io.BytesIO(upload), "day.csv")}),
        (f"/partner/webhooks/{endpoint}/deliveries/{delivery}/replay", {"csrf_token": csrf}),
        ("/partner/webhooks", {"csrf_token": csrf, "url": "https://hooks.example/x",
                               "events": "transaction.booked"}),
        (f"/partner/webhooks/{endpoint}/delete", {"csrf_token": csrf}),
    ]


def _staff_actions(csrf: str) -> list[tuple[str, dict]]:
    return [
        ("/partner/staff", {"csrf_token": csrf, "login": "new@acme", "name": "New",
                            "role": "viewer"}),
        ("/partner/staff/other@acme.example/role", {"csrf_token": csrf, "role": "admin"}),
        ("/partner/staff/other@acme.example/disable", {"csrf_token": csrf}),
    ]


def test_a_viewer_reads_everything_and_changes_nothing(client, app, acme):
    csrf = as_staff(client, "viewer")
    staff_account("acme", "other@acme.example", role="viewer")
    for path in ("/partner/transactions", "/partner/batches", "/partner/webhooks",
                 f"/partner/webhooks/{acme['endpoint']['id']}", "/partner/funding",
                 "/partner/statements", "/partner/audit"):
        page = client.get(path)
        assert page.status_code == 200, path
        html = text_of(page)
        # no form it could not send
        for action in ("Upload", "Register", "Send again", "Delete"):
            assert f">{action}</button>" not in html, (path, action)
        assert "/partner/staff" not in html  # nor the link to the staff page
    assert client.get("/partner/staff").status_code == 403
    before = snapshot(app)
    for path, form in _actions(acme, csrf) + _staff_actions(csrf):
        answer = client.post(path, data=form, content_type="multipart/form-data")
        assert answer.status_code == 403, (path, answer.status_code)
        assert "Your role (viewer) does not allow this" in text_of(answer)
    assert snapshot(app) == before


def test_an_operator_acts_but_does_not_manage_staff(client, app, acme):
    csrf = as_staff(client, "operator")
    staff_account("acme", "other@acme.example", role="viewer")
    assert client.get("/partner/staff").status_code == 403
    before = snapshot(app)
    for path, form in _staff_actions(csrf):
        answer = client.post(path, data=form)
        assert answer.status_code == 403, path
    assert snapshot(app) == before
    for path, form in _actions(acme, csrf):
        answer = client.post(path, data=form, content_type="multipart/form-data")
        assert answer.status_code in (201, 302), (path, text_of(answer))
    # each wrote one event naming the person and the partner
    events = [e for e in trail() if e.actor_user == "lena@acme.example"]
    assert [e.action for e in events] == ["batch.uploaded", "webhook_delivery.replayed",
                                          "webhook_endpoint.created",
                                          "webhook_endpoint.deleted"]
    with client.session_transaction() as session:
        portal_client = session["partner_tokens"]["client_id"]
    assert {(e.actor, e.partner_id) for e in events} == {(portal_client, partner_id("acme"))}


def test_an_admin_manages_the_partners_staff(client, app, acme):
    csrf = as_staff(client, "admin")
    page = client.get("/partner/staff")
    assert page.status_code == 200 and "lena@acme.example" in text_of(page)
    made = client.post("/partner/staff", data={"csrf_token": csrf, "login": "New@Acme",
                                               "name": "New Person", "role": "operator"})
    assert made.status_code == 201
    code = re.search(r'data-testid="activation-code">([^<]+)<', text_of(made)).group(1)
    with client.session_transaction() as session:
        assert code not in str(dict(session))  # shown once, never kept
    partner_users.activate("new@acme", code, PASSWORD)
    assert partner_users.authenticate("new@acme", PASSWORD).role == "operator"

    other = FlaskClient(app, use_cookies=True)
    sign_in(other, "new@acme")
    assert other.get("/partner/batches").status_code == 200

    assert client.post("/partner/staff/new@acme/role", data={
        "csrf_token": csrf, "role": "viewer"}).status_code == 302
    # the new role applies from the person's next request
    other_csrf = csrf_of(text_of(other.get("/partner/batches")))
    assert other.post(f"/partner/webhooks/{acme['endpoint']['id']}/delete",
                      data={"csrf_token": other_csrf}).status_code == 403

    assert client.post("/partner/staff/new@acme/disable",
                       data={"csrf_token": csrf}).status_code == 302
    gone = other.get("/partner/batches")
    assert gone.status_code == 302 and "/partner/signin" in gone.headers["Location"]

    events = [(e.action, e.actor_user, e.details) for e in trail()
              if e.target == "partner_user:new@acme"]
    assert events == [
        ("partner_user.created", "lena@acme.example",
         {"partner": "acme", "name": "New Person", "role": "operator"}),
        ("partner_user.role_changed", "lena@acme.example",
         {"partner": "acme", "from": "operator", "to": "viewer"}),
        ("partner_user.disabled", "lena@acme.example",
         {"partner": "acme", "tokens_revoked": 1})]


@pytest.mark.parametrize(("path", "form", "status"), [
    ("/partner/staff", {"login": "has space", "name": "X", "role": "viewer"}, 422),
    ("/partner/staff", {"login": "ok@acme", "name": " ", "role": "viewer"}, 422),
    ("/partner/staff", {"login": "ok@acme", "name": "X", "role": "owner"}, 422),
    ("/partner/staff", {"login": "lena@acme.example", "name": "X", "role": "viewer"}, 409),
    ("/partner/staff/lena@acme.example/disable", {}, 422),  # not yourself
    ("/partner/staff/lena@acme.example/role", {"role": "viewer"}, 422),
    ("/partner/staff/bo@bravo.example/disable", {}, 404),  # bravo's: as no account
    ("/partner/staff/bo@bravo.example/role", {"role": "viewer"}, 404),
    ("/partner/staff/nobody@acme/disable", {}, 404),
    ("/partner/staff/lena@acme.example/role", {"role": "owner"}, 422),
    ("/partner/staff", {"login": "ok@acme", "name": "X", "role": "viewer",
                        "csrf_token": ""}, 400),
])
def test_a_bad_staff_form_changes_nothing(client, app, acme, path, form, status):
    csrf = as_staff(client, "admin")
    staff_account("bravo", "bo@bravo.example")
    before = snapshot(app)
    answer = client.post(path, data={"csrf_token": csrf, **form})
    assert answer.status_code == status, text_of(answer)
    assert snapshot(app) == before


# --------------------------------------------------------------------------- audit trail


def test_the_audit_trail_shows_the_partners_own_events_paged(client, app, acme):
    as_staff(client, "operator")
    for n in range(3):
        batches.upload(partner_id("acme"), {"points:earn"},
                       ROW.format(txn=f"f-{n}", member=acme["member"]).encode(),
                       actor=Actor("pub_x", "lena@acme.example"))
    batches.upload(partner_id("bravo"), {"points:earn"},
                   ROW.format(txn="theirs", member=acme["member"]).encode(),
                   actor=Actor("pub_y", "bo@bravo.example"))
    page = text_of(client.get("/partner/audit"))
    assert page.count("batch.uploaded") == 3 and "bo@bravo.example" not in page
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setattr(portal, "PAGE", 2)
        first = text_of(client.get("/partner/audit"))
        assert first.count("<code>batch.uploaded</code>") == 2
        older = unescape(re.search(r'href="([^"]*cursor=[^"]*)"', first).group(1))
        second = text_of(client.get(older))
        # the first upload, and the account made before it; no more
        assert second.count("<code>batch.uploaded</code>") == 1
        assert "partner_user.created" in second
        assert "cursor=" not in second
    bad = client.get("/partner/audit?cursor=garbage")
    assert bad.status_code == 422 and 'role="alert"' in text_of(bad)


# --------------------------------------------------------------------------- webhooks


def test_register_and_delete_an_endpoint_from_the_portal(client, app, acme):
    csrf = as_staff(client, "operator")
    made = client.post("/partner/webhooks", data={
        "csrf_token": csrf, "url": "https://hooks.example/coalition",
        "events": ["transaction.booked", "funding.low"]})
    assert made.status_code == 201, text_of(made)
    secret = re.search(r'data-testid="secret">(whsec_[^<]+)<', text_of(made)).group(1)
    with client.session_transaction() as session:
        assert secret not in str(dict(session))
    [mine] = [e for e in webhooks.list_endpoints(partner_id("acme"))
              if e["url"] == "https://hooks.example/coalition"]
    assert mine["events"] == ["funding.low", "transaction.booked"]
    listing = text_of(client.get("/partner/webhooks"))
    assert "https://hooks.example/coalition" in listing and secret not in listing

    gone = client.post(f"/partner/webhooks/{mine['id']}/delete", data={"csrf_token": csrf})
    assert gone.status_code == 302
    assert "hooks.example" not in text_of(client.get("/partner/webhooks"))


@pytest.mark.parametrize("form", [
    {"url": "http://hooks.example/x", "events": ["transaction.booked"]},
    {"url": "https://hooks.example/x", "events": []},
    {"url": "https://hooks.example/x", "events": ["no.such"]},
    {"url": "https://10.0.0.1/x", "events": ["transaction.booked"]},
    {"url": "", "events": ["transaction.booked"]},
])
def test_a_bad_endpoint_form_changes_nothing(client, app, acme, form):
    csrf = as_staff(client, "operator")
    before = snapshot(app)
    answer = client.post("/partner/webhooks", data={"csrf_token": csrf, **form})
    assert answer.status_code == 422
    assert 'role="alert"' in text_of(answer) and "whsec_" not in text_of(answer)
    assert snapshot(app) == before


def test_another_partners_endpoint_is_404_as_a_made_up_one(client, app, acme):
    csrf = as_staff(client, "admin")
    theirs = webhooks.create_endpoint(partner_id("bravo"), HOOK, ["transaction.booked"])
    before = snapshot(app)
    a = client.post(f"/partner/webhooks/{theirs['id']}/delete", data={"csrf_token": csrf})
    b = client.post("/partner/webhooks/987654321/delete", data={"csrf_token": csrf})
    assert a.status_code == b.status_code == 404
    strip = re.compile(r"\d+")
    assert strip.sub("N", text_of(a)) == strip.sub("N", text_of(b))
    assert snapshot(app) == before


# --------------------------------------------------------------------------- paging


def test_batches_and_deliveries_page_on(client, app, acme):
    as_staff(client, "viewer")
    acme_id, endpoint = partner_id("acme"), acme["endpoint"]["id"]
    for n in range(3):
        batches.upload(acme_id, {"points:earn"},
                       ROW.format(txn=f"p-{n}", member=acme["member"]).encode())
        earn(client, acme["headers"], acme["member"], f"hooked-{n}", points=1)
    ids = [b["id"] for b in batches.list_batches(acme_id)]
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setattr(portal, "PAGE", 2)
        first = text_of(client.get("/partner/batches"))
        assert [f"Batch {i}<" in first for i in ids] == [True, True, False]
        older = unescape(re.search(r'href="([^"]*cursor=[^"]*)"', first).group(1))
        assert "Older batches" in first
        second = text_of(client.get(older))
        assert f"Batch {ids[2]}<" in second and "Older batches" not in second

        listed = webhooks.list_deliveries(acme_id, endpoint, {})["items"]
        assert len(listed) == 4
        page = text_of(client.get(f"/partner/webhooks/{endpoint}"))
        shown = re.findall(r'<th scope="row" class="nowrap">(\d+)', page)
        assert shown == [str(d["id"]) for d in listed[:2]]
        more = unescape(re.search(r'href="([^"]*cursor=[^"]*)"', page).group(1))
        rest = re.findall(r'<th scope="row" class="nowrap">(\d+)',
                          text_of(client.get(more)))
        assert rest == [str(d["id"]) for d in listed[2:]]
    for bad in ("/partner/batches?cursor=garbage",
                f"/partner/webhooks/{endpoint}?cursor=garbage"):
        answer = client.get(bad)
        assert answer.status_code == 422 and 'role="alert"' in text_of(answer), bad


def test_the_service_checks_the_partner_as_well(app, make_partner):
    """The status is the service's to set; anything but active or suspended is refused."""
    make_partner("acme")
    with pytest.raises(Exception) as refused:
        service.set_status("acme", "closed")
    assert getattr(refused.value, "code", None) == "invalid_request"


# --------------------------------------------------------------------------- a real browser


def test_staff_webhooks_and_the_audit_trail_in_a_real_browser(chromium, backend, live_server,
                                                              acme):
    """An admin creates an account, registers an endpoint and reads the trail, on a
    desktop and on a phone, from the keyboard where a form is sent."""
    staff_account()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/partner/signin")
        page.get_by_label("Login").fill("lena@acme.example")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/partner")

        page.get_by_role("link", name="Staff").click()
        page.wait_for_url("**/partner/staff")
        page.get_by_label("Login (an e-mail address will do)").fill("max@acme.example")
        page.get_by_label("Name").fill("Max Operator")
        page.get_by_label("Role", exact=True).select_option("operator")
        page.get_by_role("button", name="Create the account").click()
        page.wait_for_load_state()
        code = page.get_by_test_id("activation-code").inner_text()
        assert re.fullmatch(r"[2-9A-Z]{5}-[2-9A-Z]{5}", code)
        assert page.get_by_test_id("staff").locator("tbody tr").count() == 2
        page.screenshot(path=str(ARTIFACTS / f"partner-staff-desktop-{backend}.png"),
                        full_page=True)

        page.get_by_role("link", name="Webhooks").click()
        page.get_by_label("HTTPS URL").fill("https://hooks.example/coalition")
        page.get_by_label("transaction.reversed").check()
        page.get_by_label("HTTPS URL").press("Enter")
        page.wait_for_load_state()
        assert page.get_by_test_id("secret").inner_text().startswith("whsec_")
        assert page.get_by_test_id("endpoints").locator("tbody tr").count() == 2
        page.screenshot(path=str(ARTIFACTS / f"partner-webhooks-desktop-{backend}.png"),
                        full_page=True)

        page.get_by_role("link", name="Audit trail").click()
        page.wait_for_url("**/partner/audit")
        trail_rows = page.get_by_test_id("audit").locator("tbody tr")
        assert trail_rows.count() == 3  # lena's account, max's, the endpoint
        assert "webhook_endpoint.created" in trail_rows.first.inner_text()
        assert page.get_by_test_id("actor").first.inner_text() == "lena@acme.example"
        page.screenshot(path=str(ARTIFACTS / f"partner-audit-desktop-{backend}.png"),
                        full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        for name, path in (("staff", "/partner/staff"), ("webhooks", "/partner/webhooks"),
                           ("audit", "/partner/audit")):
            page.goto(f"{live_server.url}{path}")
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= 390, (path, overflow)
            unlabelled = page.evaluate("""() => [...document.querySelectorAll(
                'input:not([type=hidden]), select, textarea')]
                .filter(el => el.labels.length === 0).map(el => el.name)""")
            assert unlabelled == [], path
            page.screenshot(path=str(ARTIFACTS / f"partner-{name}-phone-{backend}.png"),
                            full_page=True)
    finally:
        context.close()
