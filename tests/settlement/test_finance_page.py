"""The finance page at ``/finance``: finance users sign in through the real
authorization-code flow with PKCE, create a run for a booked period, read each partner's
statement, the net positions chart, the cross-partner heat map, payments and the
coalition's figures, reconcile a partner's CSV, resolve breaks in their own name, close the
run and export it. Last, a real headless Chromium does it the way a finance user would.
"""

from __future__ import annotations

import json
import re
import time
from html import unescape

import pytest
from sqlalchemy import select

from coalition.db import db, read
from coalition.oauth.models import FinanceUser, OAuthClient, OAuthToken
from settlement.models import Break, SettlementRun
from tests.conftest import ARTIFACTS, make_test_app, snapshot
from tests.factories.finance import (
    CELLS,
    EXPECTED,
    FINANCE_PASSWORD,
    PAYMENTS,
    POSITIONS,
    E,
    S,
    book_period,
    finance_user,
    page_sign_in,
)
from tests.factories.members import csrf_of

PERIOD_FORM = {"start_date": S.date().isoformat(), "start_time": S.strftime("%H:%M:%S"),
               "end_date": E.date().isoformat(), "end_time": E.strftime("%H:%M:%S")}


@pytest.fixture
def booked(client, make_partner, clock):
    finance_user()
    return book_period(client, make_partner, clock)


@pytest.fixture
def signed_in(client, booked):
    home = page_sign_in(client)
    assert home.status_code == 200
    return home


def text_of(response) -> str:
    return response.get_data(as_text=True)


def by_testid(html: str, name: str) -> str:
    match = re.search(rf'data-testid="{re.escape(name)}">([^<]*)<', html)
    assert match, name
    return unescape(match.group(1)).strip()


def live_tokens() -> list[OAuthToken]:
    with read() as session:
        return list(session.scalars(select(OAuthToken).where(
            OAuthToken.finance_user_id.is_not(None), OAuthToken.revoked_at.is_(None))))


def create_run(client, csrf: str, **changes: str):
    return client.post("/finance/runs", data={"csrf_token": csrf, **PERIOD_FORM, **changes})


def run_id_of(location: str) -> int:
    return int(re.search(r"/finance/runs/(\d+)", location).group(1))


# --------------------------------------------------------------------------- signing in


def test_sign_in_goes_through_the_authorization_code_flow(client, booked):
    start = client.get("/finance/signin")
    assert start.status_code == 302
    location = start.headers["Location"]
    assert location.startswith("/oauth/authorize?")
    for part in ("scope=settlement%3Arun", "code_challenge_method=S256", "code_challenge=",
                 "redirect_uri=http%3A%2F%2Flocalhost%2Ffinance%2Fcallback"):
        assert part in location
    with read() as session:
        page_client = session.scalars(select(OAuthClient).where(
            OAuthClient.kind == "public")).one()
    assert page_client.scope == "settlement:run" and page_client.secret_hash is None
    assert page_client.redirect_uris == "http://localhost/finance/callback"

    form = client.get(location)
    html = text_of(form)
    assert '<label for="username">' in html and '<label for="password">' in html
    assert "member_number" not in html  # the finance form, not the members'
    wrong = client.post(location, data={"csrf_token": csrf_of(html), "username": "fiona",
                                        "password": "not the password"})
    assert wrong.status_code == 401 and "The username or password is wrong." in text_of(wrong)
    answer = client.post(location, data={"csrf_token": csrf_of(html), "username": "fiona",
                                         "password": FINANCE_PASSWORD})
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("http://localhost/finance/callback?code=")
    home = client.get(answer.headers["Location"], follow_redirects=True)
    assert home.status_code == 200 and home.request.path == "/finance"
    assert by_testid(text_of(home), "finance-user") == "fiona"
    [token] = live_tokens()
    assert token.scope == "settlement:run" and token.kind == "public"
    assert token.client_id == page_client.client_id
    assert token.access_token_hash not in text_of(home)
    assert home.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]


