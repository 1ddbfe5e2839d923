"""The member page's inbox (``/member/inbox``, with the unread badge in the navigation) and
e-mail choices (``/member/preferences``), each form with its CSRF token; the unsubscribe
page; and a real headless Chromium going through them as a member would."""

from __future__ import annotations

import copy

import pytest
import requests

from coalition.db import UnitOfWork
from coalition.notifications import preferences, unsubscribe
from coalition.notifications.service import notify
from tests.coalition.test_member_page import RULES, member_id, sign_in
from tests.conftest import ARTIFACTS, snapshot
from tests.factories.members import active_member, csrf_of


@pytest.fixture
def ada(client, operator_headers, make_partner):
    northwind = make_partner("northwind", name="Northwind Grocers")[1]
    response = client.put("/v1/admin/program", json=copy.deepcopy(RULES),
                          headers=operator_headers)
    assert response.status_code == 200, response.get_json()
    member = active_member(client, northwind, ref="ada", name="Ada Lovelace",
                           email="ada@example.com")
    me = member_id(member.member_number)
    with UnitOfWork() as uow:
        notify(uow.session, me, "points_expiring", "expiry:2027-01-31:30",
               {"points": 250, "date": "2027-01-31", "days": 30})
        notify(uow.session, me, "tier_changed", "tier:2026-12-05:blue>silver",
               {"from": "blue", "to": "silver", "from_name": "Blue", "to_name": "Silver",
                "direction": "up"})
        uow.commit()
    return member


def test_inbox_with_unread_badge_and_mark_all_read(app, live_server, ada) -> None:
    browser, home = sign_in(live_server.url, ada.member_number)
    assert home.status_code == 200
    assert 'aria-label="2 unread"' in home.text  # the badge on the member page itself
    inbox = browser.get(f"{live_server.url}/member/inbox", timeout=10)
    assert inbox.status_code == 200
    assert "250 points expire on 31 January 2027" in inbox.text
    assert "You are now Silver" in inbox.text
    assert "2 unread" in inbox.text
    before = snapshot(app)
    forged = browser.post(f"{live_server.url}/member/inbox/read",
                          data={"up_to_id": "999"}, timeout=10)
    assert forged.status_code == 400
    assert snapshot(app) == before
    done = browser.post(f"{live_server.url}/member/inbox/read",
                        data={"csrf_token": csrf_of(inbox.text), "up_to_id": "999999"},
                        timeout=10)
    assert done.status_code == 200 and "Nothing unread" in done.text
    assert "unread</span>" not in done.text and 'aria-label="2 unread"' not in done.text


def test_email_choices_form(app, live_server, ada) -> None:
    browser, _ = sign_in(live_server.url, ada.member_number)
    form = browser.get(f"{live_server.url}/member/preferences", timeout=10)
    assert form.status_code == 200
    assert 'id="email_expiry" name="email_expiry" value="yes" checked' in form.text
    assert 'id="email_offers" name="email_offers" value="yes">' in form.text
    token = csrf_of(form.text)
    before = snapshot(app)
    assert browser.post(f"{live_server.url}/member/preferences",
                        data={"email_offers": "yes"}, timeout=10).status_code == 400
    assert browser.post(f"{live_server.url}/member/preferences",
                        data={"csrf_token": token, "email_offers": "1"},
                        timeout=10).status_code == 422
    assert snapshot(app) == before
    saved = browser.post(f"{live_server.url}/member/preferences", data={
        "csrf_token": token, "email_offers": "yes", "email_tier": "yes",
        "email_account": "yes"}, timeout=10)  # expiry left unticked: off
    assert saved.status_code == 200 and "Your e-mail choices are saved." in saved.text
    history = preferences.history(member_id(ada.member_number))
    assert sorted((h["choice"], h["granted"], h["source"]) for h in history) == [
        ("email_expiry", False, "page"), ("email_offers", True, "page")]


def test_pages_need_a_signed_in_member(live_server, ada) -> None:
    for path in ("/member/inbox", "/member/preferences"):
        answer = requests.get(f"{live_server.url}{path}", timeout=10, allow_redirects=False)
        assert answer.status_code == 302
        assert answer.headers["Location"].endswith("/member/signin")


def test_a_member_in_a_real_browser(app, chromium, backend, live_server, ada) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/member/signin")
        page.get_by_label("Member number").fill(ada.member_number)
        page.get_by_label("Password").fill(ada.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/member")
        nav = page.get_by_role("navigation")
        assert nav.get_by_test_id("inbox-link").inner_text() == "Inbox 2"
        nav.get_by_role("link", name="Inbox").click()
        page.wait_for_url("**/member/inbox")
        assert page.get_by_role("heading", level=1).inner_text() == "Inbox"
        assert page.locator("ul.inbox li").count() == 2
        page.screenshot(path=str(ARTIFACTS / f"member-inbox-{backend}.png"), full_page=True)
        page.get_by_role("button", name="Mark all read").click()
        page.wait_for_load_state()
        assert page.get_by_test_id("unread").inner_text().startswith("Nothing unread")
        assert nav.get_by_test_id("inbox-link").inner_text() == "Inbox"

        nav.get_by_role("link", name="E-mails").click()
        page.wait_for_url("**/member/preferences")
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0).map(el => el.name)""")
        assert unlabelled == []
        assert page.locator("h1").count() == 1
        offers = page.get_by_label("New offers and promotions from our partners")
        assert not offers.is_checked()
        offers.check()
        page.get_by_role("button", name="Save my choices").click()
        page.wait_for_load_state()
        assert page.get_by_role("status").first.inner_text() == "Your e-mail choices are saved."
        assert page.get_by_label("New offers and promotions from our partners").is_checked()
        page.screenshot(path=str(ARTIFACTS / f"member-email-choices-{backend}.png"),
                        full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_server.url}/member/inbox")
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        page.screenshot(path=str(ARTIFACTS / f"member-inbox-phone-{backend}.png"),
                        full_page=True)

        # the link of an e-mail, in a browser with nobody signed in
        fresh = context.browser.new_context(viewport={"width": 390, "height": 844})
        try:
            other = fresh.new_page()
            link = unsubscribe.token(member_id(ada.member_number), "email_offers")
            other.goto(f"{live_server.url}/member/unsubscribe/{link}")
            assert other.get_by_role("heading", level=1).inner_text() == "Unsubscribe"
            other.get_by_role("button", name="Unsubscribe").click()
            other.wait_for_load_state()
            assert "no more e-mails" in other.get_by_test_id("unsubscribed").inner_text()
            other.screenshot(path=str(ARTIFACTS / f"member-unsubscribed-{backend}.png"),
                             full_page=True)
        finally:
            fresh.close()
        history = preferences.history(member_id(ada.member_number))
        assert [(h["choice"], h["granted"], h["source"]) for h in history] == [
            ("email_offers", True, "page"), ("email_offers", False, "unsubscribe_link")]
    finally:
        context.close()
