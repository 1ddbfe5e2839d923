"""A settlement period worked by hand: every figure below is computed in the comments.

Partners (all GBP):  grocer  earn 1/GBP, issue 0.0100, redeem 0.0080
                             → from mid-period: issue 0.0120, redeem 0.0090
                     fuel    earn 2/GBP, issue 0.0090, redeem 0.0085
                     charity (kind charity)  redeem 0.0100
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from coalition.db import utcnow
from coalition.errors import PeriodClosed
from tests.conftest import bearer, fetch_token
from tests.factories.partner_api import burn, earn, enrol, hold, post_ok


def rules(months: int, model: str = "operator") -> dict:
    return {"expiry": {"policy": "fixed", "months": months}, "settlement_model": model,
            "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]}


def publish(client, operator_headers, months: int, model: str = "operator") -> None:
    response = client.put("/v1/admin/program", json=rules(months, model),
                          headers=operator_headers)
    assert response.status_code == 200, response.get_json()


#: the same period paid under each money model. The statements' nets are the same (grocer
#: −11.52, fuel −4.65, charity 2.00, the coalition's margin 14.17); who pays whom differs.
SETTLED = {
    # every partner settles its net with the coalition, one instruction each
    "operator": {
        "obligations": [
            {"from": "coalition", "to": "charity", "points": None, "amount": "2.00",
             "currency": "GBP"},
            {"from": "fuel", "to": "coalition", "points": None, "amount": "4.65",
             "currency": "GBP"},
            {"from": "grocer", "to": "coalition", "points": None, "amount": "11.52",
             "currency": "GBP"}],
        "payments": [("coalition", "charity", "2.00"), ("fuel", "coalition", "4.65"),
                     ("grocer", "coalition", "11.52")],
        "lines": {"grocer": [("issued", "coalition", 1080, "10.80"),
                             ("issued", "coalition", 150, "1.80"),
                             ("redeemed", "coalition", 120, "1.08")]},
    },
    # obligations at the redeemer's rate: fuel→grocer 120 × 0.0090 = 1.08, grocer→charity
    # 200 × 0.0100 = 2.00, grocer→fuel 300 × 0.0085 = 2.55; the coalition's fees make up
    # the rest of each net: grocer −11.52 − (1.08 − 2.00 − 2.55) = −8.05, fuel −4.65 −
    # (2.55 − 1.08) = −6.12, charity 2.00 − 2.00 = 0. Netting: debts grocer 11.52, fuel
    # 4.65; claims coalition 14.17, charity 2.00 → three instructions (n − 1 = 3)
    "clearing": {
        "obligations": [
            {"from": "fuel", "to": "grocer", "points": 120, "amount": "1.08",
             "currency": "GBP"},
            {"from": "grocer", "to": "charity", "points": 200, "amount": "2.00",
             "currency": "GBP"},
            {"from": "grocer", "to": "fuel", "points": 300, "amount": "2.55",
             "currency": "GBP"},
            {"from": "fuel", "to": "coalition", "points": None, "amount": "6.12",
             "currency": "GBP"},
            {"from": "grocer", "to": "coalition", "points": None, "amount": "8.05",
             "currency": "GBP"}],
        "payments": [("grocer", "coalition", "11.52"), ("fuel", "coalition", "2.65"),
                     ("fuel", "charity", "2.00")],
        "lines": {"grocer": [("owed", "fuel", 120, "1.08"), ("owes", "charity", 200, "2.00"),
                             ("owes", "fuel", 300, "2.55"),
                             ("fee_payable", "coalition", None, "8.05")],
                  "charity": [("owed", "grocer", 200, "2.00")]},
    },
}


@pytest.mark.parametrize("model", ["operator", "clearing"])
def test_hand_worked_period(app, client, make_partner, operator_headers, clock, model):
    from coalition.ledger.jobs import expire
    from partners.service import add_rate_card

    # periods are honoured to the second: whole-second boundaries around everything booked
    start = clock.set(clock().replace(microsecond=0) + timedelta(seconds=1))
    _, grocer = make_partner("grocer", earn_rate=Decimal("1"), issue_price=Decimal("0.0100"),
                             redeem_rate=Decimal("0.0080"), valid_from=start)
    _, fuel = make_partner("fuel", earn_rate=Decimal("2"), issue_price=Decimal("0.0090"),
                           redeem_rate=Decimal("0.0085"), valid_from=start)
    _, charity = make_partner("charity", kind="charity", earn_rate=Decimal("0"),
                              issue_price=Decimal("0"), redeem_rate=Decimal("0.0100"),
                              valid_from=start)
    ann, bob, cy = (enrol(client, grocer, ref) for ref in ("ann", "bob", "cy"))

    # cy's 80 points expire after one month; everything else after twelve
    publish(client, operator_headers, months=1)
    earn(client, grocer, cy, "g-cy", points=80)
    publish(client, operator_headers, months=12, model=model)

    earn(client, grocer, ann, "g1", points=1000)                              # grocer card 1
    earn(client, fuel, bob, "f1", spend={"amount": "250.00", "currency": "GBP"})  # 500 points
    late = (start - timedelta(days=3)).replace(microsecond=0)
    earn(client, fuel, ann, "f2", points=300, occurred_at=late.isoformat())  # flagged late

    add_rate_card("grocer", clock.advance(milliseconds=1), issue_price=Decimal("0.0120"),
                  redeem_rate=Decimal("0.0090"))
    clock.advance(milliseconds=2)

    g2 = earn(client, grocer, ann, "g2", points=200)                          # grocer card 2
    post_ok(client, f"/v1/transactions/{g2['id']}/reversals", grocer,
            {"partner_txn_id": "g2-r", "points": 50})                        # issued 150 net
    f3 = burn(client, fuel, ann, "f3", points=400)        # from ann's grocer lot (earliest)
    held = hold(client, grocer, bob, "gh", points=300)    # bob's only lot: fuel's 500
    post_ok(client, f"/v1/holds/{held['id']}/capture", grocer,
            {"partner_txn_id": "gc", "points": 120})      # 120 redeemed, 180 back
    post_ok(client, f"/v1/transactions/{f3['id']}/reversals", fuel,
            {"partner_txn_id": "f3-r", "points": 100})   # 100 back to the grocer lot
    burn(client, charity, ann, "c1", points=200)          # a donation: grocer lot again

    summary = expire(utcnow() + timedelta(days=40))       # cy's 80 points: breakage
    assert summary.points_expired == 80
    end = clock.set(utcnow().replace(microsecond=0) + timedelta(seconds=1))

    created = client.post("/v1/settlement/runs", headers=operator_headers, json={
        "period_start": start.isoformat(), "period_end": end.isoformat()})
    assert created.status_code == 201, created.get_json()
    run = created.get_json()
    statements = {s["partner"]: s for s in run["statements"]}

    # grocer: issued 1080 at 0.0100 = 10.80 and 150 at 0.0120 = 1.80 → payable 12.60;
    #         redeemed 120 at 0.0090 = 1.08; net 1.08 − 12.60 = −11.52
    g = statements["grocer"]
    assert (g["issued_points"], g["redeemed_points"]) == (1230, 120)
    assert (g["payable"], g["receivable"], g["net"]) == ("12.60", "1.08", "-11.52")
    assert run["model"] == model and all(s["model"] == model for s in run["statements"])
    for code, lines in SETTLED[model]["lines"].items():
        assert [(line["type"], line["counterparty"], line["points"], line["amount"])
                for line in statements[code]["lines"]] == lines
    if model == "operator":
        assert [(line["rate"], line["rate_valid_from"] is not None)
                for line in g["lines"]] == [("0.01", True), ("0.012", True), ("0.009", True)]
    # fuel: issued 800 at 0.0090 = 7.20; redeemed 400 − 100 = 300 at 0.0085 = 2.55
    f = statements["fuel"]
    assert (f["issued_points"], f["redeemed_points"]) == (800, 300)
    assert (f["payable"], f["receivable"], f["net"]) == ("7.20", "2.55", "-4.65")
    assert f["late_entries"]["count"] == 1
    assert f["late_entries"]["entries"][0]["partner_txn_id"] == "f2"
    # charity: 200 donated at 0.0100 = 2.00
    c = statements["charity"]
    assert (c["issued_points"], c["redeemed_points"]) == (0, 200)
    assert (c["payable"], c["receivable"], c["net"]) == ("0", "2.00", "2.00")

    # whose points were spent where
    assert run["matrix"]["cells"] == [
        {"origin": "fuel", "redeemed_at": "grocer", "points": 120},
        {"origin": "grocer", "redeemed_at": "charity", "points": 200},
        {"origin": "grocer", "redeemed_at": "fuel", "points": 300},
    ]
    assert run["obligations"] == SETTLED[model]["obligations"]
    # each partner's position is its statement's net, whatever the model
    assert run["positions"] == [
        {"party": "charity", "currency": "GBP", "amount": "2.00"},
        {"party": "fuel", "currency": "GBP", "amount": "-4.65"},
        {"party": "grocer", "currency": "GBP", "amount": "-11.52"},
    ]
    assert run["payments"] == [
        {"from": a, "to": b, "amount": amount, "currency": "GBP", "model": model}
        for a, b, amount in SETTLED[model]["payments"]]
    for s in run["statements"]:  # the instructions in and out add up to the net
        paid = sum((Decimal(p["amount"]) * (1 if p["to"] == s["partner"] else -1)
                    for p in run["payments"] if s["partner"] in (p["from"], p["to"])),
                   Decimal(0))
        assert paid == Decimal(s["net"]), s["partner"]
    coalition = run["coalition"]
    assert coalition["breakage"] == {"points": 80,
                                     "by_origin": [{"partner": "grocer", "points": 80}]}
    # outstanding: grocer lots 1000−400+100−200 + 200−50 = 650; fuel lots 500−120 + 300 = 680
    assert coalition["outstanding"] == {"points": 1330, "by_origin": [
        {"partner": "fuel", "points": 680}, {"partner": "grocer", "points": 650}]}
    # the coalition keeps 12.60 + 7.20 − 1.08 − 2.55 − 2.00 = 14.17
    assert coalition["margin"] == [{"currency": "GBP", "amount": "14.17"}]
    assert coalition["position"] == [{"currency": "GBP", "amount": "14.17"}]

    # partners read their own statement, never another's
    from partners.service import issue_partner_client

    issued = issue_partner_client("fuel", ["settlement:read"])
    reader = bearer(fetch_token(client, issued.client_id, issued.client_secret))
    own = client.get(f"/v1/settlement/runs/{run['id']}/statements/fuel", headers=reader)
    assert own.status_code == 404  # drafts are finance's until closed
    closed = client.post(f"/v1/settlement/runs/{run['id']}/close", headers=operator_headers)
    assert closed.status_code == 200, closed.get_json()
    assert closed.get_json()["digest"] == run["digest"]
    own = client.get(f"/v1/settlement/runs/{run['id']}/statements/fuel", headers=reader)
    assert own.status_code == 200 and own.get_json()["net"] == "-4.65"
    other = client.get(f"/v1/settlement/runs/{run['id']}/statements/grocer", headers=reader)
    assert other.status_code == 404
    as_csv = client.get(f"/v1/settlement/runs/{run['id']}/statements/fuel",
                        headers={**reader, "Accept": "text/csv"})
    assert as_csv.mimetype == "text/csv"
    assert as_csv.get_data(as_text=True).splitlines()[-1] == f"fuel,GBP,{model},,,net,,,,,-4.65"


def test_a_closed_period_is_frozen(app, client, make_partner, operator_headers, clock):
    from partners.service import add_rate_card
    from tests.conftest import snapshot

    start = utcnow().replace(microsecond=0)
    _, acme = make_partner("acme", valid_from=start)
    member = enrol(client, acme, "m1")
    earn(client, acme, member, "e1", points=100)
    end = clock.set(start + timedelta(seconds=1))
    period = {"period_start": start.isoformat(), "period_end": end.isoformat()}
    run = client.post("/v1/settlement/runs", headers=operator_headers, json=period).get_json()
    again = client.post(f"/v1/settlement/runs/{run['id']}/recompute", headers=operator_headers)
    assert again.get_json()["digest"] == run["digest"]  # a draft is reproducible
    closed = client.post(f"/v1/settlement/runs/{run['id']}/close", headers=operator_headers)
    assert closed.status_code == 200

    before = snapshot(app)
    for method, path, body in [
        ("post", f"/v1/settlement/runs/{run['id']}/close", None),
        ("post", f"/v1/settlement/runs/{run['id']}/recompute", None),
        ("delete", f"/v1/settlement/runs/{run['id']}", None),
        ("post", "/v1/settlement/runs", period),
        ("post", "/v1/admin/partners/acme/rates",
         {"valid_from": start.isoformat(), "issue_price": "0.5"}),
    ]:
        response = getattr(client, method)(path, headers=operator_headers, json=body)
        assert response.status_code == 409, (path, response.get_json())
        assert response.get_json()["error"] in ("period_closed", "period_overlap")
    with pytest.raises(PeriodClosed):
        add_rate_card("acme", start + timedelta(milliseconds=500), issue_price=Decimal("1"))
    assert snapshot(app) == before