def test_pages_need_a_signed_in_finance_user(client, booked):
    welcome = client.get("/finance")
    assert welcome.status_code == 200 and 'href="/finance/signin"' in text_of(welcome)
    page = client.get("/finance/runs/1")
    assert page.status_code == 302
    assert page.headers["Location"] == "/finance/signin?next=/finance/runs/1"
    for path in ("/finance/runs", "/finance/runs/1/close", "/finance/runs/1/breaks/1"):
        answer = client.post(path, data={})
        assert answer.status_code == 302 and answer.headers["Location"] == "/finance/signin"
    assert client.get("/finance/runs/1/export.csv").status_code == 302
    # after signing in, the user lands where they were going
    start = client.get("/finance/signin?next=/finance/runs/1")
    form = client.get(start.headers["Location"])
    answer = client.post(start.headers["Location"], data={
        "csrf_token": csrf_of(text_of(form)), "username": "fiona",
        "password": FINANCE_PASSWORD})
    back = client.get(answer.headers["Location"])
    assert back.headers["Location"] == "/finance/runs/1"
    # never somewhere else
    start = client.get("/finance/signin?next=https://evil.example/")
    assert "evil" not in json.dumps(dict(start.headers))


def test_sign_out_revokes_the_tokens(client, signed_in):
    assert live_tokens()
    forged = client.post("/finance/signout", data={})
    assert forged.status_code == 400 and live_tokens()
    out = client.post("/finance/signout", data={"csrf_token": csrf_of(text_of(signed_in))},
                      follow_redirects=True)
    assert "You have signed out." in text_of(out)
    assert not live_tokens()
    assert 'data-testid="finance-user"' not in text_of(client.get("/finance"))


def test_a_sign_out_that_cannot_revoke_says_so(app, database_url, booked):
    """Over the token endpoints' per-address limit the revocation is refused: the page says
    the user is still signed in rather than pretending, and signing out works once the
    limit allows it again."""
    limited = make_test_app(database_url, RATE_LIMIT_ENABLED=True, TOKEN_RATE_LIMIT=1,
                            TOKEN_RATE_LIMIT_BURST=2)  # 2 requests in any 2 s
    try:
        client = limited.test_client()
        home = page_sign_in(client)  # one of the two requests of the burst
        client.post("/oauth/token", data={"grant_type": "client_credentials"})  # the other
        before = snapshot(app)
        out = client.post("/finance/signout", data={"csrf_token": csrf_of(text_of(home))},
                          follow_redirects=True)
        assert "You are still signed in: signing out failed (Too many requests" in text_of(out)
        assert by_testid(text_of(out), "finance-user") == "fiona"
        assert snapshot(app) == before and live_tokens()
        time.sleep(2)  # the window has passed
        out = client.post("/finance/signout", data={"csrf_token": csrf_of(text_of(home))},
                          follow_redirects=True)
        assert "You have signed out." in text_of(out), re.findall(r'notice-[^<]*', text_of(out))
        assert not live_tokens()
    finally:
        with limited.app_context():
            db.engine.dispose()


def test_a_disabled_user_is_signed_out(client, signed_in):
    from coalition.oauth import finance_users

    finance_users.disable_user("fiona")
    again = client.get("/finance")
    assert 'data-testid="finance-user"' not in text_of(again)
    assert not live_tokens()


def test_production_needs_the_page_client_registered(app, client, booked, monkeypatch):
    monkeypatch.setitem(app.config, "ENV", "production")
    answer = client.get("/finance/signin")
    assert answer.status_code == 503
    assert "coalition client create --public --scope settlement:run" in text_of(answer)
    # a members' client on the same URI is not the finance page's
    from coalition.oauth.clients import create_public_client

    create_public_client("Member page", ["http://localhost/finance/callback"])
    assert client.get("/finance/signin").status_code == 503
    create_public_client("Finance page", ["http://localhost/finance/callback"],
                         scopes=("settlement:run",))
    assert client.get("/finance/signin").status_code == 302


# --------------------------------------------------------------------------- the page flow


