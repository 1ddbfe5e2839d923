"""The member page's offers (``/member/offers``): the offers open to the signed-in member,
and activating an opt-in one with a CSRF-protected form; then in a real headless Chromium,
on a desktop and a phone."""

from __future__ import annotations

from datetime import timedelta

import requests

from tests.coalition.test_member_page import sign_in
from tests.conftest import ARTIFACTS
from tests.factories.members import active_member, csrf_of
from tests.factories.partner_api import earn, post_ok, publish


def _offers(client, operator_headers, make_partner, clock):
    publish(client, operator_headers)
    northwind = make_partner("northwind", name="Northwind Grocers")[1]
    window = {"valid_from": (clock() - timedelta(days=1)).isoformat(),
              "valid_to": (clock() + timedelta(days=20)).isoformat()}
    double = post_ok(client, "/v1/offers", northwind, {
        "name": "Double points weekend", "rule": "multiplier", "multiplier": "2",
        "opt_in": False, "cap_points": 10000, **window})
    coupon = post_ok(client, "/v1/offers", northwind, {
        "name": "50 more on every shop", "rule": "bonus", "bonus_points": 50,
        "opt_in": True, "cap_points": 10000, **window})
    member = active_member(client, northwind, ref="ada", name="Ada Lovelace")
    return northwind, member, double, coupon


def test_a_member_sees_and_activates_offers(app, live_server, client, operator_headers,
                                            make_partner, clock):
    northwind, member, double, coupon = _offers(client, operator_headers, make_partner,
                                                clock)
    anonymous = requests.get(f"{live_server.url}/member/offers", allow_redirects=False,
                             timeout=10)
    assert anonymous.status_code == 302 and "/member/signin" in anonymous.headers["Location"]
    browser, _ = sign_in(live_server.url, member.member_number, member.password)
    page = browser.get(f"{live_server.url}/member/offers", timeout=10)
    assert page.status_code == 200
    assert "Double points weekend" in page.text and "50 more on every shop" in page.text
    assert "Activate this offer" in page.text
    # no form without its token
    refused = browser.post(f"{live_server.url}/member/offers/{coupon['id']}/activate",
                           data={}, timeout=10)
    assert refused.status_code == 400
    done = browser.post(f"{live_server.url}/member/offers/{coupon['id']}/activate",
                        data={"csrf_token": csrf_of(page.text)}, timeout=10)
    assert done.status_code == 200 and "is active" in done.text
    assert f'data-testid="offer-{coupon["id"]}-active"' in done.text
    # activating what needs no activation says so and changes nothing
    again = browser.post(f"{live_server.url}/member/offers/{double['id']}/activate",
                         data={"csrf_token": csrf_of(page.text)}, timeout=10)
    assert "was not activated" in again.text
    answer = earn(client, northwind, member.member_number, "n1",
                  spend={"amount": "10", "currency": "GBP"})
    assert [line["points"] for line in answer["lines"]] == [10, 10, 50]


def test_offers_in_a_real_browser(chromium, backend, live_server, client, operator_headers,
                                  make_partner, clock):
    _, member, _, coupon = _offers(client, operator_headers, make_partner, clock)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/member/signin")
        page.get_by_label("Member number").fill(member.member_number)
        page.get_by_label("Password").fill(member.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/member")
        page.get_by_role("navigation").get_by_role("link", name="Offers").click()
        page.wait_for_url(f"{live_server.url}/member/offers")
        assert page.get_by_role("heading", level=1).inner_text() == "Offers"
        assert page.locator("h1").count() == 1
        for landmark in ("banner", "navigation", "main", "contentinfo"):
            assert page.get_by_role(landmark).count() >= 1, landmark
        current = page.get_by_role("navigation").locator("[aria-current=page]")
        assert current.inner_text() == "Offers"
        page.screenshot(path=str(ARTIFACTS / f"member-offers-desktop-{backend}.png"),
                        full_page=True)
        page.get_by_role("button", name="Activate this offer").click()
        page.wait_for_load_state()
        assert "is active" in page.get_by_role("status").first.inner_text()
        assert page.get_by_test_id(f"offer-{coupon['id']}-active").is_visible()
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        page.screenshot(path=str(ARTIFACTS / f"member-offers-phone-{backend}.png"),
                        full_page=True)
    finally:
        context.close()
