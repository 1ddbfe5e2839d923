"""The portal's "Claims": a partner's staff see members' missing-points claims at their
partner, confirm them (the earn is booked once) or refuse them with a reason."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from coalition import clock
from coalition.claims.models import Claim
from coalition.db import read
from coalition.schemas import rfc3339
from tests.conftest import ARTIFACTS, snapshot
from tests.factories.member_records import member_token
from tests.factories.members import csrf_of
from tests.factories.partner_api import balance, enrol, publish
from tests.partners.test_portal import PASSWORD, sign_in, staff_account, text_of


def open_claim(client: FlaskClient, number: str, receipt: str, amount: str = "42.50",
               partner: str = "acme") -> int:
    response = client.post("/v1/me/claims", headers=member_token(number), json={
        "partner": partner, "receipt": receipt,
        "spend": {"amount": amount, "currency": "GBP"},
        "occurred_at": rfc3339(clock.utcnow() - timedelta(days=3))})
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


@pytest.fixture
def claims(client: FlaskClient, make_partner: Any, operator_headers: dict[str, str]
           ) -> dict[str, Any]:
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    make_partner("bravo")
    member = enrol(client, headers, "ann")
    return {"headers": headers, "member": member,
            "first": open_claim(client, member, "R-100"),
            "second": open_claim(client, member, "R-200", "19.99"),
            "bravo": open_claim(client, member, "B-1", partner="bravo")}


def status_of(claim_id: int) -> str:
    with read() as session:
        return session.scalar(select(Claim.status).where(Claim.id == claim_id)) or ""


def test_the_claims_page_needs_a_signed_in_person(client, claims):
    answer = client.get("/partner/claims")
    assert answer.status_code == 302 and "/partner/signin" in answer.headers["Location"]
    before = snapshot(client.application)
    answer = client.post(f"/partner/claims/{claims['first']}/confirm", data={})
    assert answer.status_code == 302 and "/partner/signin" in answer.headers["Location"]
    assert snapshot(client.application) == before


def test_staff_see_their_open_claims_and_confirm_one(client, claims):
    staff_account()
    sign_in(client)
    page = client.get("/partner/claims")
    html = text_of(page)
    assert page.status_code == 200
    assert "Claim " + str(claims["first"]) in html and "R-200" in html
    assert "B-1" not in html  # bravo's claim
    answered = client.post(f"/partner/claims/{claims['first']}/confirm",
                           data={"csrf_token": csrf_of(html)}, follow_redirects=True)
    assert "42 points booked for member" in text_of(answered)
    assert status_of(claims["first"]) == "confirmed"
    assert balance(client, claims["headers"], claims["member"])["available"] == 42
    again = client.post(f"/partner/claims/{claims['first']}/confirm",
                        data={"csrf_token": csrf_of(html)}, follow_redirects=True)
    assert "was confirmed already" in text_of(again)
    assert balance(client, claims["headers"], claims["member"])["available"] == 42
    with read() as session:
        assert session.scalar(select(Claim.answered_by).where(
            Claim.id == claims["first"])) == "lena@acme.example"
    confirmed = text_of(client.get("/partner/claims?status=confirmed"))
    assert "transaction " in confirmed and "R-100" in confirmed


def test_refusing_needs_a_reason_and_the_form_token(client, claims):
    staff_account()
    sign_in(client)
    html = text_of(client.get("/partner/claims"))
    token = csrf_of(html)
    before = snapshot(client.application)
    no_token = client.post(f"/partner/claims/{claims['second']}/refuse",
                           data={"reason": "No such sale."})
    assert no_token.status_code == 400
    no_reason = client.post(f"/partner/claims/{claims['second']}/refuse",
                            data={"csrf_token": token, "reason": "  "})
    assert no_reason.status_code == 422 and "Say why" in text_of(no_reason)
    assert 'aria-invalid="true"' in text_of(no_reason)
    theirs = client.post(f"/partner/claims/{claims['bravo']}/refuse",
                         data={"csrf_token": token, "reason": "x"})
    assert theirs.status_code == 404
    assert snapshot(client.application) == before
    refused = client.post(f"/partner/claims/{claims['second']}/refuse",
                          data={"csrf_token": token, "reason": "No such sale."},
                          follow_redirects=True)
    assert "the member is told why" in text_of(refused)
    assert status_of(claims["second"]) == "refused"
    final = client.post(f"/partner/claims/{claims['second']}/confirm",
                        data={"csrf_token": token}, follow_redirects=True)
    assert "the answer is final" in text_of(final)
    assert status_of(claims["second"]) == "refused"


def test_the_claims_page_is_accessible_markup(client, claims):
    staff_account()
    sign_in(client)
    for path in ("/partner/claims", "/partner/claims?status=all"):
        answer = client.get(path)
        html = text_of(answer)
        assert html.count("<h1") == 1 and "<main" in html
        for control in re.findall(r'<(?:input|select|textarea)\b[^>]*>', html):
            if 'type="hidden"' in control:
                continue
            ident = re.search(r'id="([^"]+)"', control).group(1)
            assert f'<label for="{ident}">' in html, (path, control)
        for form in re.findall(r'<form method="post".*?</form>', html, re.S):
            assert 'name="csrf_token"' in form, path
        assert "style=" not in html and "<script" not in html
        assert 'aria-current="page">Claims<' in html


def test_claims_in_a_real_browser(chromium, backend, live_server, claims):
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
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Claims").click()
        page.wait_for_url(f"{live_server.url}/partner/claims")
        assert page.get_by_test_id("claims").locator("tbody tr").count() == 2
        page.screenshot(path=str(ARTIFACTS / f"partner-claims-desktop-{backend}.png"),
                        full_page=True)
        page.get_by_label(f"Reason to refuse claim {claims['second']}").fill(
            "No sale with this receipt on that day.")
        page.get_by_role("button", name=f"Refuse claim {claims['second']}").click()
        page.wait_for_load_state()
        assert "the member is told why" in page.get_by_role("status").first.inner_text()
        page.get_by_role("button", name=f"Confirm claim {claims['first']}").click()
        page.wait_for_load_state()
        assert "42 points booked" in page.get_by_role("status").first.inner_text()
        assert page.get_by_text("No open claims.").is_visible()
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_server.url}/partner/claims?status=all")
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        page.screenshot(path=str(ARTIFACTS / f"partner-claims-phone-{backend}.png"),
                        full_page=True)
    finally:
        context.close()
