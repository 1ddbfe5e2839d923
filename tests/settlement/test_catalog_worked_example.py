"""Reward redemptions in a settlement period, worked by hand: a redemption is a burn at the
partner that fulfils the reward, and an unused voucher's refund is a reversal of it.

Partners (GBP):  grocer  earn 1/GBP, issue 0.0100, redeem 0.0080
                 cinema  issue 0.0100, redeem 0.0060 (fulfils the "Cinema ticket", 300 points)
Program: vouchers valid 30 days, an unused one refunded; breakage at its prior, 0.2.

    T0 + 1h    ann earns 1000 at grocer, bob 500                 cohort grocer, T0's month
    T0 + 2h    ann redeems the ticket: 300 burned at cinema      voucher A
    T0 + 3h    bob redeems the ticket: 300 burned at cinema      voucher B
    T0 + 1d    cinema's till uses voucher A
    T0 + 31d   the daily job: voucher B expired unused → 300 back to bob (a burn reversal
               at cinema, into the grocer lot they came from)
    ---------- the period [T0, T0 + 40d)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from coalition.ledger.daily import daily
from tests.factories.finance import fast_hashing, finance_user, page_sign_in  # noqa: F401
from tests.factories.member_records import assert_clean, member_token
from tests.factories.partner_api import balance, earn, enrol, publish

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_a_redemption_and_an_unused_vouchers_refund_settle_at_the_fulfilling_partner(
        app, client, make_partner, operator_headers, clock):
    clock.set(T0)
    since = T0 - timedelta(days=30)
    _, grocer = make_partner("grocer", earn_rate=Decimal("1"), issue_price=Decimal("0.0100"),
                             redeem_rate=Decimal("0.0080"), valid_from=since)
    _, cinema = make_partner("cinema", issue_price=Decimal("0.0100"),
                             redeem_rate=Decimal("0.0060"), valid_from=since)
    publish(client, operator_headers, vouchers={"valid_days": 30, "unused": "refund"})
    ticket = client.post("/v1/rewards", headers=cinema, json={
        "name": "Cinema ticket", "kind": "voucher", "points": 300}).get_json()["id"]

    clock.set(T0 + timedelta(hours=1))
    ann, bob = enrol(client, grocer, "ann"), enrol(client, grocer, "bob")
    earn(client, grocer, ann, "g1", points=1000)
    earn(client, grocer, bob, "g2", points=500)
    codes = {}
    for hours, number in ((2, ann), (3, bob)):
        clock.set(T0 + timedelta(hours=hours))
        response = client.post("/v1/me/redemptions", json={"reward_id": ticket},
                               headers=member_token(number))
        assert response.status_code == 201, response.get_json()
        codes[number] = response.get_json()["voucher_code"]
    clock.set(T0 + timedelta(days=1))
    assert client.post(f"/v1/vouchers/{codes[ann]}/redeem", headers=cinema).status_code == 200
    clock.set(T0 + timedelta(days=31))
    summary = daily(clock().date())
    assert (summary.vouchers_refunded, summary.voucher_points_refunded) == (1, 300)
    # ann: 1000 − 300 = 700; bob: 500 − 300 + 300 = 500
    assert balance(client, grocer, ann)["available"] == 700
    assert balance(client, grocer, bob)["available"] == 500
    assert_clean()

    clock.set(T0 + timedelta(days=40))
    created = client.post("/v1/settlement/runs", headers=operator_headers, json={
        "period_start": T0.isoformat(), "period_end": (T0 + timedelta(days=40)).isoformat()})
    assert created.status_code == 201, created.get_json()
    run = created.get_json()
    statements = {s["partner"]: s for s in run["statements"]}
    # grocer: issued 1000 + 500 = 1500 at 0.0100 = 15.00; nothing redeemed there
    g = statements["grocer"]
    assert (g["issued_points"], g["redeemed_points"]) == (1500, 0)
    assert (g["payable"], g["receivable"], g["net"]) == ("15.00", "0", "-15.00")
    # cinema: redeemed 300 + 300 − 300 refunded = 300 at 0.0060 = 1.80
    c = statements["cinema"]
    assert (c["issued_points"], c["redeemed_points"]) == (0, 300)
    assert (c["payable"], c["receivable"], c["net"]) == ("0", "1.80", "1.80")
    # grocer's points were spent at the cinema: 300, net of the refund
    assert run["matrix"]["cells"] == [{"origin": "grocer", "redeemed_at": "cinema",
                                       "points": 300}]
    # outstanding: ann 700 + bob 500 = 1200, all grocer's
    assert run["coalition"]["outstanding"] == {"points": 1200, "by_origin": [
        {"partner": "grocer", "points": 1200}]}
    # the coalition keeps 15.00 − 1.80 = 13.20
    assert run["coalition"]["margin"] == [{"currency": "GBP", "amount": "13.20"}]

    # the liability: grocer's points cost the cinema's 0.0060 (the only place they were
    # spent), less breakage at the prior 0.2: 1200 × 0.8 × 0.0060 = 5.76; issued 1500 ×
    # 0.8 × 0.0060 = 7.20, recognised on redemption 300 × 0.8 × 0.0060 = 1.44, and
    # 0 + 7.20 − 1.44 = 5.76
    liability = client.get(f"/v1/settlement/runs/{run['id']}/liability",
                           headers=operator_headers)
    assert liability.status_code == 200, liability.get_json()
    (line,) = liability.get_json()["rollforward"]
    assert {k: line[k] for k in ("currency", "opening", "issued", "recognised_on_redemption",
                                 "recognised_as_breakage", "closing")} == {
        "currency": "GBP", "opening": "0.00", "issued": "7.20",
        "recognised_on_redemption": "1.44", "recognised_as_breakage": "0.00",
        "closing": "5.76"}
    (cohort,) = liability.get_json()["cohorts"]
    assert (cohort["origin"], cohort["outstanding_points"], cohort["expected_cost"]) == \
        ("grocer", 1200, "5.76")

    # analytics: March's redemptions at the cinema (600), April's refund (−300); the top
    # rewards of March: the ticket, twice, 600 points
    doc = client.get("/v1/analytics?from=2026-03&to=2026-04",
                     headers=operator_headers).get_json()
    cinema_rows = [(r["month"], r["redeemed"]) for r in doc["months"]
                   if r["partner"] == "cinema"]
    assert cinema_rows == [("2026-03", 600), ("2026-04", -300)]
    assert doc["top_rewards"] == [{"month": "2026-03", "reward_id": ticket,
                                   "reward": "Cinema ticket", "partner": "cinema",
                                   "redemptions": 2, "points": 600}]
    assert client.get("/v1/analytics?from=2026-03&to=2026-04&partner=grocer",
                      headers=operator_headers).get_json()["top_rewards"] == []


def test_the_top_rewards_rank_each_months_rewards(app, client, make_partner, operator_headers,
                                                  clock):
    """Most redemptions first, then most points; a month of its own for each."""
    from settlement.analytics import program_analytics

    clock.set(T0)
    _, acme = make_partner("acme", valid_from=T0 - timedelta(days=30))
    publish(client, operator_headers)
    ids = {name: client.post("/v1/rewards", headers=acme, json={
        "name": name, "kind": "product", "points": points}).get_json()["id"]
        for name, points in (("Mug", 100), ("Bag", 300), ("Pen", 50))}
    ann = enrol(client, acme, "ann")
    earn(client, acme, ann, "e1", points=5000)
    for when, name in ((1, "Mug"), (2, "Bag"), (3, "Pen"), (4, "Pen"), (40 * 24, "Mug")):
        clock.set(T0 + timedelta(hours=when))
        assert client.post("/v1/me/redemptions", json={"reward_id": ids[name]},
                           headers=member_token(ann)).status_code == 201
    doc = program_analytics("2026-03", "2026-04")
    assert [(r["month"], r["reward"], r["redemptions"], r["points"])
            for r in doc["top_rewards"]] == [
        ("2026-03", "Pen", 2, 100), ("2026-03", "Bag", 1, 300), ("2026-03", "Mug", 1, 100),
        ("2026-04", "Mug", 1, 100)]

    # the finance page's Analytics section lists them
    finance_user()
    page_sign_in(client)
    html = client.get("/finance/analytics?from=2026-03&to=2026-04").get_data(as_text=True)
    assert "<h2 id=\"rewards-title\">Top rewards</h2>" in html
    assert f'data-testid="reward-2026-03-{ids["Pen"]}">2<' in html
