"""A settlement period with a promotion shared by two funders, worked by hand: every
figure below is computed in the comments.

Partners (GBP):  grocer  earn 1/GBP, issue 0.0100, redeem 0.0080
                 fuel    earn 2/GBP, issue 0.0090, redeem 0.0085

The operator publishes "Double at the grocer": × 2 on grocer earns, cap 400 points,
cost shared fuel 0.4, grocer 0.6. A funder's share of an award of n points is cut at
the cumulative shares in the order of the funders' codes: fuel ⌊0.4 n⌋, grocer the rest.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from coalition.db import read
from settlement.liability import Prior, liability
from tests.factories.finance import finance_user, page_sign_in
from tests.factories.partner_api import earn, enrol, post_ok, publish

#: ann 333, bob 50, cy 100 spent at the grocer; the promotion gives
#:   ann 333 (fuel ⌊133.2⌋ = 133, grocer 200), issued 333 of 400
#:   bob  50 (fuel 20, grocer 30), issued 383
#:   cy   17 of the 100 wanted, what is left (fuel ⌊6.8⌋ = 6, grocer 11), issued 400
#: the grocer then takes back 40 of bob's 100 points: its parts (own 50, fuel 20, grocer
#: 30) are cut at ⌊50 × 40 / 100⌋ = 20, ⌊70 × 40 / 100⌋ = 28, ⌊100 × 40 / 100⌋ = 40:
#:   own 20, fuel 8, grocer 12 back
GROCER_ISSUED = 333 + 50 + 100 - 20                    # 463 at 0.0100 = 4.63
GROCER_PROMOTION = 200 + 30 + 11 - 12                  # 229 at 0.0100 = 2.29
FUEL_PROMOTION = 133 + 20 + 6 - 8                      # 151 at 0.0090 = 1.359 → 1.36


def test_a_promotion_shared_by_two_funders(app, client, make_partner, operator_headers,
                                           clock):
    start = clock().replace(microsecond=0) - timedelta(seconds=1)
    _, grocer = make_partner("grocer", earn_rate=Decimal("1"), issue_price=Decimal("0.0100"),
                             redeem_rate=Decimal("0.0080"), valid_from=start)
    make_partner("fuel", earn_rate=Decimal("2"), issue_price=Decimal("0.0090"),
                 redeem_rate=Decimal("0.0085"), valid_from=start)
    publish(client, operator_headers, tiers=[
        {"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}])
    offer = post_ok(client, "/v1/admin/offers", operator_headers, {
        "name": "Double at the grocer", "rule": "multiplier", "multiplier": "2",
        "valid_from": start.isoformat(), "valid_to": (start + timedelta(days=7)).isoformat(),
        "opt_in": False, "cap_points": 400, "partners": ["grocer"],
        "cost_share": {"grocer": "0.6", "fuel": "0.4"}})
    ann, bob, cy = (enrol(client, grocer, ref) for ref in ("ann", "bob", "cy"))

    def gbp(amount: str) -> dict[str, str]:
        return {"amount": amount, "currency": "GBP"}

    assert earn(client, grocer, ann, "g1", spend=gbp("333.00"))["points"] == 666
    b = earn(client, grocer, bob, "g2", spend=gbp("50.00"))
    assert b["points"] == 100
    c = earn(client, grocer, cy, "g3", spend=gbp("100.00"))
    assert c["lines"] == [{"kind": "base", "points": 100},
                          {"kind": "promotion", "offer_id": offer["id"],
                           "name": "Double at the grocer", "points": 17}]
    back = post_ok(client, f"/v1/transactions/{b['id']}/reversals", grocer,
                   {"partner_txn_id": "g2-r", "points": 40})
    assert back["points"] == 40

    end = start + timedelta(minutes=5)
    clock.advance(minutes=10)
    created = client.post("/v1/settlement/runs", headers=operator_headers, json={
        "period_start": start.isoformat(), "period_end": end.isoformat()})
    assert created.status_code == 201, created.get_json()
    run = created.get_json()
    statements = {s["partner"]: s for s in run["statements"]}

    # grocer: issued 463 at 0.0100 = 4.63; its share of the promotion 229 at 0.0100 =
    #         2.29; payable 6.92, nothing redeemed: net −6.92
    g = statements["grocer"]
    assert (g["issued_points"], g["promotion_points"], g["redeemed_points"]) == (
        GROCER_ISSUED, GROCER_PROMOTION, 0)
    assert [(line["type"], line["points"], line["rate"], line["amount"])
            for line in g["lines"]] == [("issued", 463, "0.01", "4.63"),
                                        ("promotion", 229, "0.01", "2.29")]
    assert (g["payable"], g["receivable"], g["net"]) == ("6.92", "0", "-6.92")
    # fuel: issued nothing of its own; its share 151 at 0.0090 = 1.359, half-even 1.36
    f = statements["fuel"]
    assert (f["issued_points"], f["promotion_points"]) == (0, FUEL_PROMOTION)
    assert [(line["type"], line["points"], line["rate"], line["amount"])
            for line in f["lines"]] == [("promotion", 151, "0.009", "1.36")]
    assert (f["payable"], f["receivable"], f["net"]) == ("1.36", "0", "-1.36")
    assert run["payments"] == [
        {"from": "fuel", "to": "coalition", "amount": "1.36", "currency": "GBP",
         "model": "operator"},
        {"from": "grocer", "to": "coalition", "amount": "6.92", "currency": "GBP",
         "model": "operator"}]
    coalition = run["coalition"]
    # the coalition funds no share of this one
    assert "promotions" not in coalition
    # outstanding, all in grocer lots: 666 + 100 − 40 + 117 = 843
    assert coalition["outstanding"] == {"points": 843, "by_origin": [
        {"partner": "grocer", "points": 843}]}
    # the coalition keeps 6.92 + 1.36 = 8.28
    assert coalition["margin"] == [{"currency": "GBP", "amount": "8.28"}]
    # the finance page says who pays the promotion lines
    finance_user()
    assert page_sign_in(client).status_code == 200
    html = client.get(f"/finance/runs/{run['id']}").get_data(as_text=True)
    assert re.search(r'promotion <span class="muted small">to coalition</span>', html)
    closed = client.post(f"/v1/settlement/runs/{run['id']}/close", headers=operator_headers)
    assert closed.status_code == 200 and closed.get_json()["digest"] == run["digest"]

    # the analytics count the promotion's points as the grocer's issue, whoever funds
    # them: 463 of its own + 229 + 151 = 843, as the liability counts the grocer's lots
    month = start.strftime("%Y-%m")
    rows = client.get(f"/v1/analytics?from={month}&to={month}",
                      headers=operator_headers).get_json()["months"]
    assert {r["partner"]: r["issued"] for r in rows if r["issued"]} == {"grocer": 843}
    with read() as session:
        points = liability(session, start, end, "operator", Prior(Decimal("0"), 1))["points"]
    assert {p["origin"]: p["issued"] for p in points if p["issued"]} == {"grocer": 843}