def test_create_a_run_read_it_reconcile_resolve_and_close(app, client, booked, signed_in):
    csrf = csrf_of(text_of(signed_in))
    created = create_run(client, csrf)
    assert created.status_code == 302, text_of(created)
    run_id = run_id_of(created.headers["Location"])
    page = client.get(created.headers["Location"])
    html = text_of(page)
    assert page.status_code == 200
    assert f"Run {run_id} is computed as a draft." in html
    assert by_testid(html, "run-status") == "draft"
    with read() as session:
        run = session.get(SettlementRun, run_id)
        assert run.created_by == "fiona"
        assert (run.period_start, run.period_end) == (S, E)

    # each partner's statement, as worked out by hand
    for code, figures in EXPECTED.items():
        money = {k: v.replace("-", "−") for k, v in figures.items() if isinstance(v, str)}
        assert by_testid(html, f"issued-{code}") == f"{figures['issued_points']:,}"
        assert by_testid(html, f"redeemed-{code}") == f"{figures['redeemed_points']:,}"
        assert by_testid(html, f"payable-{code}") == money["payable"]
        assert by_testid(html, f"receivable-{code}") == money["receivable"]
        assert by_testid(html, f"statement-net-{code}") == money["net"]
        assert by_testid(html, f"net-{code}") == money["net"]
    assert "issued" in html and "0.0100" not in html  # rates as computed: "0.01"
    # net positions: an SVG chart with a title and a description, and the table fallback
    chart = re.search(r'<svg viewBox="[^"]+" role="img"\s+aria-labelledby="([^"]+)"', html)
    assert chart, "no positions chart"
    assert '<title id="pos-title-GBP">Net positions in GBP</title>' in html
    desc = re.search(r'<desc id="pos-desc-GBP">([^<]+)</desc>', html).group(1)
    assert "grocer pays 9.04 GBP" in desc and "fuel pays 2.85 GBP" in desc
    assert html.count('<rect x="') == len(POSITIONS)
    assert '<table data-testid="positions">' in html
    # the heat map: every cell with its number, darker with more points
    for cell in CELLS:
        td = re.search(rf'<td class="num (heat-\d)[^"]*" data-testid="cell-{cell["origin"]}-'
                       rf'{cell["redeemed_at"]}">([^<]+)</td>', html)
        assert td and td.group(2) == f"{cell['points']:,}", cell
    assert 'data-testid="cell-grocer-fuel">300' in html
    assert re.search(r'class="num heat-8[^"]*" data-testid="cell-grocer-fuel"', html)
    assert re.search(r'class="num heat-0[^"]*" data-testid="cell-charity-grocer"', html)
    # payments, and the coalition's figures
    # which money model is in force, and what to pay, in one sentence
    assert by_testid(html, "model-name") == "operator"
    assert '<p data-testid="model-instruction"><strong>Pay exactly the payment instructions ' \
        'below, and nothing else:</strong> one per partner and currency, between the ' \
        'partner and the coalition, for exactly its statement\'s net.</p>' in html
    for p in PAYMENTS:
        assert by_testid(html, f"payment-{p['from']}-{p['to']}") == f"{p['amount']} GBP"
    assert by_testid(html, "coalition-position-GBP") == "9.89"
    assert by_testid(html, "margin-GBP") == "9.89"
    assert by_testid(html, "outstanding") == "980"
    # the late entry, flagged on fuel's statement with the date it happened
    late = re.search(r'<table data-testid="late-fuel">.*?</table>', html, re.S).group(0)
    assert '<td class="mono">f0</td><td>earn</td><td class="num">100</td>' \
           '<td>2001-02-26 09:00:00</td>' in late
    assert "1 late entry: booked in this period for an earlier date" in html
    assert 'data-testid="late-grocer"' not in html
    assert by_testid(html, "breakage") == "0" and by_testid(html, "bonuses") == "0"
    # no breaks yet: the run may be closed
    assert 'data-testid="no-open-breaks"' in html
    assert re.search(r'<button type="submit" data-testid="close-run">', html)

    # the grocer's file disagrees on g1: one break
    upload = client.post(f"/finance/runs/{run_id}/reconciliations", data={
        "csrf_token": csrf, "partner": "grocer",
        "file": (__import__("io").BytesIO(booked.grocer_file(1010).encode()), "grocer.csv",
                 "text/csv")}, content_type="multipart/form-data", follow_redirects=True)
    html = text_of(upload)
    assert "grocer&#39;s file of 2 rows is reconciled: 1 matched, 1 record differs. " \
           "1 break to resolve." in html
    with read() as session:
        brk = session.scalars(select(Break)).one()
    assert brk.kind == "points_mismatch" and brk.status == "open"
    assert f'data-testid="break-{brk.id}"' in html
    assert "Records differ · grocer · <span class=\"mono\">g1</span>" in html
    # closing is disabled while the break is open, and says why
    assert re.search(r'data-testid="close-run" disabled aria-describedby="close-blocked"', html)
    assert "1 reconciliation break is open: resolve it before closing." in html
    refused = client.post(f"/finance/runs/{run_id}/close", data={"csrf_token": csrf},
                          follow_redirects=True)
    assert "The run was not closed: 1 reconciliation break is unresolved." \
        in text_of(refused)

    # a reason is required
    short = client.post(f"/finance/runs/{run_id}/breaks/{brk.id}", data={
        "csrf_token": csrf, "action": "accept", "reason": "ok"}, follow_redirects=True)
    assert "give a reason of 3 to 2000 characters" in text_of(short)
    resolved = client.post(f"/finance/runs/{run_id}/breaks/{brk.id}", data={
        "csrf_token": csrf, "action": "accept",
        "reason": "The partner's till double-counted a voucher."}, follow_redirects=True)
    html = text_of(resolved)
    assert f"Break {brk.id} is accepted." in html
    assert by_testid(html, f"resolved-by-{brk.id}") == "fiona"
    with read() as session:
        done = session.get(Break, brk.id)
        assert (done.status, done.resolved_by) == ("accepted", "fiona")

    closed = client.post(f"/finance/runs/{run_id}/close", data={"csrf_token": csrf},
                         follow_redirects=True)
    html = text_of(closed)
    assert f"Run {run_id} is closed." in html
    assert by_testid(html, "run-status") == "closed" and by_testid(html, "closed-by") == "fiona"
    assert 'data-testid="reconcile-form"' not in html and 'data-testid="close-run"' not in html
    with read() as session:
        assert session.get(SettlementRun, run_id).closed_by == "fiona"
        page_client = session.scalar(select(OAuthClient.client_id).where(
            OAuthClient.kind == "public"))
        from coalition.audit.models import AuditEvent

        audited = session.execute(select(AuditEvent.action, AuditEvent.actor,
                                         AuditEvent.actor_user)
                                  .where(AuditEvent.action.like("settlement.%"))
                                  .order_by(AuditEvent.id)).all()
    assert [tuple(a) for a in audited] == [
        (action, page_client, "fiona") for action in (
            "settlement.run_created", "settlement.reconciliation_uploaded",
            "settlement.break_accepted", "settlement.run_closed")]

    # exports: CSV and JSON of the run, CSV of a statement
    as_csv = client.get(f"/finance/runs/{run_id}/export.csv")
    assert as_csv.mimetype == "text/csv"
    assert f'filename="settlement-run-{run_id}.csv"' in as_csv.headers["Content-Disposition"]
    assert "operator,payment,grocer->coalition,GBP,,,,,,9.04" in text_of(as_csv)
    assert "operator,coalition,coalition,GBP,position,,,,,9.89" in text_of(as_csv)
    as_json = client.get(f"/finance/runs/{run_id}/export.json")
    assert as_json.mimetype == "application/json"
    doc = json.loads(text_of(as_json))
    assert doc["status"] == "closed" and doc["closed_by"] == "fiona"
    assert doc["positions"] == POSITIONS and doc["matrix"]["cells"] == CELLS
    statement = client.get(f"/finance/runs/{run_id}/statements/fuel.csv")
    assert statement.mimetype == "text/csv"
    assert text_of(statement).splitlines()[-1] == "fuel,GBP,operator,,,net,,,,,-2.85"
    assert client.get(f"/finance/runs/{run_id}/statements/nobody.csv").status_code == 404

    # the list of runs shows it, closed
    runs = text_of(client.get("/finance"))
    assert f'href="/finance/runs/{run_id}">Run {run_id}</a>' in runs
    assert "2001-03-01 09:00:00 UTC" in runs and "2001-03-01 09:00:10 UTC" in runs


