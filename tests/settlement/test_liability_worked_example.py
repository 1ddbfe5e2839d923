"""The points liability and the program analytics of a small history, worked by hand.

Partners (all GBP), redeem rates:  grocer 0.0080 → from 2001-03-15: 0.0100
                                   fuel    0.0050
                                   charity 0.0100 (kind charity)
Breakage is measured from history once 2 closed cohorts held points at the age asked
(BREAKAGE_MIN_COHORTS=2); a cohort's age is the whole months from its month to the
moment's month.

    2001-01-10  ann earns 100 at grocer, expiring after one month     cohort grocer 2001-01
    2001-01-12  cy earns 300 at fuel                                   cohort fuel 2001-01
    2001-02-05  cy burns 300 at grocer (from fuel 2001-01: closed, nothing lapsed)
    2001-02-15  the expiry job: ann's 100 expire (grocer 2001-01: closed, all lapsed)
    2001-02-20  bob earns 400 at fuel                                  cohort fuel 2001-02
    ----------- the period [2001-03-01, 2001-04-01)
    2001-03-05  ann earns 1000 at grocer                               cohort grocer 2001-03
    2001-03-10  ann burns 300 at fuel (from grocer 2001-03)
    2001-03-15  grocer's new rate card: redeem 0.0100
    2001-03-20  bob transfers 100 to ann: out of fuel 2001-02, into a new lot of ann's,
                origin fuel, earned now                               cohort fuel 2001-03
    2001-03-25  ann donates 200 to charity, earliest expiry first: the transferred lot's
                100 (expires 2002-02-20), then 100 of grocer 2001-03 (expires 2002-03-05)
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select

from coalition.db import read
from coalition.ledger.models import Member
from tests.factories.partner_api import burn, earn, enrol, post_ok
from tests.factories.settlement import iso


def at(month: int, day: int) -> datetime:
    return datetime(2001, month, day, 12, tzinfo=UTC)


def publish(client, headers, months: int) -> None:
    response = client.put("/v1/admin/program", headers=headers, json={
        "expiry": {"policy": "fixed", "months": months},
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"},
                  {"code": "gold", "name": "Gold", "threshold": 500, "multiplier": "1"}]})
    assert response.status_code == 200, response.get_json()


def member_id(number: str) -> int:
    with read() as session:
        return session.scalar(select(Member.id).where(Member.member_number == number))


def book_history(app, client, clock, make_partner, operator_headers) -> None:
    from coalition.ledger.jobs import expire
    from coalition.ledger.transfers import donate, transfer
    from partners.service import add_rate_card

    since = datetime(2000, 12, 1, tzinfo=UTC)
    _, grocer = make_partner("grocer", redeem_rate=Decimal("0.0080"), valid_from=since)
    _, fuel = make_partner("fuel", redeem_rate=Decimal("0.0050"), valid_from=since)
    make_partner("charity", kind="charity", earn_rate=Decimal("0"), issue_price=Decimal("0"),
                 redeem_rate=Decimal("0.0100"), valid_from=since)
    clock.set(datetime(2001, 1, 2, tzinfo=UTC))
    ann, bob, cy = (enrol(client, grocer, ref) for ref in ("ann", "bob", "cy"))

    clock.set(at(1, 10))
    publish(client, operator_headers, months=1)
    earn(client, grocer, ann, "g-ann-1", points=100)
    publish(client, operator_headers, months=12)
    clock.set(at(1, 12))
    earn(client, fuel, cy, "f-cy-1", points=300)
    clock.set(at(2, 5))
    burn(client, grocer, cy, "g-cy-burn", points=300)
    clock.set(at(2, 15))
    assert expire(at(2, 15)).points_expired == 100
    clock.set(at(2, 20))
    earn(client, fuel, bob, "f-bob-1", points=400)

    clock.set(at(3, 5))
    earn(client, grocer, ann, "g-ann-2", points=1000)
    clock.set(at(3, 10))
    burn(client, fuel, ann, "f-ann-burn", points=300)
    add_rate_card("grocer", at(3, 15), issue_price=Decimal("0.01"),
                  redeem_rate=Decimal("0.0100"))
    clock.set(at(3, 20))
    transfer(member_id(bob), ann, 100)
    clock.set(at(3, 25))
    donate(member_id(ann), "charity", 200)
    clock.set(datetime(2001, 5, 2, tzinfo=UTC))


def configure(app, monkeypatch, min_cohorts: int, prior: str) -> None:
    """The breakage settings for this test only (the app is shared by the session)."""
    monkeypatch.setitem(app.config, "BREAKAGE_MIN_COHORTS", min_cohorts)
    monkeypatch.setitem(app.config, "BREAKAGE_PRIOR", prior)


def test_liability_worked_by_hand(app, client, clock, make_partner, operator_headers,
                                  monkeypatch):
    configure(app, monkeypatch, 2, "0.2")
    book_history(app, client, clock, make_partner, operator_headers)
    march = post_ok(client, "/v1/settlement/runs", operator_headers, {
        "period_start": iso(datetime(2001, 3, 1, tzinfo=UTC)),
        "period_end": iso(datetime(2001, 4, 1, tzinfo=UTC))})
    response = client.get(f"/v1/settlement/runs/{march['id']}/liability",
                          headers=operator_headers)
    assert response.status_code == 200, response.get_json()
    doc = response.get_json()
    assert (doc["run"], doc["status"], doc["model"]) == (march["id"], "draft", "operator")

    # At age 0 (all points lapsed ÷ all that stayed): at the start, closed cohorts grocer
    # 2001-01 (100 lapsed of 100) and fuel 2001-01 (0 of 300): 2 ≥ 2, so 100 / 400 = 0.25.
    # At the end fuel 2001-03 has closed too (its 100 donated, 0 lapsed): 100 / 500 = 0.2.
    assert doc["estimate"]["breakage_rate"] == "0.200000"
    assert doc["estimate"]["opening_breakage_rate"] == "0.250000"
    assert (doc["estimate"]["basis"], doc["estimate"]["closed_cohorts"]) == ("history", 3)
    # By age, at the end: at age 1, the cohorts that still held points after their first
    # month are fuel 2001-01 (300, none lapsed: spent in February) and grocer 2001-01 (100,
    # all lapsed in February); fuel 2001-03 was spent in its own month. 100 / 400 = 0.25.
    # At age 2 none held points any more: the prior.
    assert doc["estimate"]["by_age"] == [
        {"age": 0, "breakage_rate": "0.200000", "basis": "history", "closed_cohorts": 3},
        {"age": 1, "breakage_rate": "0.250000", "basis": "history", "closed_cohorts": 2},
        {"age": 2, "breakage_rate": "0.200000", "basis": "prior", "closed_cohorts": 0},
    ]
    assert doc["closed_cohorts"] == [
        {"origin": "fuel", "earned_month": "2001-01", "points": 300, "lapsed_points": 0,
         "breakage_rate": "0.000000"},
        {"origin": "fuel", "earned_month": "2001-03", "points": 100, "lapsed_points": 0,
         "breakage_rate": "0.000000"},
        {"origin": "grocer", "earned_month": "2001-01", "points": 100, "lapsed_points": 100,
         "breakage_rate": "1.000000"},
    ]
    # Unit costs at the end, at the rates in force then, weighted by where each origin's
    # points were spent before it: fuel's 300 at grocer and 100 at charity →
    # (300 × 0.0100 + 100 × 0.0100) / 400 = 0.0100; grocer's 300 at fuel and 100 at
    # charity → (300 × 0.0050 + 100 × 0.0100) / 400 = 0.00625. At the start only fuel's
    # 300 at grocer (at 0.0080) had been spent, and grocer (nothing spent yet) took the
    # program's mix: 0.0080 both.
    assert doc["estimate"]["unit_costs"] == [
        {"origin": "fuel", "currency": "GBP", "unit_cost": "0.01000000",
         "opening_unit_cost": "0.00800000"},
        {"origin": "grocer", "currency": "GBP", "unit_cost": "0.00625000",
         "opening_unit_cost": "0.00800000"},
    ]
    # fuel 2001-02 (age 2, the prior): 400 − 100 transferred = 300 × 0.8 × 0.0100 = 2.40
    # grocer 2001-03 (age 1): 1000 − 300 − 100 = 600 × 0.75 × 0.00625 = 2.8125 → 2.81
    assert doc["cohorts"] == [
        {"origin": "fuel", "earned_month": "2001-02", "currency": "GBP",
         "outstanding_points": 300, "breakage_rate": "0.200000", "unit_cost": "0.01000000",
         "expected_cost": "2.40"},
        {"origin": "grocer", "earned_month": "2001-03", "currency": "GBP",
         "outstanding_points": 600, "breakage_rate": "0.250000", "unit_cost": "0.00625000",
         "expected_cost": "2.81"},
    ]
    # opening: fuel 2001-02, aged 1 at the start (0.25 then, from the two cohorts closed in
    #   February): 400 × 0.75 × 0.0080 = 2.40
    # issued, each cohort at its rate at the end: grocer 2001-03's 1000 × 0.75 × 0.00625 =
    #   4.6875 → 4.69 (the transfer moves fuel points between cohorts: not issued)
    # redeemed: grocer 2001-03's 300 + 100 = 400 × 0.75 × 0.00625 = 1.875, fuel 2001-03's
    #   100 donated (age 1: 0.25) × 0.75 × 0.0100 = 0.75 → 2.625 → 2.62 (half even)
    # closing: 2.40 + 2.81 = 5.21; the change of estimate is the rest:
    #   5.21 − 2.40 − 4.69 + 2.62 = 0.74
    assert doc["rollforward"] == [
        {"currency": "GBP", "opening": "2.40", "issued": "4.69",
         "recognised_on_redemption": "2.62", "recognised_as_breakage": "0.00",
         "estimate_change": "0.74", "closing": "5.21"}]
    assert doc["points"] == [
        {"origin": "fuel", "opening": 400, "issued": 0, "redeemed": 100, "expired": 0,
         "forfeited": 0, "closing": 300},
        {"origin": "grocer", "opening": 0, "issued": 1000, "redeemed": 400, "expired": 0,
         "forfeited": 0, "closing": 600},
    ]
    # the settlement run's own outstanding points agree, by origin
    assert march["coalition"]["outstanding"]["by_origin"] == [
        {"partner": "fuel", "points": 300}, {"partner": "grocer", "points": 600}]

    # closed, the period's liability is kept: a new prior later changes nothing of it,
    # and April opens with it; April re-measures at the prior 0.5 (10 closed cohorts are
    # now needed): 300 × 0.5 × 0.01 = 1.50, 600 × 0.5 × 0.00625 = 1.875 → 1.88 (half even);
    # 3.38 − 5.21 = −1.83
    closed = post_ok(client, f"/v1/settlement/runs/{march['id']}/close", operator_headers,
                     {}, status=200)
    assert closed["status"] == "closed"
    configure(app, monkeypatch, 10, "0.5")
    again = client.get(f"/v1/settlement/runs/{march['id']}/liability",
                       headers=operator_headers).get_json()
    assert {k: v for k, v in again.items() if k != "status"} == {
        k: v for k, v in doc.items() if k != "status"}
    april = post_ok(client, "/v1/settlement/runs", operator_headers, {
        "period_start": iso(datetime(2001, 4, 1, tzinfo=UTC)),
        "period_end": iso(datetime(2001, 5, 1, tzinfo=UTC))})
    later = client.get(f"/v1/settlement/runs/{april['id']}/liability",
                       headers=operator_headers).get_json()
    assert later["estimate"]["basis"] == "prior"
    assert later["rollforward"] == [
        {"currency": "GBP", "opening": "5.21", "issued": "0.00",
         "recognised_on_redemption": "0.00", "recognised_as_breakage": "0.00",
         "estimate_change": "-1.83", "closing": "3.38"}]


def test_analytics_worked_by_hand(app, client, clock, make_partner, operator_headers):
    book_history(app, client, clock, make_partner, operator_headers)
    response = client.get("/v1/analytics?from=2001-01&to=2001-03", headers=operator_headers)
    assert response.status_code == 200, response.get_json()
    doc = response.get_json()
    zero = dict(enrolled=0, active=0, closed=0, merged=0, issued=0, redeemed=0, expired=0,
                forfeited=0, transferred=0, donated=0)

    def row(month, partner, rate=None, **figures):
        return {"month": month, "partner": partner, **zero, **figures,
                "redemption_rate": rate}

    assert doc["months"] == [
        # January: three members enrolled at grocer; ann earns 100 there, cy 300 at fuel
        row("2001-01", "fuel", "0.0000", active=1, issued=300),
        row("2001-01", "grocer", "0.0000", enrolled=3, active=1, issued=100),
        # February: cy spends 300 at grocer, bob earns 400 at fuel, grocer's 100 expire
        row("2001-02", "fuel", "0.0000", active=1, issued=400),
        row("2001-02", "grocer", None, active=1, redeemed=300, expired=100),
        # March: ann donates 200 (a redemption at the charity), earns 1000 at grocer and
        # spends 300 at fuel; bob transfers 100 fuel points
        row("2001-03", "charity", None, active=1, redeemed=200, donated=200),
        row("2001-03", "fuel", None, active=1, redeemed=300, transferred=100),
        row("2001-03", "grocer", "0.0000", active=1, issued=1000),
    ]
    # each member counts once a month, wherever they were active
    assert doc["totals"] == [
        row("2001-01", "all", "0.0000", enrolled=3, active=2, issued=400),
        row("2001-02", "all", "0.7500", active=2, issued=400, redeemed=300, expired=100),
        row("2001-03", "all", "0.5000", active=1, issued=1000, redeemed=500,
            transferred=100, donated=200),
    ]
    # tiers at each month end, from the points earned in the twelve months before it:
    # ann 100, then 1100 from March (gold from 500); bob 400 and cy 300 stay members
    assert doc["tiers"] == [
        {"month": "2001-01", "tier": "member", "members": 3},
        {"month": "2001-01", "tier": "gold", "members": 0},
        {"month": "2001-02", "tier": "member", "members": 3},
        {"month": "2001-02", "tier": "gold", "members": 0},
        {"month": "2001-03", "tier": "member", "members": 2},
        {"month": "2001-03", "tier": "gold", "members": 1},
    ]
    fuel = client.get("/v1/analytics?from=2001-03&to=2001-03&partner=fuel",
                      headers=operator_headers).get_json()
    assert fuel["months"] == [row("2001-03", "fuel", None, active=1, redeemed=300,
                                  transferred=100)]
    as_csv = client.get("/v1/analytics?from=2001-03&to=2001-03",
                        headers={**operator_headers, "Accept": "text/csv"})
    assert as_csv.mimetype == "text/csv"
    assert as_csv.get_data(as_text=True).splitlines()[:2] == [
        "month,partner,enrolled,active,closed,merged,issued,redeemed,expired,forfeited,"
        "transferred,donated,redemption_rate",
        "2001-03,charity,0,1,0,0,0,200,0,0,0,200,"]


def test_the_command_line_gives_the_same_figures(app, client, clock, make_partner,
                                                 operator_headers, monkeypatch):
    import csv
    import io
    import json

    configure(app, monkeypatch, 2, "0.2")
    book_history(app, client, clock, make_partner, operator_headers)
    march = post_ok(client, "/v1/settlement/runs", operator_headers, {
        "period_start": iso(datetime(2001, 3, 1, tzinfo=UTC)),
        "period_end": iso(datetime(2001, 4, 1, tzinfo=UTC))})
    runner = app.test_cli_runner()
    shown = runner.invoke(args=["settle", "liability", str(march["id"]), "--json"])
    assert shown.exit_code == 0, shown.output
    api = client.get(f"/v1/settlement/runs/{march['id']}/liability",
                     headers=operator_headers).get_json()
    assert json.loads(shown.output) == api
    text = runner.invoke(args=["settle", "liability", str(march["id"])])
    assert "GBP          2.40         4.69         2.62         0.00         0.74         5.21" \
        in text.output, text.output
    assert "grocer         2001-03  GBP         600   0.250000   0.00625000         2.81" \
        in text.output, text.output
    assert runner.invoke(args=["settle", "liability", "999999"]).exit_code == 1

    months = runner.invoke(args=["analytics", "--from", "2001-01", "--to", "2001-03",
                                 "--json"])
    assert months.exit_code == 0, months.output
    assert json.loads(months.output) == client.get(
        "/v1/analytics?from=2001-01&to=2001-03", headers=operator_headers).get_json()
    table = runner.invoke(args=["analytics", "--from", "2001-03", "--to", "2001-03", "--csv"])
    rows = list(csv.DictReader(io.StringIO(table.output)))
    assert [(r["partner"], r["redeemed"], r["redemption_rate"]) for r in rows] == [
        ("charity", "200", ""), ("fuel", "300", ""), ("grocer", "0", "0.0000"),
        ("all", "500", "0.5000")]
    wrong = runner.invoke(args=["analytics", "--from", "2001-13"])
    assert wrong.exit_code == 2 and "--from" in wrong.output, wrong.output
    unknown = runner.invoke(args=["analytics", "--partner", "nobody"])
    assert unknown.exit_code == 1 and "not_found" in unknown.output, unknown.output


def test_bad_questions_are_refused_clearly(client, operator_headers, make_partner):
    for query, field in (("from=2001-13", "from"), ("to=March", "to"),
                         ("from=2001-05&to=2001-03", "to"), ("from=1990-01&to=2001-03", "to")):
        answer = client.get(f"/v1/analytics?{query}", headers=operator_headers)
        assert answer.status_code == 422, (query, answer.get_json())
        assert answer.get_json()["error"] == "invalid_request"
        assert field in answer.get_json()["errors"], (query, answer.get_json())
    missing = client.get("/v1/analytics?partner=nobody", headers=operator_headers)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert client.get("/v1/settlement/runs/999/liability",
                      headers=operator_headers).status_code == 404
    assert client.get("/v1/analytics").status_code == 401
    _, partner = make_partner("shop")
    refused = client.get("/v1/analytics", headers=partner)
    assert refused.status_code == 403 and refused.get_json()["error"] == "insufficient_scope"
