"""The member page's catalog and vouchers: browse, redeem after a confirm step, the
voucher's QR code; in a real browser too, with screenshots."""

from __future__ import annotations

import re
from html import unescape

import segno

from tests.coalition.test_member_page import coalition, figure, sign_in  # noqa: F401
from tests.conftest import ARTIFACTS, snapshot
from tests.factories.members import csrf_of

TICKET = {"name": "Cinema ticket", "description": "One 2D screening", "kind": "voucher",
          "points": 400, "stock": 20, "terms": "Not valid on Saturdays."}


def publish_rewards(client, headers) -> dict[str, int]:
    ids = {}
    for body in (TICKET, {**TICKET, "name": "Weekend away", "points": 90_000, "stock": 2,
                          "terms": ""}):
        response = client.post("/v1/rewards", json=body, headers=headers)
        assert response.status_code == 201, response.get_json()
        ids[body["name"]] = response.get_json()["id"]
    return ids


def test_a_member_redeems_on_the_page_after_confirming(app, client, live_server,
                                                       coalition):  # noqa: F811
    ids = publish_rewards(client, coalition["northwind"])
    browser, home = sign_in(live_server.url, coalition["member"].member_number)
    assert 'href="/member/rewards"' in home.text
    listed = browser.get(f"{live_server.url}/member/rewards", timeout=10)
    assert listed.status_code == 200
    assert "Cinema ticket" in listed.text and "You need 88,750 more points." in listed.text
    csrf = csrf_of(listed.text)
    before = snapshot(app)
    asked = browser.post(f"{live_server.url}/member/rewards/redeem",
                         data={"csrf_token": csrf, "reward_id": str(ids["Cinema ticket"])},
                         timeout=10)
    assert asked.status_code == 200
    assert "Redeem Cinema ticket?" in unescape(asked.text)
    assert "Not valid on Saturdays." in asked.text
    # asking changes nothing; nor does a damaged or forged form
    for data in ({"csrf_token": csrf, "reward_id": "١"},
                 {"csrf_token": csrf, "reward_id": "", "confirmed": "yes"},
                 {"csrf_token": csrf, "reward_id": str(ids["Weekend away"]),
                  "confirmed": "yes", "idempotency_key": "k-1"},
                 {"reward_id": str(ids["Cinema ticket"]), "confirmed": "yes"}):
        browser.post(f"{live_server.url}/member/rewards/redeem", data=data, timeout=10)
    assert snapshot(app) == before
    key = re.search(r'name="idempotency_key" value="([^"]+)"', asked.text).group(1)
    form = {"csrf_token": csrf, "reward_id": str(ids["Cinema ticket"]), "confirmed": "yes",
            "idempotency_key": key}
    done = browser.post(f"{live_server.url}/member/rewards/redeem", data=form, timeout=10)
    assert done.status_code == 200 and done.url.startswith(f"{live_server.url}/member/vouchers")
    assert "Redeemed for 400 points." in done.text
    code = "".join(figure(done.text, "code").split())
    assert re.fullmatch(r"[A-Z2-7]{24}", code)
    assert "<svg" in done.text and f"QR code of voucher {code}" in done.text
    # the QR code in the page is exactly segno's code of the voucher code
    expected = segno.make(code, error="m").svg_inline(
        scale=5, border=2, dark="#000", light="#fff", omitsize=True,
        title=f"QR code of voucher {code}")
    assert expected in done.text
    again = browser.post(f"{live_server.url}/member/rewards/redeem", data=form, timeout=10)
    assert "it was done once" in again.text
    assert again.text.count('data-testid="code"') == 1
    assert figure(browser.get(f"{live_server.url}/member", timeout=10).text,
                  "available") == "850"


def test_the_catalog_pages_need_a_signed_in_member(client):
    for path in ("/member/rewards", "/member/vouchers"):
        answer = client.get(path)
        assert answer.status_code == 302 and "/member/signin" in answer.headers["Location"]
    assert client.post("/member/rewards/redeem", data={"reward_id": "1"}).status_code in \
        (302, 400)


def test_rewards_and_vouchers_in_a_real_browser(chromium, backend, live_server, client,
                                                coalition):  # noqa: F811
    ids = publish_rewards(client, coalition["northwind"])
    member = coalition["member"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/member/signin")
        page.get_by_label("Member number").fill(member.member_number)
        page.get_by_label("Password").fill(member.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/member")
        page.get_by_role("navigation").get_by_role("link", name="Rewards").click()
        page.wait_for_url(f"{live_server.url}/member/rewards")
        assert page.get_by_role("heading", level=1).inner_text() == "Rewards"
        assert page.locator("h1").count() == 1
        page.screenshot(path=str(ARTIFACTS / f"member-rewards-{backend}.png"), full_page=True)
        card = page.get_by_test_id(f"reward-{ids['Cinema ticket']}")
        card.get_by_role("button", name="Redeem").click()
        page.wait_for_load_state()
        assert page.get_by_test_id("cost").inner_text() == "It costs 400 points; you have 1,250."
        page.screenshot(path=str(ARTIFACTS / f"member-redeem-confirm-{backend}.png"))
        page.get_by_role("button", name="Confirm and redeem").click()
        page.wait_for_load_state()
        assert page.get_by_role("status").first.inner_text().startswith("Redeemed for 400")
        assert page.get_by_test_id("status").first.inner_text() == "Ready to use"
        assert page.locator("figure.qr svg title").first.text_content().startswith(
            "QR code of voucher ")
        page.screenshot(path=str(ARTIFACTS / f"member-vouchers-desktop-{backend}.png"),
                        full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        for path in ("/member/vouchers", "/member/rewards"):
            page.goto(f"{live_server.url}{path}")
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= 390, (path, overflow)
        page.goto(f"{live_server.url}/member/vouchers")
        page.screenshot(path=str(ARTIFACTS / f"member-vouchers-phone-{backend}.png"),
                        full_page=True)
    finally:
        context.close()


def test_the_terms_page_says_how_long_a_voucher_lasts_and_what_happens_after(
        client, operator_headers):
    from tests.factories.partner_api import publish

    publish(client, operator_headers, vouchers={"valid_days": 30, "unused": "forfeit"})
    html = unescape(client.get("/member/terms").get_data(as_text=True))
    assert "can be used for 30 days after you redeem it" in html
    assert "its points are lost" in html