def test_under_the_clearing_model_the_page_says_partners_pay_each_other(client, booked,
                                                                      signed_in):
    from coalition.program.schemas import ProgramRulesSchema
    from coalition.program.service import publish_rules

    publish_rules(ProgramRulesSchema().load({
        "settlement_model": "clearing",
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]}),
        "tests")
    csrf = csrf_of(text_of(signed_in))
    html = text_of(client.get(create_run(client, csrf).headers["Location"]))
    assert by_testid(html, "model-name") == "clearing"
    assert '<p data-testid="model-instruction"><strong>Pay exactly the payment instructions ' \
        'below, and nothing else:</strong> they net what partners owe each other for points ' \
        'spent across partners and the coalition\'s fees, and each partner\'s instructions ' \
        'in and out add up to its statement\'s net.</p>' in html
    # the nets are the statements' as under the operator model
    for code, figures in EXPECTED.items():
        assert by_testid(html, f"statement-net-{code}") == figures["net"].replace("-", "−")
    # grocer: owed 0.96 by fuel, owes 2.00 to charity and 2.55 to fuel, fee 9.04 − 3.59 =
    # 5.45; fuel: owed 2.55, owes 0.96, fee 2.85 + 1.59 = 4.44. Netting: debts grocer 9.04,
    # fuel 2.85; claims coalition 9.89, charity 2.00
    for payer, payee, amount in (("grocer", "coalition", "9.04"), ("fuel", "coalition", "0.85"),
                                 ("fuel", "charity", "2.00")):
        assert by_testid(html, f"payment-{payer}-{payee}") == f"{amount} GBP"
    assert html.count('data-testid="payment-') == 3
    grocer = re.search(r'data-testid="statement-grocer".*?</section>', html, re.S).group(0)
    assert "fee payable <span class=\"muted small\">to coalition</span>" in grocer
    assert "owes <span class=\"muted small\">to charity</span>" in grocer
    assert by_testid(html, "coalition-position-GBP") == "9.89"


