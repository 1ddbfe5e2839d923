"""The member page at ``/member``: it signs the member in through the real
authorization-code flow with PKCE (as a public client of this server), shows the balance,
expiring points, tier and history, sends and donates points, closes the account, and signs
out by revoking its tokens. Last, a real headless Chromium does it the way a member would.
"""

from __future__ import annotations

import copy
import re

import pytest
import requests
from sqlalchemy import select

from coalition.db import read
from coalition.ledger.models import Member
from coalition.oauth.models import OAuthClient, OAuthToken
from tests.conftest import ARTIFACTS, snapshot
from tests.factories.members import PASSWORD, active_member, csrf_of, enrol
from tests.factories.partner_api import balance, earn, hold, luhn_ok, post_ok

RULES = {
    "pending_days": 0,
    "expiry": {"policy": "fixed", "months": 12},
    "tiers": [
        {"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
        {"code": "silver", "name": "Silver", "threshold": 5000, "multiplier": "1.25"},
    ],
    "bonuses": {"welcome": 50, "birthday": 0},
    "transfers": {"enabled": True, "min_points": 10, "max_points": 5000,
                  "max_points_per_day": 10000},
    "terms": "Earn at every partner, spend at any.",
}


@pytest.fixture
def coalition(client, operator_headers, make_partner):
    """Two merchants, a charity, published rules, a member with 1,250 points and a
    friend to send points to."""
    from decimal import Decimal

    northwind = make_partner("northwind", name="Northwind Grocers")[1]
    make_partner("skyline", name="Skyline Fuel")
    make_partner("greenhearts", name="Green Hearts Trust", kind="charity",
                 earn_rate=Decimal("0"))
    response = client.put("/v1/admin/program", json=copy.deepcopy(RULES),
                          headers=operator_headers)
    assert response.status_code == 200, response.get_json()
    member = active_member(client, northwind, ref="ada", name="Ada Lovelace")
    # an earn from a spend: it also makes the welcome bonus spendable
    earn(client, northwind, member.member_number, "n1",
         spend={"amount": "1200.00", "currency": "GBP"})
    friend = active_member(client, northwind, ref="bob", name="Bob Babbage")
    return {"member": member, "friend": friend, "northwind": northwind}


def sign_in(base_url: str, member_number: str, password: str = PASSWORD
            ) -> tuple[requests.Session, requests.Response]:
    """Like a browser: start at the page, fill in the form, follow the redirects home."""
    browser = requests.Session()
    form = browser.get(f"{base_url}/member/signin", timeout=10)
    assert form.status_code == 200 and "/oauth/authorize?" in form.url
    home = browser.post(form.url, data={"csrf_token": csrf_of(form.text),
                                        "member_number": member_number,
                                        "password": password}, timeout=10)
    return browser, home


def member_id(number: str) -> int:
    with read() as session:
        return session.scalar(select(Member.id).where(Member.member_number == number))


def live_tokens(number: str) -> list[OAuthToken]:
    with read() as session:
        return list(session.scalars(select(OAuthToken).where(
            OAuthToken.member_id == member_id(number), OAuthToken.revoked_at.is_(None))))


def figure(html: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}">([^<]*)<', html)
    assert match, testid
    return match.group(1)


# --------------------------------------------------------------------------- the flow


def test_sign_in_uses_the_authorization_code_flow_with_pkce(app, live_server, coalition):
    member = coalition["member"]
    browser = requests.Session()
    start = browser.get(f"{live_server.url}/member/signin", allow_redirects=False, timeout=10)
    assert start.status_code == 302
    location = start.headers["Location"]
    assert location.startswith("/oauth/authorize?")
    assert "code_challenge_method=S256" in location and "code_challenge=" in location
    assert f"redirect_uri={requests.utils.quote(live_server.url, safe='')}" \
           f"%2Fmember%2Fcallback" in location
    cookie = start.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # the page registered itself as a public client for its own callback
    with read() as session:
        page_client = session.scalars(select(OAuthClient).where(
            OAuthClient.kind == "public")).one()
    assert page_client.redirect_uris == f"{live_server.url}/member/callback"
    assert page_client.secret_hash is None

    form = browser.get(f"{live_server.url}{location}", timeout=10)
    answer = browser.post(form.url, data={"csrf_token": csrf_of(form.text),
                                          "member_number": member.member_number,
                                          "password": member.password},
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith(f"{live_server.url}/member/callback?code=")
    home = browser.get(answer.headers["Location"], timeout=10)
    assert home.status_code == 200 and home.url == f"{live_server.url}/member"
    assert figure(home.text, "available") == "1,250"
    assert figure(home.text, "member-number") == member.member_number
    [token] = live_tokens(member.member_number)
    assert token.client_id == page_client.client_id and token.scope == "member"
    # the tokens are in the session, never in the page
    assert token.access_token_hash not in home.text


def test_the_page_shows_balance_expiry_tier_and_history(live_server, coalition):
    _, home = sign_in(live_server.url, coalition["member"].member_number)
    html = home.text
    assert figure(html, "available") == "1,250"
    assert figure(html, "pending") == "0" and figure(html, "held") == "0"
    assert figure(html, "expiring-30") == "0"
    assert "Tier: Blue" in html
    assert figure(html, "points-to-next") .startswith("3,800 more points to reach Silver")
    assert "Northwind Grocers" in html and "Coalition" in html
    assert "Earned · Northwind Grocers" in html and "+1,200" in html and "Bonus" in html
    assert 'data-testid="transfer-form"' in html and 'data-testid="donate-form"' in html
    assert "Green Hearts Trust" in html
    assert 'href="/v1/program"' in html
    assert home.headers["Cache-Control"] == "no-store"


def test_a_forged_callback_is_refused(live_server, coalition):
    browser = requests.Session()
    browser.get(f"{live_server.url}/member/signin", allow_redirects=False, timeout=10)
    forged = browser.get(f"{live_server.url}/member/callback?code=x&state=forged", timeout=10)
    assert forged.status_code == 400
    assert forged.headers["Content-Type"].startswith("text/html")
    assert not live_tokens(coalition["member"].member_number)


def test_wrong_password_stays_on_the_form(live_server, coalition):
    _, answer = sign_in(live_server.url, coalition["member"].member_number, "not the password")
    assert answer.status_code == 401
    assert "The member number or password is wrong." in answer.text
    assert 'aria-invalid="true"' in answer.text


def test_sign_out_revokes_the_tokens(live_server, coalition):
    number = coalition["member"].member_number
    browser, home = sign_in(live_server.url, number)
    assert live_tokens(number)
    out = browser.post(f"{live_server.url}/member/signout",
                       data={"csrf_token": csrf_of(home.text)}, timeout=10)
    assert out.status_code == 200 and "You have signed out." in out.text
    assert not live_tokens(number)
    again = browser.get(f"{live_server.url}/member", timeout=10)
    assert "Sign in" in again.text and 'data-testid="available"' not in again.text


def test_sign_out_needs_the_form_token(live_server, coalition):
    number = coalition["member"].member_number
    browser, _ = sign_in(live_server.url, number)
    forged = browser.post(f"{live_server.url}/member/signout", data={}, timeout=10)
    assert forged.status_code == 400
    assert live_tokens(number)


def test_an_expired_access_token_is_refreshed_with_rotation(app, live_server, coalition,
                                                           monkeypatch):
    number = coalition["member"].member_number
    monkeypatch.setitem(app.config, "ACCESS_TOKEN_LIFETIME", 20)  # inside the page's margin
    browser, _ = sign_in(live_server.url, number)
    [first] = live_tokens(number)
    again = browser.get(f"{live_server.url}/member", timeout=10)
    assert figure(again.text, "available") == "1,250"
    [second] = live_tokens(number)
    assert second.id != first.id
    with read() as session:
        assert session.get(OAuthToken, first.id).revoked_at is not None


def test_two_page_views_refreshing_at_once_keep_the_member_signed_in(app, live_server,
                                                                     coalition, monkeypatch):
    """Two tabs of one session hold the same refresh token: the one that refreshes second
    gets the same new pair (within the grace) rather than signing the member out."""
    number = coalition["member"].member_number
    monkeypatch.setitem(app.config, "ACCESS_TOKEN_LIFETIME", 20)  # inside the page's margin
    first_tab, _ = sign_in(live_server.url, number)
    second_tab = requests.Session()
    second_tab.cookies.update(first_tab.cookies)  # the same session, as another tab has it
    for tab in (first_tab, second_tab):
        page = tab.get(f"{live_server.url}/member", timeout=10)
        assert figure(page.text, "available") == "1,250"
    assert len(live_tokens(number)) == 1  # one new pair, both tabs on it
    for tab in (first_tab, second_tab):  # and each goes on refreshing
        page = tab.get(f"{live_server.url}/member", timeout=10)
        assert figure(page.text, "available") == "1,250"


def test_a_revoked_session_goes_back_to_sign_in(live_server, coalition):
    from coalition.db import UnitOfWork
    from coalition.oauth.member_grants import revoke_member_tokens

    number = coalition["member"].member_number
    browser, _ = sign_in(live_server.url, number)
    with UnitOfWork() as uow:
        revoke_member_tokens(uow.session, member_id(number))
        uow.commit()
    page = browser.get(f"{live_server.url}/member", timeout=10)
    assert 'data-testid="available"' not in page.text
    assert "Sign in" in page.text


# --------------------------------------------------------------------------- actions


def test_transfer_and_donate_forms(live_server, coalition):
    member, friend = coalition["member"], coalition["friend"]
    browser, home = sign_in(live_server.url, member.member_number)
    key = re.search(r'name="idempotency_key" value="([^"]+-t)"', home.text).group(1)
    form = {"csrf_token": csrf_of(home.text), "to_member_number": friend.member_number,
            "points": "200", "idempotency_key": key}
    # first the page names the recipient (masked) and asks; nothing is sent yet
    asked = browser.post(f"{live_server.url}/member/transfer", data=form, timeout=10)
    assert "Send 200 points?" in asked.text and "B** B******" in asked.text
    assert "Bob" not in asked.text
    assert f'name="idempotency_key" value="{key}"' in asked.text
    assert figure(browser.get(f"{live_server.url}/member", timeout=10).text,
                  "available") == "1,250"
    form["confirmed"] = "yes"
    sent = browser.post(f"{live_server.url}/member/transfer", data=form, timeout=10)
    assert f"You sent 200 points to member {friend.member_number}." in sent.text
    assert figure(sent.text, "available") == "1,050"
    # the same form sent twice (a double click, a resubmission) books one transfer
    twice = browser.post(f"{live_server.url}/member/transfer", data=form, timeout=10)
    assert "already sent" in twice.text and figure(twice.text, "available") == "1,050"

    too_many = browser.post(f"{live_server.url}/member/transfer", data={
        **form, "points": "9999", "idempotency_key": "other-key"}, timeout=10)
    assert "The transfer was not made" in too_many.text
    assert figure(too_many.text, "available") == "1,050"
    typo = browser.post(f"{live_server.url}/member/transfer", data={
        **form, "to_member_number": friend.member_number[:-1] + "0"
        if friend.member_number[-1] != "0" else friend.member_number[:-1] + "1",
        "idempotency_key": "k3"}, timeout=10)
    assert "not a valid member number" in typo.text

    donated = browser.post(f"{live_server.url}/member/donate", data={
        "csrf_token": form["csrf_token"], "partner": "greenhearts", "points": "50",
        "idempotency_key": "d1"}, timeout=10)
    assert "You donated 50 points." in donated.text
    assert figure(donated.text, "available") == "1,000"
    assert "Donation · Green Hearts Trust" in donated.text


def test_a_transfer_to_no_member_is_refused_before_asking(app, live_server, coalition):
    member = coalition["member"]
    browser, home = sign_in(live_server.url, member.member_number)
    nobody = "100000000008"  # a valid member number that no member has
    assert luhn_ok(nobody) and nobody != coalition["friend"].member_number
    before = snapshot(app)
    answer = browser.post(f"{live_server.url}/member/transfer", data={
        "csrf_token": csrf_of(home.text), "to_member_number": nobody, "points": "200",
        "idempotency_key": "k-nobody"}, timeout=10)
    assert f"The transfer was not made: No active member has the number {nobody}." \
        in answer.text
    assert figure(answer.text, "available") == "1,250"
    assert snapshot(app) == before


def test_holds_expiry_dates_and_times_read_as_a_person_would(client, live_server, coalition):
    number, northwind = coalition["member"].member_number, coalition["northwind"]
    first = hold(client, northwind, number, "h1", 400)
    assert first["balance_at"] == "authorisation" and first["balance"]["held"] == 400
    post_ok(client, f"/v1/holds/{first['id']}/capture", northwind,
            {"partner_txn_id": "h1c", "points": 250})
    second = hold(client, northwind, number, "h2", 100)
    voided = post_ok(client, f"/v1/holds/{second['id']}/void", northwind,
                     {"partner_txn_id": "h2v"})
    assert voided["balance_at"] == "void"
    # read later, a hold says that its balance is the member's balance now
    later = client.get(f"/v1/holds/{first['id']}", headers=northwind).get_json()
    assert later["balance_at"] == "now" and later["status"] == "captured"
    assert later["balance"] == {"available": 1000, "pending": 0, "held": 0}

    # the 1,200 earned and the 50 welcome points were booked moments apart: one date
    expiring = balance(client, northwind, number)["expiring"]
    assert [(row["points"], row["date"]) for row in expiring] == [
        (1000, expiring[0]["expires_at"][:10])]

    _, home = sign_in(live_server.url, number)
    html = home.text
    assert "Reserved 400 at Northwind Grocers" in html
    assert "Spent 250 of the reservation at Northwind Grocers, released 150" in html
    assert "Released 100 of the reservation at Northwind Grocers" in html
    dates = re.findall(r'data-testid="expiry-dates">(.*?)</ul>', html, re.S)[0]
    assert re.findall(r"<li>([\d,]+) points expire on", dates) == ["1,000"]
    history = re.findall(r'data-testid="history">(.*?)</table>', html, re.S)[0]
    times = re.findall(r"<time [^>]*>([^<]*)</time>", history)
    # bonus, its release by the first spend, earn, two holds, a capture and a void
    assert len(times) == 7 and all(re.fullmatch(r"\d{1,2} \w{3} \d{4}, \d{2}:\d{2} UTC", t)
                                   for t in times), times


def test_actions_need_a_signed_in_member(live_server, coalition):
    browser = requests.Session()
    page = browser.get(f"{live_server.url}/member", timeout=10)
    answer = browser.post(f"{live_server.url}/member/transfer", data={
        "csrf_token": csrf_of(page.text) if "csrf_token" in page.text else "",
        "to_member_number": coalition["friend"].member_number, "points": "10"},
        allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/member/signin")


def test_close_account(live_server, coalition):
    number = coalition["member"].member_number
    browser, home = sign_in(live_server.url, number)
    unconfirmed = browser.post(f"{live_server.url}/member/close",
                               data={"csrf_token": csrf_of(home.text)}, timeout=10)
    assert "Tick the box" in unconfirmed.text
    closed = browser.post(f"{live_server.url}/member/close",
                          data={"csrf_token": csrf_of(home.text), "confirm": "yes"}, timeout=10)
    assert "Your account is closed." in closed.text
    with read() as session:
        assert session.scalar(select(Member.status).where(Member.member_number == number)) \
            == "closed"
    assert not live_tokens(number)
    _, refused = sign_in(live_server.url, number)
    assert refused.status_code == 401


# --------------------------------------------------------------------------- other pages


def test_activation_page(live_server, client, coalition):
    newcomer = enrol(client, coalition["northwind"], "carol")
    browser = requests.Session()
    page = browser.get(f"{live_server.url}/member/activate", timeout=10)
    assert page.status_code == 200
    for field in ("member_number", "activation_code", "password", "password_again"):
        assert f'<label for="{field}">' in page.text
    base = {"csrf_token": csrf_of(page.text), "member_number": newcomer.member_number,
            "activation_code": newcomer.activation_code, "password": "a long password",
            "password_again": "a long password"}
    mismatch = browser.post(page.url, data={**base, "password_again": "something else"},
                            timeout=10)
    assert mismatch.status_code == 422 and "The two passwords differ." in mismatch.text
    wrong = browser.post(page.url, data={**base, "activation_code": "AAAAA-AAAAA"}, timeout=10)
    assert wrong.status_code == 422 and "activation code is wrong" in wrong.text
    done = browser.post(page.url, data=base, timeout=10)
    assert done.status_code == 200 and "Your account is active." in done.text
    _, home = sign_in(live_server.url, newcomer.member_number, "a long password")
    # the welcome bonus waits for the first earn from a spend
    assert (figure(home.text, "available"), figure(home.text, "pending")) == ("0", "50")
    assert figure(home.text, "awaiting-first-spend") == "50"


def test_terms_page_shows_no_cash_value_and_forfeiture(live_server, coalition):
    page = requests.get(f"{live_server.url}/member/terms", timeout=10)
    assert page.status_code == 200
    assert "Points have no cash value." in page.text
    assert "forfeited" in page.text
    assert "Northwind Grocers" in page.text and "Silver" in page.text
    assert "expire 12 months after they are earned" in page.text
    program = requests.get(f"{live_server.url}/v1/program", timeout=10).json()
    assert program["points_have_no_cash_value"] is True
    assert program["forfeiture"] in page.text


@pytest.mark.parametrize("path", ["/member", "/member/terms", "/member/activate"])
def test_every_page_links_the_program_terms(client, path):
    page = client.get(path)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'href="/v1/program"' in html
    assert '<html lang="en">' in html and "<main" in html and "<nav" in html
    assert 'name="viewport"' in html


def test_production_needs_the_page_client_registered(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "ENV", "production")
    answer = client.get("/member/signin")
    assert answer.status_code == 503
    assert "coalition client create --public" in answer.get_data(as_text=True)
    with read() as session:
        assert session.scalar(select(OAuthClient.id)) is None
    from coalition.oauth.clients import create_public_client

    create_public_client("Member page", ["http://localhost/member/callback"])
    assert client.get("/member/signin").status_code == 302


# --------------------------------------------------------------------------- a real browser


def test_a_member_in_a_real_browser(chromium, backend, live_server, coalition):
    member, friend = coalition["member"], coalition["friend"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/member")
        page.get_by_role("link", name="Sign in").click()
        page.wait_for_url("**/oauth/authorize?**")
        assert "code_challenge_method=S256" in page.url
        page.screenshot(path=str(ARTIFACTS / f"member-signin-{backend}.png"))
        page.get_by_label("Member number").fill(member.member_number)
        page.get_by_label("Password").fill(member.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/member")
        assert page.get_by_test_id("available").inner_text() == "1,250"
        assert page.get_by_role("heading", level=1).inner_text() == "My points"

        # accessible markup: every control labelled, one h1, the landmarks
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0).map(el => el.name)""")
        assert unlabelled == []
        assert page.locator("h1").count() == 1
        for landmark in ("banner", "navigation", "main", "contentinfo"):
            assert page.get_by_role(landmark).count() >= 1, landmark

        # signed in, there is nothing to activate
        nav = page.get_by_role("navigation")
        assert nav.get_by_role("link", name="Activate").count() == 0
        assert nav.get_by_role("link", name="Terms").count() == 1

        page.get_by_label("Their member number").fill(friend.member_number)
        page.locator("#transfer_points").fill("200")
        page.get_by_role("button", name="Send points").click()
        page.wait_for_load_state()
        assert page.get_by_test_id("recipient").inner_text() == \
            f"To member {friend.member_number}, B** B******."
        page.screenshot(path=str(ARTIFACTS / f"member-transfer-confirm-{backend}.png"))
        page.get_by_role("button", name="Confirm and send").click()
        page.wait_for_load_state()
        assert page.get_by_role("status").first.inner_text() == \
            f"You sent 200 points to member {friend.member_number}."
        assert page.get_by_test_id("available").inner_text() == "1,050"
        page.screenshot(path=str(ARTIFACTS / f"member-page-desktop-{backend}.png"),
                        full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        # nothing wider than a phone: no sideways scrolling of the page itself
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        page.screenshot(path=str(ARTIFACTS / f"member-page-phone-{backend}.png"),
                        full_page=True)

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_load_state()
        assert page.get_by_role("link", name="Sign in").is_visible()
        assert page.get_by_role("navigation").get_by_role("link", name="Activate").count() == 1
        assert not live_tokens(member.member_number)
    finally:
        context.close()
