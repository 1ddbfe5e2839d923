"""The partner portal's rewards and voucher lookup: staff publish, edit and restock the
rewards their partner fulfils, look a member's voucher up and mark it used; another
partner's reward or voucher is 404; every form is parsed strictly and a refusal changes
nothing. Last, a real headless Chromium clicks through it with screenshots."""

from __future__ import annotations

import re
from html import unescape

import pytest
from sqlalchemy import select

from coalition.audit.models import AuditEvent
from coalition.db import read
from coalition.models import Partner
from tests.conftest import ARTIFACTS, snapshot
from tests.factories.ledger import PRICED_FROM
from tests.factories.member_records import member_token
from tests.factories.partner_api import earn, enrol, publish
from tests.partners.test_portal import PASSWORD, sign_in, staff_account, text_of

FORM = {"name": "Cinema ticket", "description": "One 2D screening", "kind": "voucher",
        "points": "400", "stock": "50", "per_member_limit": "2", "valid_from": "",
        "valid_to": "", "terms": "Not on Saturdays.", "active": "yes"}


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def staff(client, make_partner, operator_headers):
    """acme's signed-in staff (on ``client``), and bravo with a reward of its own."""
    publish(client, operator_headers)
    _, acme = make_partner("acme", valid_from=PRICED_FROM)
    _, bravo = make_partner("bravo", valid_from=PRICED_FROM)
    theirs = client.post("/v1/rewards", headers=bravo, json={
        "name": "Bravo mug", "kind": "product", "points": 100}).get_json()
    staff_account("acme")
    home = sign_in(client)
    return {"acme": acme, "bravo": bravo, "theirs": theirs, "csrf": csrf(text_of(home))}


def test_staff_publish_edit_and_restock_a_reward(app, client, staff):
    page = client.get("/partner/rewards/new")
    assert page.status_code == 200
    done = client.post("/partner/rewards/new", data={**FORM, "csrf_token": staff["csrf"]})
    assert done.status_code == 302, text_of(done)
    listed = client.get("/partner/rewards")
    assert "Cinema ticket" in text_of(listed) and "Bravo mug" not in text_of(listed)
    (reward,) = client.get("/v1/rewards?mine=true", headers=staff["acme"]).get_json()["items"]
    assert (reward["points"], reward["stock"], reward["per_member_limit"], reward["terms"]) \
        == (400, 50, 2, "Not on Saturdays.")
    edit = client.get(f"/partner/rewards/{reward['id']}")
    assert 'value="400"' in text_of(edit)
    saved = client.post(f"/partner/rewards/{reward['id']}", data={
        **FORM, "points": "450", "stock": "", "per_member_limit": "", "valid_to": "2030-01-01",
        "csrf_token": staff["csrf"]})
    assert saved.status_code == 302, text_of(saved)
    (reward,) = client.get("/v1/rewards?mine=true", headers=staff["acme"]).get_json()["items"]
    assert (reward["points"], reward["stock"], reward["per_member_limit"],
            reward["valid_to"]) == (450, None, None, "2030-01-01T00:00:00Z")
    with app.app_context(), read() as session:
        trail = session.execute(select(
            AuditEvent.action, AuditEvent.actor_user, AuditEvent.partner_id,
            AuditEvent.details).where(AuditEvent.target == f"reward:{reward['id']}")
            .order_by(AuditEvent.id)).all()
        acme = session.scalar(select(Partner.id).where(Partner.code == "acme"))
    assert [(action, user, partner) for action, user, partner, _ in trail] == [
        ("reward.published", "lena@acme.example", acme),
        ("reward.changed", "lena@acme.example", acme)]
    assert trail[1].details == {"points": {"from": 400, "to": 450},
                                "stock": {"from": 50, "to": None},
                                "per_member_limit": {"from": 2, "to": None},
                                "valid_to": {"from": None, "to": "2030-01-01T00:00:00Z"}}
    assert "reward.changed" in text_of(client.get("/partner/audit"))


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"points": "١٠"}, "points", "Enter a whole number of points in digits"),
    ({"points": ""}, "points", "Enter a number of points."),
    ({"stock": "-1"}, "stock", "Enter a whole number in digits"),
    ({"per_member_limit": "0"}, "per_member_limit", "At least 1"),
    ({"valid_from": "2026-13-01"}, "valid_from", "Enter a date as YYYY-MM-DD"),
    ({"valid_from": "2026-05-01", "valid_to": "2026-04-01"}, "valid_to", "Must be after"),
    ({"kind": "cash"}, "kind", "Choose what kind of reward it is."),
    ({"name": ""}, "name", "Name the reward"),
    ({"active": "maybe"}, "active", "Not a valid choice."),
])
def test_a_bad_form_is_refused_with_its_field_and_changes_nothing(app, client, staff,
                                                                  change, field, message):
    before = snapshot(app)
    refused = client.post("/partner/rewards/new",
                          data={**FORM, **change, "csrf_token": staff["csrf"]})
    assert refused.status_code == 422
    html = unescape(text_of(refused))
    assert f'id="{field}-error"' in html and message in html, html
    assert snapshot(app) == before


def test_another_partners_reward_and_voucher_are_not_found(app, client, staff):
    member = enrol(client, staff["bravo"], "ann")
    earn(client, staff["bravo"], member, "e1", points=500)
    code = client.post("/v1/me/redemptions", json={"reward_id": staff["theirs"]["id"]},
                       headers=member_token(member)).get_json()["voucher_code"]
    before = snapshot(app)
    assert client.get(f"/partner/rewards/{staff['theirs']['id']}").status_code == 404
    assert client.post(f"/partner/rewards/{staff['theirs']['id']}",
                       data={**FORM, "csrf_token": staff["csrf"]}).status_code == 404
    looked = client.get(f"/partner/vouchers?code={code}")
    assert looked.status_code == 404 and "No voucher of yours" in text_of(looked)
    used = client.post("/partner/vouchers/use", data={"code": code,
                                                      "csrf_token": staff["csrf"]})
    assert used.status_code == 302
    assert client.post("/partner/rewards/new", data=FORM).status_code == 400  # no CSRF
    assert snapshot(app) == before