def test_an_adjustment_is_booked_in_the_users_name(client, booked, signed_in):
    csrf = csrf_of(text_of(signed_in))
    run_id = run_id_of(create_run(client, csrf).headers["Location"])
    client.post(f"/finance/runs/{run_id}/reconciliations", data={
        "csrf_token": csrf, "partner": "grocer",
        "file": (__import__("io").BytesIO(booked.grocer_file(1010).encode()), "g.csv")},
        content_type="multipart/form-data")
    with read() as session:
        brk = session.scalars(select(Break)).one()
    answer = client.post(f"/finance/runs/{run_id}/breaks/{brk.id}", data={
        "csrf_token": csrf, "action": "adjust", "reason": "The partner is right."},
        follow_redirects=True)
    assert re.search(rf"Break {brk.id} is adjusted \(entry \d+ booked\)\.", text_of(answer))
    with read() as session:
        done = session.get(Break, brk.id)
    assert (done.status, done.resolved_by) == ("adjusted", "fiona")
    assert done.adjustment_entry_id is not None
    # the same file again: the record is shown as already adjusted, nothing to resolve
    again = client.post(f"/finance/runs/{run_id}/reconciliations", data={
        "csrf_token": csrf, "partner": "grocer",
        "file": (__import__("io").BytesIO(booked.grocer_file(1010).encode()), "g.csv")},
        content_type="multipart/form-data", follow_redirects=True)
    assert "grocer&#39;s file of 2 rows is reconciled: 1 matched, 1 already adjusted. " \
        "No breaks." in text_of(again)
    with read() as session:
        shown = session.scalars(select(Break).where(Break.id != brk.id)).one()
    assert (shown.status, shown.adjustment_entry_id) == ("adjusted", done.adjustment_entry_id)


