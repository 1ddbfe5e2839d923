"""Paid memberships in a settlement period worked by hand: one bought with points (the
coalition redeems them itself), two sold for money by partners (collected for the
coalition, owed on their statements). Every figure is computed in the comments.

Partners (GBP):  grocer  earn 1/GBP, issue 0.0100, redeem 0.0080
                 fuel    earn 1/GBP, issue 0.0090, redeem 0.0085
Plans:           club    500 points or 9.99 GBP, a month;  vip  49.00 GBP, a year
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.factories.member_records import assert_clean, member_token
from tests.factories.partner_api import burn, earn, enrol, post_ok

PLANS = [
    {"code": "club", "name": "Club", "price_points": 500,
     "price": {"amount": "9.99", "currency": "GBP"}, "period_months": 1, "multiplier": "2"},
    {"code": "vip", "name": "VIP", "price": {"amount": "49.00", "currency": "GBP"},
     "period_months": 12},
]

#: who pays whom for the same period under each money model; the nets are the same
#: (grocer −59.00, fuel −10.99) and the coalition is owed 69.99
SETTLED = {
    # every partner settles its net with the coalition
    "operator": {
        "lines": {"grocer": [("issued", "coalition", 1000, "10.00"),
                             ("collected", "coalition", None, "49.00")],
                  "fuel": [("issued", "coalition", 300, "2.70"),
                           ("redeemed", "coalition", 200, "1.70"),
                           ("collected", "coalition", None, "9.99")]},
        "payments": [("fuel", "coalition", "10.99"), ("grocer", "coalition", "59.00")],
    },
    # grocer's 200 points spent at fuel: grocer owes fuel 200 × 0.0085 = 1.70. Fees make
    # up the rest of each net after what it collected: grocer −59.00 − (−1.70 − 49.00) =
    # −8.30; fuel −10.99 − (1.70 − 9.99) = −2.70. Positions: coalition 8.30 + 2.70 + 49.00
    # + 9.99 = 69.99, grocer −59.00, fuel −10.99 → two instructions
    "clearing": {
        "lines": {"grocer": [("owes", "fuel", 200, "1.70"),
                             ("collected", "coalition", None, "49.00"),
                             ("fee_payable", "coalition", None, "8.30")],
                  "fuel": [("owed", "grocer", 200, "1.70"),
                           ("collected", "coalition", None, "9.99"),
                           ("fee_payable", "coalition", None, "2.70")]},
        "payments": [("grocer", "coalition", "59.00"), ("fuel", "coalition", "10.99")],
    },
}


@pytest.mark.parametrize("model", ["operator", "clearing"])
def test_memberships_in_a_hand_worked_period(app, client, make_partner, operator_headers,
                                             clock, model):
    start = clock().replace(microsecond=0) + timedelta(seconds=1)
    clock.set(start)
    _, grocer = make_partner("grocer", earn_rate=Decimal("1"), issue_price=Decimal("0.0100"),
                             redeem_rate=Decimal("0.0080"), valid_from=start)
    _, fuel = make_partner("fuel", earn_rate=Decimal("1"), issue_price=Decimal("0.0090"),
                           redeem_rate=Decimal("0.0085"), valid_from=start)
    response = client.put("/v1/admin/program", headers=operator_headers, json={
        "settlement_model": model, "memberships": PLANS,
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]})
    assert response.status_code == 200, response.get_json()
    ann, bob = enrol(client, grocer, "ann"), enrol(client, grocer, "bob")
    cy = enrol(client, fuel, "cy")

    earn(client, grocer, ann, "g1", points=1000)           # grocer issues 1000
    bought = client.post("/v1/me/memberships", headers=member_token(ann),
                         json={"plan": "club", "pay_with": "points"})
    assert bought.status_code == 201, bought.get_json()    # 500 of ann's grocer points
    burn(client, fuel, ann, "f1", points=200)              # 200 grocer points spent at fuel
    earn(client, fuel, bob, "f2", points=300)              # fuel issues 300
    post_ok(client, "/v1/memberships", grocer, {           # grocer takes 49.00 for vip
        "partner_member_ref": "bob", "plan": "vip", "partner_txn_id": "till-1",
        "price": {"amount": "49.00", "currency": "GBP"}})
    post_ok(client, "/v1/memberships", fuel, {             # fuel takes 9.99 for club
        "member_number": cy, "plan": "club", "partner_txn_id": "pos-7",
        "price": {"amount": "9.99", "currency": "GBP"}})
    end = clock.advance(seconds=2)
    clock.advance(seconds=1)

    created = client.post("/v1/settlement/runs", headers=operator_headers, json={
        "period_start": start.isoformat(), "period_end": end.isoformat()})
    assert created.status_code == 201, created.get_json()
    run = created.get_json()
    statements = {s["partner"]: s for s in run["statements"]}

    # grocer: issued 1000 × 0.0100 = 10.00; redeemed nothing; collected 49.00
    #         net 0 − 10.00 − 49.00 = −59.00
    g = statements["grocer"]
    assert (g["issued_points"], g["redeemed_points"]) == (1000, 0)
    assert (g["payable"], g["receivable"], g["collected"], g["net"]) == \
        ("10.00", "0", "49.00", "-59.00")
    # fuel: issued 300 × 0.0090 = 2.70; redeemed 200 × 0.0085 = 1.70; collected 9.99
    #       net 1.70 − 2.70 − 9.99 = −10.99
    f = statements["fuel"]
    assert (f["issued_points"], f["redeemed_points"]) == (300, 200)
    assert (f["payable"], f["receivable"], f["collected"], f["net"]) == \
        ("2.70", "1.70", "9.99", "-10.99")
    for code, lines in SETTLED[model]["lines"].items():
        assert [(line["type"], line["counterparty"], line["points"], line["amount"])
                for line in statements[code]["lines"]] == lines, code
    assert run["matrix"]["cells"] == [
        {"origin": "grocer", "redeemed_at": "fuel", "points": 200}]
    assert run["payments"] == [
        {"from": a, "to": b, "amount": amount, "currency": "GBP", "model": model}
        for a, b, amount in SETTLED[model]["payments"]]
    for s in run["statements"]:  # the instructions in and out add up to each net
        paid = sum((Decimal(p["amount"]) * (1 if p["to"] == s["partner"] else -1)
                    for p in run["payments"] if s["partner"] in (p["from"], p["to"])),
                   Decimal(0))
        assert paid == Decimal(s["net"]), s["partner"]

    coalition = run["coalition"]
    # the 500 points ann spent on her club membership: redeemed by the coalition itself
    assert coalition["memberships"] == {
        "points": 500, "collected": [{"currency": "GBP", "amount": "58.99"}]}
    # outstanding: ann's grocer lot 1000 − 500 − 200 = 300; bob's fuel lot 300
    assert coalition["outstanding"] == {"points": 600, "by_origin": [
        {"partner": "fuel", "points": 300}, {"partner": "grocer", "points": 300}]}
    # the coalition is owed 59.00 + 10.99 = 69.99: the margin on points (10.00 + 2.70 −
    # 1.70 = 11.00) and the memberships sold for money (58.99)
    assert coalition["margin"] == [{"currency": "GBP", "amount": "11.00"}]
    assert coalition["position"] == [{"currency": "GBP", "amount": "69.99"}]

    # the liability counts the membership's points as recognised on redemption: the
    # points issued (1300) less redeemed (500 + 200) leave the 600 outstanding
    liability = client.get(f"/v1/settlement/runs/{run['id']}/liability",
                           headers=operator_headers)
    assert liability.status_code == 200, liability.get_json()
    cohorts = liability.get_json()["cohorts"]
    assert sum(c["outstanding_points"] for c in cohorts) == 600
    (roll,) = liability.get_json()["rollforward"]
    assert Decimal(roll["opening"]) + Decimal(roll["issued"]) \
        - Decimal(roll["recognised_on_redemption"]) - Decimal(roll["recognised_as_breakage"]) \
        + Decimal(roll["estimate_change"]) == Decimal(roll["closing"])

    # analytics: the membership's points are redeemed by the coalition, in its own row
    month = start.strftime("%Y-%m")
    months = client.get(f"/v1/analytics?from={month}&to={month}",
                        headers=operator_headers).get_json()["months"]
    redeemed = {m["partner"]: m["redeemed"] for m in months if m["month"] == month}
    assert (redeemed["coalition"], redeemed["fuel"], redeemed["grocer"]) == (500, 200, 0)

    closed = client.post(f"/v1/settlement/runs/{run['id']}/close", headers=operator_headers)
    assert closed.status_code == 200, closed.get_json()
    assert closed.get_json()["digest"] == run["digest"]
    assert_clean()