def test_staff_look_a_voucher_up_and_mark_it_used_once(app, client, staff):
    client.post("/partner/rewards/new", data={**FORM, "csrf_token": staff["csrf"]})
    (reward,) = client.get("/v1/rewards?mine=true", headers=staff["acme"]).get_json()["items"]
    member = enrol(client, staff["acme"], "ann")
    earn(client, staff["acme"], member, "e1", points=500)
    code = client.post("/v1/me/redemptions", json={"reward_id": reward["id"]},
                       headers=member_token(member)).get_json()["voucher_code"]
    typed = " ".join(code[i:i + 4] for i in range(0, 24, 4)).lower()
    looked = client.get("/partner/vouchers", query_string={"code": typed})
    html = text_of(looked)
    assert looked.status_code == 200 and 'data-testid="status">issued<' in html
    key = re.search(r'name="idempotency_key" value="([^"]+)"', html).group(1)
    form = {"code": code, "idempotency_key": key, "csrf_token": staff["csrf"]}
    used = client.post("/partner/vouchers/use", data=form, follow_redirects=True)
    assert "Voucher used: Cinema ticket." in text_of(used)
    assert 'data-testid="status">used<' in text_of(used)
    again = client.post("/partner/vouchers/use", data=form, follow_redirects=True)
    assert "it was done once" in text_of(again)
    other = client.post("/partner/vouchers/use", data={**form, "idempotency_key": "other"},
                        follow_redirects=True)
    assert "The voucher was not used: This voucher was used" in unescape(text_of(other))
    bad = client.get("/partner/vouchers?code=0000")
    assert bad.status_code == 422


def test_rewards_and_vouchers_in_a_real_browser(chromium, backend, live_server, client,
                                                make_partner, operator_headers):
    publish(client, operator_headers)
    _, acme = make_partner("acme", valid_from=PRICED_FROM)
    member = enrol(client, acme, "ann")
    earn(client, acme, member, "e1", points=5000)
    staff_account("acme")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/partner/rewards")
        page.wait_for_url("**/oauth/authorize?**")
        page.get_by_label("Login").fill("lena@acme.example")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/partner/rewards")
        page.get_by_role("link", name="Publish a reward").click()
        page.get_by_label("Name").fill("Cinema ticket")
        page.get_by_label("Kind").select_option("voucher")
        page.get_by_label("Price in points").fill("400")
        page.get_by_label("Stock (units in total)").fill("25")
        page.get_by_label("Your terms").fill("Not on Saturdays.")
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0).map(el => el.name)""")
        assert unlabelled == []
        page.screenshot(path=str(ARTIFACTS / f"partner-reward-form-{backend}.png"),
                        full_page=True)
        page.get_by_role("button", name="Publish").click()
        page.wait_for_url(f"{live_server.url}/partner/rewards")
        assert page.get_by_test_id("rewards").locator("tbody tr").count() == 1
        page.screenshot(path=str(ARTIFACTS / f"partner-rewards-{backend}.png"), full_page=True)

        reward_id = client.get("/v1/rewards").get_json()["items"][0]["id"]
        code = client.post("/v1/me/redemptions", json={"reward_id": reward_id},
                           headers=member_token(member)).get_json()["voucher_code"]
        page.get_by_role("navigation").get_by_role("link", name="Vouchers").click()
        page.get_by_label("Voucher code").fill(code)
        page.get_by_role("button", name="Look up").click()
        assert page.get_by_test_id("status").inner_text() == "issued"
        page.screenshot(path=str(ARTIFACTS / f"partner-voucher-lookup-{backend}.png"),
                        full_page=True)
        page.get_by_role("button", name="Mark used").click()
        page.wait_for_load_state()
        assert page.get_by_test_id("status").inner_text() == "used"
        page.set_viewport_size({"width": 390, "height": 844})
        for path in ("/partner/rewards", f"/partner/rewards/{reward_id}",
                     f"/partner/vouchers?code={code}"):
            page.goto(f"{live_server.url}{path}")
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= 390, (path, overflow)
        page.screenshot(path=str(ARTIFACTS / f"partner-voucher-phone-{backend}.png"),
                        full_page=True)
    finally:
        context.close()


def test_a_viewer_reads_rewards_and_offers_but_changes_nothing(app, client, make_partner,
                                                                 operator_headers):
    """Publishing a reward or a promotion and using a voucher take the operator role."""
    publish(client, operator_headers)
    make_partner("acme", valid_from=PRICED_FROM)
    staff_account("acme", login="vic@acme.example", role="viewer")
    home = sign_in(client, login="vic@acme.example")
    token = csrf(text_of(home))
    assert client.get("/partner/rewards").status_code == 200
    assert client.get("/partner/offers").status_code == 200
    assert client.get("/partner/vouchers").status_code == 200
    before = snapshot(app)
    assert client.get("/partner/rewards/new").status_code == 403
    assert client.post("/partner/rewards/new",
                       data={**FORM, "csrf_token": token}).status_code == 403
    assert client.post("/partner/offers", data={
        "name": "Bonus", "rule": "bonus", "bonus_points": "5", "valid_from": "2030-01-01",
        "valid_to": "2030-02-01", "cap_points": "100", "csrf_token": token}).status_code == 403
    assert client.post("/partner/vouchers/use", data={
        "code": "A" * 24, "csrf_token": token}).status_code == 403
    assert snapshot(app) == before