def test_a_bad_upload_changes_nothing(app, client, booked, signed_in):
    csrf = csrf_of(text_of(signed_in))
    run_id = run_id_of(create_run(client, csrf).headers["Location"])
    before = snapshot(app)
    for content in (b"", b"not,a,header\n1,2,3\n", b"\xff\xfe"):
        answer = client.post(f"/finance/runs/{run_id}/reconciliations", data={
            "csrf_token": csrf, "partner": "grocer",
            "file": (__import__("io").BytesIO(content), "bad.csv")},
            content_type="multipart/form-data", follow_redirects=True)
        assert answer.status_code == 200
        assert 'role="alert"' in text_of(answer)
    unknown = client.post(f"/finance/runs/{run_id}/reconciliations", data={
        "csrf_token": csrf, "partner": "nobody",
        "file": (__import__("io").BytesIO(booked.grocer_file().encode()), "g.csv")},
        content_type="multipart/form-data", follow_redirects=True)
    assert "No partner &#39;nobody&#39;." in text_of(unknown)
    assert snapshot(app) == before


def test_the_run_form_checks_the_period(app, client, booked, signed_in):
    csrf = csrf_of(text_of(signed_in))
    before = snapshot(app)
    cases = [
        ({"start_date": ""}, "Enter a date."),
        ({"end_time": "25:00:00"}, "That date or time does not exist."),
        ({"start_date": "01/03/2001"}, "Enter a date as YYYY-MM-DD"),
        ({"end_date": S.date().isoformat(), "end_time": "08:00:00"},
         "The end must be after the start."),
        ({"end_date": "2999-01-01"}, "The period has not ended yet"),
    ]
    for changes, message in cases:
        answer = create_run(client, csrf, **changes)
        assert answer.status_code == 422, changes
        assert message in text_of(answer), changes
        assert 'aria-invalid="true"' in text_of(answer)
    assert snapshot(app) == before
    assert create_run(client, csrf).status_code == 302
    overlap = create_run(client, csrf, start_time="09:00:05", end_time="09:00:20")
    assert overlap.status_code == 409 and "overlaps settlement run" in text_of(overlap)
    # a date alone is midnight UTC
    whole_day = create_run(client, csrf, start_date="2001-02-01", start_time="",
                           end_date="2001-02-02", end_time="")
    assert whole_day.status_code == 302
    with read() as session:
        run = session.get(SettlementRun, run_id_of(whole_day.headers["Location"]))
        assert run.period_start.isoformat() == "2001-02-01T00:00:00+00:00"


def test_forms_need_their_csrf_token(app, client, booked, signed_in):
    before = snapshot(app)
    for path in ("/finance/runs", "/finance/runs/1/close", "/finance/runs/1/breaks/1",
                 "/finance/runs/1/reconciliations", "/finance/runs/1/recompute"):
        answer = client.post(path, data={"csrf_token": "forged", **PERIOD_FORM})
        assert answer.status_code == 400, path
        assert answer.mimetype == "text/html"
        assert "Back to settlement runs" in text_of(answer)
    assert snapshot(app) == before


def test_an_unknown_run_is_a_page_not_json(client, signed_in):
    answer = client.get("/finance/runs/999")
    assert answer.status_code == 404 and answer.mimetype == "text/html"
    assert "No settlement run 999." in text_of(answer)
    assert client.get(f"/finance/runs/{2**64}").status_code == 404  # no 64-bit overflow


@pytest.mark.parametrize("path", ["/finance", "/finance/runs/1"])
def test_the_markup_is_accessible_and_fits_a_phone(client, signed_in, path):
    csrf = csrf_of(text_of(signed_in))
    create_run(client, csrf)
    html = text_of(client.get(path))
    assert '<html lang="en">' in html and 'name="viewport"' in html
    assert html.count("<h1") == 1 and "<main" in html and "<nav" in html
    for control in re.findall(r'<(?:input|select|textarea)\b[^>]*>', html):
        if 'type="hidden"' in control:
            continue
        ident = re.search(r'id="([^"]+)"', control).group(1)
        assert f'<label for="{ident}">' in html, control
    assert "style=" not in html  # the CSP forbids inline style
    assert "<script" not in html


def test_finance_user_record(booked):
    with read() as session:
        user = session.scalars(select(FinanceUser)).one()
    assert user.username == "fiona" and user.password_hash.startswith("$argon2id$")
    assert FINANCE_PASSWORD not in user.password_hash


# --------------------------------------------------------------------------- a real browser


