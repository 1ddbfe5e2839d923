"""The front door at ``/`` and the API docs at ``/docs``: both work on a machine without
internet access, and no page of Coalition loads anything from another host."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.conftest import ARTIFACTS

#: every server-rendered page a visitor can open without signing in
PAGES = ["/", "/docs", "/member", "/member/terms", "/member/activate", "/member/signin",
         "/finance", "/finance/signin", "/no-such-page", "/member/no-such-page"]

#: a URL in an attribute or a stylesheet that names a host (``http://…``, ``//…``)
EXTERNAL = re.compile(r"""(?:src|href|action|content|data|poster)\s*=\s*["']?\s*(?:[a-z]+:)?//"""
                      r"""|url\(\s*["']?\s*(?:[a-z]+:)?//|@import\s+["']?(?:[a-z]+:)?//""",
                      re.IGNORECASE)


def test_the_front_door_links_every_way_in(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    links = set(re.findall(r'href="([^"]+)"', html))
    assert {"/docs", "/openapi.json", "/member", "/finance", "/member/terms",
            "/v1/program"} <= links
    assert "one point currency" in html.lower()
    for link in ("/docs", "/openapi.json", "/member", "/finance", "/member/terms", "/v1/program"):
        assert client.get(link).status_code in (200, 302), link


def test_docs_serve_swagger_ui_from_the_installed_package(client):
    html = client.get("/docs").get_data(as_text=True)
    assert "cdn" not in html.lower()
    scripts = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert scripts and all(url.startswith("/docs/assets/") for url in scripts), scripts
    for url in scripts:
        with client.get(url) as asset:
            assert asset.status_code == 200 and len(asset.data) > 1000, url
    assert client.get("/docs/assets/../../app.py").status_code == 404


@pytest.mark.parametrize("path", PAGES)
def test_no_page_loads_anything_from_another_host(client, path):
    page = client.get(path, follow_redirects=True)
    html = page.get_data(as_text=True)
    assert "<html" in html.lower() or page.mimetype == "application/json", path
    assert EXTERNAL.findall(html) == [], path
    # stylesheets load what their url() name; what scripts fetch, the browser test checks
    for url in re.findall(r'href="(/[^"]+\.css)"', html):
        with client.get(url) as asset:
            assert EXTERNAL.findall(asset.get_data(as_text=True)) == [], url


def test_the_docs_in_a_browser_with_no_other_host(chromium, backend, live_server, operator):
    """Swagger UI lists the operations, authorises with client credentials and runs a call,
    while every request to another host is refused."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    own = urlsplit(live_server.url).netloc
    elsewhere: list[str] = []

    def only_this_server(route) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", only_this_server)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/docs")
        page.wait_for_selector(".opblock")
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/oauth/token", "/v1/earn", "/v1/burn", "/v1/admin/partners"} <= set(paths)

        page.get_by_role("button", name="Authorize").first.click()
        box = page.locator(".auth-container").filter(has_text="clientCredentials")
        box.locator("input[data-name=clientId]").fill(operator["client_id"])
        box.locator("input[data-name=clientSecret]").fill(operator["client_secret"])
        box.get_by_role("button", name="Authorize").click()
        box.get_by_role("button", name="Logout").wait_for()
        page.get_by_role("button", name="Close").first.click()

        call = page.locator("#operations-admin_partners-get_v1_admin_partners")
        call.locator(".opblock-summary").click()
        call.get_by_role("button", name="Try it out").click()
        call.get_by_role("button", name="Execute").click()
        status = call.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for()
        assert status.inner_text().strip() == "200"
        assert "Bearer " in call.locator(".curl").inner_text()
        status.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"docs-{backend}.png"))
        page.goto(f"{live_server.url}/")
        page.screenshot(path=str(ARTIFACTS / f"front-door-{backend}.png"), full_page=True)
    finally:
        context.close()
    assert elsewhere == []
