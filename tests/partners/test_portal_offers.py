"""The partner portal's offers (``/partner/offers``): the promotions the partner funds a
share of, with the points each issued against its cap, and publishing one on its own earns
with a CSRF-protected form; a refused form says why and publishes nothing. Then in a real
headless Chromium, on a desktop and a phone."""

from __future__ import annotations

import re
from datetime import timedelta

from coalition.oauth.models import PARTNER_SCOPES
from tests.conftest import ARTIFACTS, snapshot
from tests.factories.members import csrf_of
from tests.factories.partner_api import earn, enrol, post_ok, publish
from tests.factories.tokens import partner_headers
from tests.partners.test_portal import PASSWORD, sign_in, staff_account, text_of


def _coalition(client, operator_headers, make_partner, clock) -> dict:
    publish(client, operator_headers)
    _, acme = make_partner("acme")
    make_partner("bravo")
    window = {"valid_from": (clock() - timedelta(days=1)).isoformat(),
              "valid_to": (clock() + timedelta(days=20)).isoformat()}
    own = post_ok(client, "/v1/offers", acme, {
        "name": "Double points", "rule": "multiplier", "multiplier": "2", "opt_in": False,
        "cap_points": 500, **window})
    shared = post_ok(client, "/v1/admin/offers", operator_headers, {
        "name": "Shared bonus", "rule": "bonus", "bonus_points": 5, "opt_in": True,
        "cap_points": 100, "partners": ["bravo"], "cost_share": {"acme": "0.5", "bravo": "0.5"},
        **window})
    theirs = post_ok(client, "/v1/offers", partner_headers(client, "bravo", PARTNER_SCOPES), {
        "name": "Bravo only", "rule": "bonus", "bonus_points": 5, "opt_in": False,
        "cap_points": 100, **window})
    member = enrol(client, acme, "c1")
    earn(client, acme, member, "t-1", spend={"amount": "30", "currency": "GBP"})
    return {"own": own, "shared": shared, "theirs": theirs}


def test_the_portal_lists_and_publishes_offers(client, app, operator_headers, make_partner,
                                               clock):
    offers = _coalition(client, operator_headers, make_partner, clock)
    staff_account()
    sign_in(client)
    page = client.get("/partner/offers")
    html = text_of(page)
    assert page.status_code == 200
    assert "Double points" in html and "Shared bonus" in html and "Bravo only" not in html
    assert re.search(rf'data-testid="offer-{offers["own"]["id"]}-issued">30<', html)
    assert "0.5 (shared)" in html
    for control in re.findall(r'<(?:input|select|textarea)\b[^>]*>', html):
        if 'type="hidden"' not in control:
            ident = re.search(r'id="([^"]+)"', control).group(1)
            assert f'<label for="{ident}">' in html, control
    assert html.count("<h1") == 1 and "<caption>" in html and "style=" not in html

    form = {"csrf_token": csrf_of(html), "name": "Triple Tuesday", "rule": "multiplier",
            "multiplier": "3", "valid_from": clock().date().isoformat(),
            "valid_to": (clock() + timedelta(days=7)).date().isoformat(),
            "cap_points": "2000", "opt_in": "yes"}
    before = snapshot(app)
    assert client.post("/partner/offers", data={**form, "csrf_token": ""}).status_code == 400
    refused = client.post("/partner/offers", data={**form, "multiplier": "1"})
    assert refused.status_code == 422
    assert "The promotion was not published" in text_of(refused)
    assert 'aria-invalid="true"' in text_of(refused)
    refused = client.post("/partner/offers", data={**form, "cap_points": "many"})
    assert refused.status_code == 422 and 'id="offer_cap_points_error"' in text_of(refused)
    assert snapshot(app) == before

    done = client.post("/partner/offers", data=form, follow_redirects=True)
    assert done.status_code == 200 and "“Triple Tuesday” is published" in text_of(done)
    listed = client.get("/v1/offers", headers=partner_headers(client, "acme", PARTNER_SCOPES))
    published = listed.get_json()["offers"][0]
    assert (published["name"], published["multiplier"], published["opt_in"],
            published["cost_share"]) == ("Triple Tuesday", "3", True, {"acme": "1"})
    trail = text_of(client.get("/partner/audit"))
    assert "offer.published" in trail and f"offer:{published['id']}" in trail
    assert "lena@acme.example" in trail


def test_offers_in_the_portal_in_a_real_browser(chromium, backend, live_server, client,
                                                operator_headers, make_partner, clock):
    _coalition(client, operator_headers, make_partner, clock)
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
        page.get_by_role("navigation").get_by_role("link", name="Offers").click()
        page.wait_for_url(f"{live_server.url}/partner/offers")
        assert page.get_by_role("heading", level=1).inner_text() == "Offers"
        assert page.get_by_test_id("offers").locator("tbody tr").count() == 2
        page.get_by_label("Name", exact=True).fill("Weekend bonus")
        page.get_by_label("Rule", exact=True).select_option("bonus")
        page.get_by_label("Bonus points (for a bonus rule)", exact=True).fill("25")
        page.get_by_label("From", exact=True).fill(clock().date().isoformat())
        page.get_by_label("Until (not included)", exact=True).fill(
            (clock() + timedelta(days=3)).date().isoformat())
        page.get_by_label("Cap", exact=True).fill("1000")
        page.get_by_role("button", name="Publish").click()
        page.wait_for_load_state()
        assert "is published" in page.get_by_role("status").first.inner_text()
        assert page.get_by_test_id("offers").locator("tbody tr").count() == 3
        page.screenshot(path=str(ARTIFACTS / f"partner-offers-desktop-{backend}.png"),
                        full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        page.screenshot(path=str(ARTIFACTS / f"partner-offers-phone-{backend}.png"),
                        full_page=True)
    finally:
        context.close()
