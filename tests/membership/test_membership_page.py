"""The member page's "Membership": plans, buy with points, auto-renew, cancel, the current
period; signed in the way the member page is. Last, a real headless Chromium does it the
way a member would, on a desktop and on a phone."""

from __future__ import annotations

import re

import pytest
import requests

from tests.conftest import ARTIFACTS, snapshot
from tests.factories.members import active_member, csrf_of
from tests.factories.partner_api import earn, publish
from tests.membership.test_membership import PLANS, rows


@pytest.fixture
def ada(client, operator_headers, make_partner):
    _, northwind = make_partner("northwind", name="Northwind Grocers")
    publish(client, operator_headers, memberships=PLANS,
            tiers=[{"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"}])
    member = active_member(client, northwind, ref="ada", name="Ada Lovelace")
    earn(client, northwind, member.member_number, "n1", points=1250)
    return member


def sign_in(base_url: str, member_number: str, password: str) -> requests.Session:
    browser = requests.Session()
    form = browser.get(f"{base_url}/member/signin", timeout=10)
    home = browser.post(form.url, data={"csrf_token": csrf_of(form.text),
                                        "member_number": member_number,
                                        "password": password}, timeout=10)
    assert home.status_code == 200 and home.url.endswith("/member")
    return browser


def test_the_page_needs_a_signed_in_member(live_server, ada):
    answer = requests.get(f"{live_server.url}/member/membership", allow_redirects=False,
                          timeout=10)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/member/signin")
    posted = requests.post(f"{live_server.url}/member/membership/buy",
                           data={"plan": "club"}, allow_redirects=False, timeout=10)
    assert posted.status_code == 302 and rows(ada.member_number) == []


def test_bad_forms_change_nothing(app, live_server, ada):
    browser = sign_in(live_server.url, ada.member_number, ada.password)
    page = browser.get(f"{live_server.url}/member/membership", timeout=10)
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    before = snapshot(app)
    no_csrf = browser.post(f"{live_server.url}/member/membership/buy",
                           data={"plan": "club"}, timeout=10)
    assert no_csrf.status_code == 400
    no_plan = browser.post(f"{live_server.url}/member/membership/buy",
                           data={"csrf_token": csrf, "auto_renew": "maybe"}, timeout=10)
    assert no_plan.status_code == 422 and "Choose a plan." in no_plan.text
    unknown = browser.post(f"{live_server.url}/member/membership/buy",
                           data={"csrf_token": csrf, "plan": "gold"}, timeout=10)
    assert "The membership was not bought: No membership plan" in unknown.text
    money_only = browser.post(f"{live_server.url}/member/membership/buy",
                              data={"csrf_token": csrf, "plan": "vip"}, timeout=10)
    assert "sold for money, at a partner" in money_only.text
    unconfirmed = browser.post(f"{live_server.url}/member/membership/cancel",
                               data={"csrf_token": csrf}, timeout=10)
    assert unconfirmed.status_code == 422 and "Tick the box" in unconfirmed.text
    nothing = browser.post(f"{live_server.url}/member/membership/cancel",
                           data={"csrf_token": csrf, "confirm": "yes"}, timeout=10)
    assert "You hold no membership in force" in nothing.text
    assert snapshot(app) == before


def test_buy_the_same_form_twice_buys_once(live_server, ada):
    browser = sign_in(live_server.url, ada.member_number, ada.password)
    page = browser.get(f"{live_server.url}/member/membership", timeout=10)
    form = {"csrf_token": csrf_of(page.text), "plan": "club", "auto_renew": "yes",
            "idempotency_key": re.search(r'name="idempotency_key" value="([^"]+)"',
                                         page.text).group(1)}
    first = browser.post(f"{live_server.url}/member/membership/buy", data=form, timeout=10)
    assert "You are a Club member until" in first.text
    again = browser.post(f"{live_server.url}/member/membership/buy", data=form, timeout=10)
    assert "it was done once" in again.text
    assert len(rows(ada.member_number)) == 1
    assert 'data-testid="available">750<' in again.text
    home = browser.get(f"{live_server.url}/member", timeout=10)
    assert "Paid membership" in home.text  # the purchase in the member's history


def test_membership_in_a_real_browser(chromium, backend, live_server, ada):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/member")
        page.get_by_role("link", name="Sign in").click()
        page.wait_for_url("**/oauth/authorize?**")
        page.get_by_label("Member number").fill(ada.member_number)
        page.get_by_label("Password").fill(ada.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/member")
        page.get_by_role("navigation").get_by_role("link", name="Membership").click()
        page.wait_for_url(f"{live_server.url}/member/membership")
        assert page.get_by_role("heading", level=1).inner_text() == "Membership"
        assert page.get_by_test_id("current-status").inner_text() == \
            "You are not a member of a paid plan."
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0).map(el => el.name)""")
        assert unlabelled == []
        assert page.locator("h1").count() == 1
        page.screenshot(path=str(ARTIFACTS / f"membership-plans-{backend}.png"),
                        full_page=True)

        page.get_by_role("button", name="Buy Club for 500 points").click()
        page.wait_for_load_state()
        assert page.get_by_role("status").first.inner_text().startswith(
            "You are a Club member until")
        assert page.get_by_test_id("current-plan").inner_text() == "Club"
        assert page.get_by_test_id("available").inner_text() == "750"
        assert page.get_by_label("Renew with my points at the end of each period").is_checked()

        page.get_by_label("Renew with my points at the end of each period").uncheck()
        page.get_by_role("button", name="Save").click()
        page.wait_for_load_state()
        assert "unless you renew it" in page.get_by_role("status").first.inner_text()
        assert not page.get_by_label("Renew with my points at the end of each period")\
            .is_checked()
        page.screenshot(path=str(ARTIFACTS / f"membership-current-{backend}.png"),
                        full_page=True)

        page.get_by_label(re.compile("I understand the benefits end on")).check()
        page.get_by_role("button", name="Cancel membership").click()
        page.wait_for_load_state()
        assert page.get_by_test_id("current-status").inner_text().startswith(
            "Cancelled: the benefits last until")
        assert [r.status for r in rows(ada.member_number)] == ["cancelled"]

        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        page.screenshot(path=str(ARTIFACTS / f"membership-phone-{backend}.png"),
                        full_page=True)
    finally:
        context.close()