def test_a_finance_user_in_a_real_browser(chromium, backend, live_server, booked):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/finance")
        page.get_by_role("link", name="Sign in").click()
        page.wait_for_url("**/oauth/authorize?**")
        assert "code_challenge_method=S256" in page.url and "settlement%3Arun" in page.url
        page.get_by_label("Username").fill("fiona")
        page.get_by_label("Password").fill(FINANCE_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/finance")
        assert page.get_by_test_id("finance-user").inner_text() == "fiona"

        page.locator("#start_date").fill(PERIOD_FORM["start_date"])
        page.locator("#start_time").fill(PERIOD_FORM["start_time"])
        page.locator("#end_date").fill(PERIOD_FORM["end_date"])
        page.locator("#end_time").fill(PERIOD_FORM["end_time"])
        page.get_by_role("button", name="Compute a draft run").click()
        page.wait_for_url(re.compile(r".*/finance/runs/\d+$"))
        run_url = page.url
        assert page.get_by_test_id("run-status").inner_text() == "DRAFT"  # CSS upper-case
        for code, figures in EXPECTED.items():
            assert page.get_by_test_id(f"statement-net-{code}").inner_text() == \
                figures["net"].replace("-", "−")
            assert page.get_by_test_id(f"issued-{code}").inner_text() == \
                f"{figures['issued_points']:,}"
        # which money model is in force, and what to pay, before any figure
        assert page.get_by_test_id("model-name").inner_text() == "operator"
        assert page.get_by_test_id("model-instruction").inner_text().startswith(
            "Pay exactly the payment instructions below, and nothing else:")
        assert page.get_by_test_id("model-instruction").is_visible()
        assert page.get_by_test_id("payment-grocer-coalition").inner_text() == "9.04 GBP"
        chart = page.get_by_role("img", name="Net positions in GBP")
        assert chart.is_visible()
        assert chart.locator("rect").count() == 3
        assert page.get_by_test_id("heatmap").is_visible()
        assert page.get_by_test_id("cell-grocer-fuel").inner_text() == "300"
        # the darkest cell is drawn dark, with light text on it
        colours = page.get_by_test_id("cell-grocer-fuel").evaluate(
            "el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).color]")
        assert colours == ["rgb(19, 58, 128)", "rgb(255, 255, 255)"]

        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0).map(el => el.name)""")
        assert unlabelled == []
        assert page.locator("h1").count() == 1
        for landmark in ("banner", "navigation", "main", "contentinfo"):
            assert page.get_by_role(landmark).count() >= 1, landmark

        # reconcile the grocer's file: one break, and closing waits for it
        page.get_by_label("Partner", exact=True).select_option("grocer")
        page.get_by_label("The partner's record of the period (CSV)").set_input_files(
            files=[{"name": "grocer.csv", "mimeType": "text/csv",
                    "buffer": booked.grocer_file(1010).encode()}])
        page.get_by_role("button", name="Reconcile").click()
        page.wait_for_load_state()
        assert "1 break to resolve." in page.get_by_role("status").first.inner_text()
        assert page.get_by_test_id("close-run").is_disabled()
        page.screenshot(path=str(ARTIFACTS / f"finance-run-desktop-{backend}.png"),
                        full_page=True)

        page.get_by_label("Reason").fill("The partner's till double-counted a voucher.")
        page.get_by_role("button", name=re.compile(r"^Accept")).click()
        page.wait_for_load_state()
        assert re.fullmatch(r"Break \d+ is accepted\.",
                            page.get_by_role("status").first.inner_text())
        assert page.get_by_test_id("no-open-breaks").is_visible()
        assert page.get_by_test_id("close-run").is_enabled()

        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, overflow
        page.screenshot(path=str(ARTIFACTS / f"finance-run-phone-{backend}.png"),
                        full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})

        page.get_by_test_id("close-run").click()
        page.wait_for_load_state()
        assert page.url == run_url
        assert page.get_by_test_id("run-status").inner_text() == "CLOSED"
        assert page.get_by_test_id("closed-by").inner_text() == "fiona"

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_load_state()
        assert page.get_by_role("link", name="Sign in").is_visible()
        assert not live_tokens()
    finally:
        context.close()
