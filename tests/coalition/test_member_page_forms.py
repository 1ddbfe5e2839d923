"""The member page's forms: every field goes through one strict parser
(:mod:`coalition.member.forms`), so that odd input (``²``, ``١``, ``" 5"``, ``"5.0"``, a
number of 400 digits, nothing at all) is answered 422 with the field's message and changes
nothing, never 500; and what a transfer shows the receiver on the page."""

from __future__ import annotations

import base64
import re
from html import unescape

import requests
from sqlalchemy import select

from coalition.db import read
from coalition.ledger.models import MemberConsent
from coalition.models import Partner
from tests.coalition.test_member_page import coalition, figure, sign_in  # noqa: F401
from tests.conftest import snapshot
from tests.factories.members import csrf_of, enrol

BAD_POINTS = ["²", "١", "١٠", " 5", "5 ", "5.0", "1,000", "1e3", "-5", "+5", "0", "00",
              "9" * 400, str(2**53), "", "٥"]


def _post(browser: requests.Session, url: str, data: dict[str, str]) -> requests.Response:
    return browser.post(url, data=data, allow_redirects=False, timeout=10)


def test_points_fields_are_parsed_strictly(app, live_server, coalition):  # noqa: F811
    member, friend = coalition["member"], coalition["friend"]
    browser, home = sign_in(live_server.url, member.member_number)
    csrf = csrf_of(home.text)
    before = snapshot(app)
    for value in BAD_POINTS:
        sent = _post(browser, f"{live_server.url}/member/transfer", {
            "csrf_token": csrf, "to_member_number": friend.member_number, "points": value,
            "idempotency_key": "t-key"})
        assert sent.status_code == 422, (value, sent.status_code)
        assert ("Enter a whole number of points in digits" in sent.text
                or "Enter between 1 and" in sent.text
                or "Enter a number of points." in sent.text), value
        assert figure(sent.text, "available") == "1,250"
        donated = _post(browser, f"{live_server.url}/member/donate", {
            "csrf_token": csrf, "partner": "greenhearts", "points": value,
            "idempotency_key": "d-key"})
        assert donated.status_code == 422, (value, donated.status_code)
    # a field left out altogether
    missing = _post(browser, f"{live_server.url}/member/transfer", {
        "csrf_token": csrf, "to_member_number": friend.member_number})
    assert missing.status_code == 422 and "Enter a number of points." in missing.text
    assert snapshot(app) == before


def test_every_other_field_is_parsed_strictly(app, live_server, coalition):  # noqa: F811
    member, friend = coalition["member"], coalition["friend"]
    browser, home = sign_in(live_server.url, member.member_number)
    csrf = csrf_of(home.text)
    good = {"csrf_token": csrf, "to_member_number": friend.member_number, "points": "20",
            "idempotency_key": "t-key"}
    arabic = friend.member_number.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    before = snapshot(app)
    for change, message in [
        ({"to_member_number": arabic}, "is not a valid member number"),
        ({"to_member_number": "²" * 12}, "is not a valid member number"),
        ({"to_member_number": ""}, "Enter the member number."),
        ({"idempotency_key": "has space"}, "This form is damaged"),
        ({"idempotency_key": "k" * 51}, "This form is damaged"),
        ({"idempotency_key": "t-key\n"}, "This form is damaged"),
        ({"share_name": "maybe"}, "Not a valid choice."),
    ]:
        answer = _post(browser, f"{live_server.url}/member/transfer", {**good, **change})
        assert answer.status_code == 422, change
        assert message in answer.text, change
    no_charity = _post(browser, f"{live_server.url}/member/donate", {
        "csrf_token": csrf, "points": "5"})
    assert no_charity.status_code == 422 and "Choose a charity." in no_charity.text
    for confirm in (None, "", "YES", "١"):
        data = {"csrf_token": csrf, **({"confirm": confirm} if confirm is not None else {})}
        unconfirmed = _post(browser, f"{live_server.url}/member/close", data)
        assert unconfirmed.status_code == 422, confirm
        assert "Tick the box" in unconfirmed.text
    assert snapshot(app) == before


