"""The member page's "Missing points": the claim form (strictly parsed, CSRF-protected)
and the member's claims with the partners' answers; last, in a real browser."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests

from coalition import clock
from tests.coalition.test_member_page import sign_in
from tests.conftest import ARTIFACTS, snapshot
from tests.factories.members import active_member, csrf_of
from tests.factories.partner_api import publish


@pytest.fixture
def shop(client, make_partner, operator_headers) -> dict[str, Any]:
    publish(client, operator_headers)
    _, headers = make_partner("acme", name="Acme Stores")
    member = active_member(client, headers, ref="ada")
    return {"headers": headers, "member": member}


def day(days_ago: int) -> str:
    return (clock.utcnow() - timedelta(days=days_ago)).date().isoformat()


def claims_form(browser: requests.Session, url: str) -> str:
    page = browser.get(f"{url}/member/claims", timeout=10)
    assert page.status_code == 200
    return page.text


def test_the_page_needs_a_signed_in_member(client):
    answer = client.get("/member/claims")
    assert answer.status_code == 302 and "/member/signin" in answer.headers["Location"]


def test_a_member_claims_on_the_page_and_sees_the_answer(client, live_server, shop):
    browser, _ = sign_in(live_server.url, shop["member"].member_number)
    html = claims_form(browser, live_server.url)
    assert "Acme Stores (GBP)" in html and "within 30 days" in html
    sent = browser.post(f"{live_server.url}/member/claims", data={
        "csrf_token": csrf_of(html), "partner": "acme", "occurred_on": day(3),
        "amount": "42.50", "receipt": "R-77"}, timeout=10)
    assert sent.status_code == 200 and sent.url.endswith("/member/claims")
    assert "Your claim for receipt R-77 at Acme Stores is sent" in sent.text
    assert "Waiting for Acme Stores" in sent.text
    claim_id = client.get("/v1/claims", headers=shop["headers"]).get_json()["items"][0]["id"]
    client.post(f"/v1/claims/{claim_id}/refuse", json={"reason": "No such sale."},
                headers=shop["headers"])
    assert "Refused: No such sale." in claims_form(browser, live_server.url)


@pytest.mark.parametrize(("fields", "field_message"), [
    ({"amount": "4e1"}, "Enter what you spent in digits"),
    ({"amount": ""}, "Enter what you spent."),
    ({"occurred_on": "yesterday"}, "Enter the day of the purchase as YYYY-MM-DD."),
    ({"occurred_on": day(40)}, "Missing points are claimed within 30 days"),
    ({"receipt": "R 77"}, "no spaces"),
    ({"partner": "nobody"}, "No partner &#39;nobody&#39; takes missing-points claims."),
])
def test_a_bad_form_is_refused_with_the_field_and_changes_nothing(client, live_server, shop,
                                                                  fields, field_message):
    browser, _ = sign_in(live_server.url, shop["member"].member_number)
    html = claims_form(browser, live_server.url)
    before = snapshot(client.application)
    answer = browser.post(f"{live_server.url}/member/claims", data={
        "csrf_token": csrf_of(html), "partner": "acme", "occurred_on": day(3),
        "amount": "42.50", "receipt": "R-77", **fields}, timeout=10)
    assert answer.status_code == 422, answer.text
    assert field_message in answer.text and 'aria-invalid="true"' in answer.text
    assert snapshot(client.application) == before


def test_the_form_needs_its_token(client, live_server, shop):
    browser, _ = sign_in(live_server.url, shop["member"].member_number)
    claims_form(browser, live_server.url)
    before = snapshot(client.application)
    answer = browser.post(f"{live_server.url}/member/claims", data={
        "partner": "acme", "occurred_on": day(3), "amount": "4", "receipt": "R-1"},
        timeout=10)
    assert answer.status_code == 400
    assert snapshot(client.application) == before


def test_claiming_twice_says_so(client, live_server, shop):
    browser, _ = sign_in(live_server.url, shop["member"].member_number)
    for status in (200, 409):
        html = claims_form(browser, live_server.url)
        answer = browser.post(f"{live_server.url}/member/claims", data={
            "csrf_token": csrf_of(html), "partner": "acme", "occurred_on": day(3),
            "amount": "10", "receipt": "R-1"}, timeout=10)
        assert answer.status_code == status
    assert "Receipt R-1 at Acme Stores was claimed before." in answer.text


def test_missing_points_in_a_real_browser(chromium, backend, live_server, shop):
    member = shop["member"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/member/signin")
        page.get_by_label("Member number").fill(member.member_number)
        page.get_by_label("Password").fill(member.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/member")
        page.get_by_role("navigation").get_by_role("link", name="Missing points").click()
        page.wait_for_url(f"{live_server.url}/member/claims")
        assert page.get_by_role("heading", level=1).inner_text() == "Missing points"
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0).map(el => el.name)""")
        assert unlabelled == []
        page.get_by_label("Partner").select_option("acme")
        page.get_by_label("Day of the purchase").fill(day(2))
        page.get_by_label("Amount spent").fill("12,50")
        page.get_by_label("Receipt reference").fill("R-2026-0042")
        page.get_by_role("button", name="Send the claim").click()
        page.wait_for_load_state()
        assert page.get_by_label("Amount spent").get_attribute("aria-invalid") == "true"
        page.screenshot(path=str(ARTIFACTS / f"member-claims-refused-{backend}.png"),
                        full_page=True)
        page.get_by_label("Amount spent").fill("12.50")
        page.get_by_role("button", name="Send the claim").click()
        page.wait_for_url(f"{live_server.url}/member/claims")
        assert "is sent" in page.get_by_role("status").first.inner_text()
        assert page.get_by_test_id("claim-status").first.inner_text() == \
            "Waiting for Acme Stores"
        page.screenshot(path=str(ARTIFACTS / f"member-claims-desktop-{backend}.png"),
                        full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        page.screenshot(path=str(ARTIFACTS / f"member-claims-phone-{backend}.png"),
                        full_page=True)
    finally:
        context.close()
