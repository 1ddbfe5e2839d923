"""The Analytics section of the finance page and the points liability on a run's page: the
figures of the period booked in tests/factories/finance.py, drawn as server-rendered SVG with a
table for each chart, and in a real headless Chromium on a desktop and a phone screen.

March 2001 (the booked period): ann and bob enrolled at grocer; grocer issued 1000 and
redeemed 120, fuel issued 600 and redeemed 300, charity redeemed 200; active: ann and bob
at grocer and fuel, ann at charity → 2 members; redemption rate 620 / 1600 = 0.3875.
"""

from __future__ import annotations

import re
from html import unescape

import pytest

from tests.conftest import ARTIFACTS
from tests.factories.finance import (
    FINANCE_PASSWORD,
    E,
    S,
    book_period,
    fast_hashing,  # noqa: F401 - an autouse fixture
    finance_user,
    page_sign_in,
)
from tests.factories.settlement import iso

PATH = "/finance/analytics?from=2001-02&to=2001-03"


@pytest.fixture
def booked(client, make_partner, clock):
    finance_user()
    return book_period(client, make_partner, clock)


def by_testid(html: str, name: str) -> str:
    match = re.search(rf'data-testid="{re.escape(name)}"[^>]*>([^<]*)<', html)
    assert match, name
    return unescape(match.group(1)).strip()


def test_the_analytics_page_draws_and_tables_the_months(client, booked):
    assert client.get(PATH).status_code == 302  # finance users only
    page_sign_in(client)
    answer = client.get(PATH)
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert by_testid(html, "issued-2001-03") == "1,600"
    assert by_testid(html, "redeemed-2001-03") == "620"
    assert by_testid(html, "active-2001-03") == "2"
    assert by_testid(html, "issued-2001-02") == "0"
    assert by_testid(html, "issued-2001-03-grocer") == "1,000"
    assert "0.3875" in html
    # no rules were published: the default rules' first tier
    assert by_testid(html, "tier-2001-03-member") == "2"
    # the charts: lines over the two months, a bar segment per partner that issued points
    assert html.count('<polyline points="') == 3
    assert 'data-testid="bar-2001-03-grocer"' in html and 'data-testid="bar-2001-03-fuel"' in html
    assert 'data-testid="bar-2001-03-charity"' not in html  # it issued nothing
    assert "Points per month across the coalition. 2001-02: issued 0" in html
    assert "<script" not in html and "style=" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    exported = client.get("/finance/analytics.csv?from=2001-03&to=2001-03")
    assert exported.mimetype == "text/csv"
    assert exported.get_data(as_text=True).splitlines()[-1] == (
        "2001-03,all,2,2,0,0,1600,620,0,0,0,0,0.3875")


def test_bad_months_are_refused_on_the_page(client, booked):
    page_sign_in(client)
    answer = client.get("/finance/analytics?from=2001-05&to=2001-03")
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert "Check the months asked for." in html and "Must not be before from." in html
    assert 'aria-invalid="true"' in html


def test_a_runs_page_shows_its_points_liability(client, booked, operator_headers):
    page_sign_in(client)
    run = client.post("/v1/settlement/runs", headers=operator_headers, json={
        "period_start": iso(S), "period_end": iso(E)}).get_json()
    html = client.get(f"/finance/runs/{run['id']}").get_data(as_text=True)
    doc = client.get(f"/v1/settlement/runs/{run['id']}/liability",
                     headers=operator_headers).get_json()
    [line] = doc["rollforward"]
    assert by_testid(html, "liability-GBP") == line["closing"]
    assert by_testid(html, "breakage-rate") == doc["estimate"]["breakage_rate"] == "0.200000"
    assert "from the configured prior" in html


def test_analytics_in_a_real_browser(chromium, backend, live_server, booked):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requests_elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(live_server.url)
            else requests_elsewhere.append(r.url))
    try:
        page.goto(f"{live_server.url}/finance")
        page.get_by_role("link", name="Sign in").click()
        page.wait_for_url("**/oauth/authorize?**")
        page.get_by_label("Username").fill("fiona")
        page.get_by_label("Password").fill(FINANCE_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/finance")
        page.get_by_role("link", name="Analytics").click()
        page.wait_for_url("**/finance/analytics")
        page.get_by_label("From (month)").fill("2001-02")
        page.get_by_label("To (month)").fill("2001-03")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**/finance/analytics?from=2001-02&to=2001-03")

        lines = page.get_by_role("img", name="Points issued, redeemed and expired each month")
        assert lines.is_visible()
        assert lines.locator("polyline").count() == 3
        bars = page.get_by_role("img", name="Points issued each month, by partner")
        assert bars.is_visible()
        grocer = page.get_by_test_id("bar-2001-03-grocer")
        fuel = page.get_by_test_id("bar-2001-03-fuel")
        # stacked in the partners' order: fuel's 600 at the bottom, grocer's 1000 on top,
        # in proportion
        g, f = grocer.bounding_box(), fuel.bounding_box()
        assert abs(g["y"] + g["height"] - f["y"]) < 1.5
        assert g["height"] / f["height"] == pytest.approx(1000 / 600, rel=0.02)
        assert page.get_by_test_id("totals").is_hidden()  # behind its summary
        page.get_by_text("Points each month as a table").click()
        assert page.get_by_test_id("issued-2001-03").inner_text() == "1,600"
        assert page.get_by_test_id("active-2001-03").inner_text() == "2"
        assert page.locator("h1").count() == 1
        page.screenshot(path=str(ARTIFACTS / f"finance-analytics-desktop-{backend}.png"),
                        full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        assert bars.is_visible()
        page.screenshot(path=str(ARTIFACTS / f"finance-analytics-phone-{backend}.png"),
                        full_page=True)
        assert requests_elsewhere == []  # no script, font or image from another host
    finally:
        context.close()