def test_activation_form_is_parsed_strictly(app, live_server, client, coalition):  # noqa: F811
    newcomer = enrol(client, coalition["northwind"], "carol")
    browser = requests.Session()
    page = browser.get(f"{live_server.url}/member/activate", timeout=10)
    base = {"csrf_token": csrf_of(page.text), "member_number": newcomer.member_number,
            "activation_code": newcomer.activation_code, "password": "a long password",
            "password_again": "a long password"}
    before = snapshot(app)
    for change, message in [
        ({"member_number": "²" * 12}, "is not a valid member number"),
        ({"member_number": ""}, "Enter the member number."),
        ({"activation_code": ""}, "Enter the activation code you were given."),
        ({"password": "short", "password_again": "short"}, "Choose a password of 10"),
        ({"password_again": "other"}, "The two passwords differ."),
    ]:
        answer = browser.post(page.url, data={**base, **change}, timeout=10)
        assert answer.status_code == 422, change
        assert message in answer.text, change
    assert snapshot(app) == before
    done = browser.post(page.url, data=base, timeout=10)
    assert done.status_code == 200 and "Your account is active." in done.text


def test_a_transfer_on_the_page_names_the_sender_only_if_asked(live_server, coalition):  # noqa: F811
    member, friend = coalition["member"], coalition["friend"]
    browser, home = sign_in(live_server.url, member.member_number)
    assert 'name="share_name"' in home.text
    csrf = csrf_of(home.text)
    for key, share, shown in (("k-anonymous", {}, 'from "a member"'),
                              ("k-named", {"share_name": "yes"}, "your first name")):
        form = {"csrf_token": csrf, "to_member_number": friend.member_number, "points": "10",
                "idempotency_key": key, **share}
        # the page first asks, saying what the receiver will see
        asked = browser.post(f"{live_server.url}/member/transfer", data=form, timeout=10)
        assert asked.status_code == 200 and shown in unescape(asked.text)
        sent = browser.post(f"{live_server.url}/member/transfer",
                            data={**form, "confirmed": "yes"}, timeout=10)
        assert sent.status_code == 200 and "You sent 10 points" in sent.text
    # the sender's page says to whom
    assert f"to {friend.member_number}" in sent.text
    _, friends_page = sign_in(live_server.url, friend.member_number)
    history = re.search(r'data-testid="history">(.*?)</table>', friends_page.text, re.S)
    assert history is not None
    rows = history.group(1)
    assert "Transfer · from Ada" in rows and "Transfer · from a member" in rows
    assert member.member_number not in friends_page.text
    assert "k-anonymous" not in friends_page.text and "k-named" not in friends_page.text


def test_consent_control_on_the_page(app, live_server, coalition):  # noqa: F811
    member = coalition["member"]
    browser, home = sign_in(live_server.url, member.member_number)
    assert 'data-testid="consents"' in home.text and "Skyline Fuel" in home.text
    csrf = csrf_of(home.text)
    before = snapshot(app)
    for share in ("١", "true", "YES"):
        refused = _post(browser, f"{live_server.url}/member/consents",
                        {"csrf_token": csrf, "partner": "skyline", "share": share})
        assert refused.status_code == 422 and "Not a valid choice." in refused.text
    empty = _post(browser, f"{live_server.url}/member/consents",
                  {"csrf_token": csrf, "share": "yes"})
    assert empty.status_code == 422 and "Choose a partner." in empty.text
    unknown = browser.post(f"{live_server.url}/member/consents", data={
        "csrf_token": csrf, "partner": "nosuch", "share": "yes"}, timeout=10)
    assert "Your choice was not saved" in unknown.text
    assert snapshot(app) == before

    given = browser.post(f"{live_server.url}/member/consents", data={
        "csrf_token": csrf, "partner": "skyline", "share": "yes"}, timeout=10)
    assert "Skyline Fuel now sees your name, e-mail and birth date." in given.text
    with read() as session:
        assert session.scalars(select(Partner.code).join(
            MemberConsent, MemberConsent.partner_id == Partner.id)).all() == ["skyline"]
    withdrawn = browser.post(f"{live_server.url}/member/consents", data={
        "csrf_token": csrf, "partner": "skyline", "share": "no"}, timeout=10)
    assert "Skyline Fuel no longer sees your personal details" in withdrawn.text
    with read() as session:
        assert session.scalars(select(MemberConsent)).all() == []


def test_a_history_cursor_with_odd_digits_is_refused(live_server, coalition):  # noqa: F811
    browser, _ = sign_in(live_server.url, coalition["member"].member_number)
    for text in ("e²", "e١", "e 5", "e" + "9" * 400):
        cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        page = browser.get(f"{live_server.url}/member", params={"cursor": cursor}, timeout=10)
        assert page.status_code == 422, (text, page.status_code)
