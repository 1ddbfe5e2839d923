"""Properties of the points liability and of the program analytics, over random histories.

Each example books three months (2001-01 … 2001-03) of random earns, burns, holds captured
or voided, earn reversals, transfers, donations, expiry runs and a redeem rate change, on
the test's clock, then measures the liability of March under a random money model, breakage
prior and history threshold, and checks:

(a) the roll-forward balances to the cent per currency: opening + issued −
    recognised_on_redemption − recognised_as_breakage + estimate_change = closing, and the
    closing is the sum of the cohorts' expected costs;
(b) every cohort's expected cost is outstanding × (1 − breakage rate) × unit cost, rounded
    half even to the cent;
(c) in points, per origin: opening + issued − redeemed − expired − forfeited = closing;
    measured from the beginning, issued − redeemed − expired − forfeited = outstanding, per
    origin and in total, and the outstanding agrees with the settlement run's own figure
    (another query) and with the members' wallets;
(d) the points issued at each partner agree with the analytics (postings, another query);
(e) measuring again gives the same document; with nothing new booked, a period whose
    estimate did not change shows no change of estimate beyond the rounding of its lines;
(f) each cohort is valued at the breakage rate of its age (months from its month to the
    period end's), listed by age; at age 0 the rate is the closed cohorts' points lapsed ÷
    points that stayed (or the prior, with fewer closed cohorts than asked for), and
    every rate lies in [0, 1].
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from coalition.db import read
from coalition.ledger.models import LotMovement, Member, Wallet
from coalition.models import Partner
from coalition.money import round_money
from tests.conftest import empty_all_tables
from tests.factories.partner_api import enrol
from tests.factories.settlement import operator_headers_now, run_ok

pytestmark = pytest.mark.slow

SETTINGS = settings(
    max_examples=int(os.environ.get("LIABILITY_EXAMPLES", "15")), deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
START, END = datetime(2001, 3, 1, tzinfo=UTC), datetime(2001, 4, 1, tzinfo=UTC)
RATE = st.integers(1, 200).map(lambda n: Decimal(n) / 10000)

OP = st.one_of(
    st.tuples(st.just("earn"), st.integers(0, 2), st.integers(0, 3), st.integers(1, 500)),
    st.tuples(st.just("burn"), st.integers(0, 2), st.integers(0, 3), st.integers(1, 300)),
    st.tuples(st.just("hold"), st.integers(0, 2), st.integers(0, 3), st.integers(1, 300),
              st.booleans()),
    st.tuples(st.just("reverse"), st.integers(0, 50), st.integers(1, 200)),
    st.tuples(st.just("transfer"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 200)),
    st.tuples(st.just("donate"), st.integers(0, 3), st.integers(1, 200)),
    st.tuples(st.just("expire")),
)


def publish(client, headers, months: int) -> None:
    response = client.put("/v1/admin/program", headers=headers, json={
        "expiry": {"policy": "fixed", "months": months},
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]})
    assert response.status_code == 200, response.get_json()


@pytest.fixture
def reset(app):
    return lambda: empty_all_tables(app)


@SETTINGS
@given(rates=st.lists(st.tuples(RATE, st.sampled_from(["GBP", "EUR"])), min_size=3,
                      max_size=3),
       ops=st.lists(st.tuples(st.integers(0, 89), OP), min_size=5, max_size=40),
       months=st.integers(1, 2), new_rate=RATE, model=st.sampled_from(["operator", "clearing"]),
       prior=st.integers(0, 99).map(lambda n: Decimal(n) / 100), min_cohorts=st.integers(1, 4))
def test_liability_balances_and_agrees(app, client, make_partner, clock, reset, rates, ops,
                                       months, new_rate, model, prior, min_cohorts):
    from coalition.ledger.jobs import expire
    from coalition.ledger.transfers import donate, transfer
    from partners.service import add_rate_card
    from settlement.liability import Prior, liability

    reset()
    operator = operator_headers_now(client)
    since = datetime(2000, 12, 1, tzinfo=UTC)
    clock.set(since + timedelta(days=1))
    partners = []
    for n, (rate, currency) in enumerate(rates):
        kind = "charity" if n == 2 else "merchant"
        partners.append(make_partner(f"p{n}", kind=kind, currency=currency,
                                     redeem_rate=rate, valid_from=since)[1])
    publish(client, operator, months)
    numbers = [enrol(client, partners[0], f"m{n}") for n in range(4)]
    with read() as session:
        ids = [session.scalar(select(Member.id).where(Member.member_number == number))
               for number in numbers]
    earns: list[tuple[int, str]] = []
    txn = 0
    begin = datetime(2001, 1, 1, tzinfo=UTC)
    rate_changed = False
    for day, op in sorted(ops, key=lambda o: o[0]):
        clock.set(begin + timedelta(days=day, minutes=txn))
        if not rate_changed and clock.now >= datetime(2001, 3, 15, tzinfo=UTC):
            add_rate_card("p0", clock.now - timedelta(seconds=1), redeem_rate=new_rate,
                          issue_price=Decimal("0.01"))
            rate_changed = True
        txn += 1
        name = op[0]
        if name == "earn":
            p = op[1] % 2  # the charity issues nothing
            answer = client.post("/v1/earn", headers=partners[p], json={
                "member_number": numbers[op[2]], "partner_txn_id": f"t{txn}",
                "points": op[3]})
            assert answer.status_code == 201, answer.get_json()
            earns.append((p, answer.get_json()["id"]))
        elif name == "burn":
            answer = client.post("/v1/burn", headers=partners[op[1] % 2], json={
                "member_number": numbers[op[2]], "partner_txn_id": f"t{txn}",
                "points": op[3]})
            assert answer.status_code in (201, 409), answer.get_json()
        elif name == "hold":
            p = op[1] % 2
            answer = client.post("/v1/holds", headers=partners[p], json={
                "member_number": numbers[op[2]], "partner_txn_id": f"t{txn}",
                "points": op[3]})
            assert answer.status_code in (201, 409), answer.get_json()
            if answer.status_code == 201:
                action = "capture" if op[4] else "void"
                body = {"partner_txn_id": f"t{txn}c"}
                if op[4] and op[3] > 1:
                    body["points"] = op[3] // 2
                closed = client.post(f"/v1/holds/{answer.get_json()['id']}/{action}",
                                     headers=partners[p], json=body)
                assert closed.status_code in (200, 201), closed.get_json()
        elif name == "reverse" and earns:
            p, entry = earns[op[1] % len(earns)]
            answer = client.post(f"/v1/transactions/{entry}/reversals", headers=partners[p],
                                 json={"partner_txn_id": f"t{txn}", "points": op[2]})
            assert answer.status_code in (201, 409, 422), answer.get_json()
        elif name == "transfer" and op[1] != op[2]:
            try:
                transfer(ids[op[1]], numbers[op[2]], op[3])
            except Exception as refused:  # noqa: BLE001 - insufficient points, limits
                assert getattr(refused, "status", None) == 409, refused
        elif name == "donate":
            try:
                donate(ids[op[1]], "p2", op[2])
            except Exception as refused:  # noqa: BLE001
                assert getattr(refused, "status", None) == 409, refused
        elif name == "expire":
            expire(clock.now)
    clock.set(datetime(2001, 5, 2, tzinfo=UTC))

    publish_model = client.put("/v1/admin/program", headers=operator, json={
        "expiry": {"policy": "fixed", "months": months}, "settlement_model": model,
        "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]})
    assert publish_model.status_code == 200
    everything = run_ok(client, operator, datetime(2000, 12, 1, tzinfo=UTC), END)
    chosen = Prior(prior, min_cohorts)
    with read() as session:
        march = liability(session, START, END, model, chosen)
        again = liability(session, START, END, model, chosen)
        whole = liability(session, datetime(2000, 12, 1, tzinfo=UTC), END, model, chosen)
        wallets = session.execute(select(func.sum(Wallet.available + Wallet.pending
                                                  + Wallet.held))).scalar() or 0
    assert march == again  # (e)

    for doc in (march, whole):
        # (f)
        estimate = doc["estimate"]
        by_age = {r["age"]: r for r in estimate["by_age"]}
        end = datetime.fromisoformat(doc["period_end"])
        for c in doc["cohorts"]:
            year, month = map(int, c["earned_month"].split("-"))
            age = max(end.year * 12 + end.month - (year * 12 + month), 0)
            assert c["breakage_rate"] == by_age[age]["breakage_rate"], (c, by_age)
        assert all(0 <= Decimal(r["breakage_rate"]) <= 1 for r in by_age.values())
        closed = doc["closed_cohorts"]
        if len(closed) >= min_cohorts:
            assert by_age[0]["basis"] == "history"
            assert Decimal(by_age[0]["breakage_rate"]) == (
                Decimal(sum(c["lapsed_points"] for c in closed))
                / sum(c["points"] for c in closed)).quantize(Decimal("0.000001"))
        else:
            assert (by_age[0]["basis"], by_age[0]["breakage_rate"]) == (
                "prior", format(chosen.rate.quantize(Decimal("0.000001")), "f"))
        # (a)
        expected_by_currency: dict[str, Decimal] = defaultdict(Decimal)
        for c in doc["cohorts"]:
            if c["currency"] is None:
                continue
            # (b)
            exact = (c["outstanding_points"] * (1 - Decimal(c["breakage_rate"]))
                     * Decimal(c["unit_cost"]))
            assert Decimal(c["expected_cost"]) == round_money(exact, c["currency"]), c
            expected_by_currency[c["currency"]] += Decimal(c["expected_cost"])
        for r in doc["rollforward"]:
            opening, closing = Decimal(r["opening"]), Decimal(r["closing"])
            assert (opening + Decimal(r["issued"]) - Decimal(r["recognised_on_redemption"])
                    - Decimal(r["recognised_as_breakage"]) + Decimal(r["estimate_change"])
                    == closing), r
            assert closing == expected_by_currency[r["currency"]], r
        # (c)
        for p in doc["points"]:
            assert (p["opening"] + p["issued"] - p["redeemed"] - p["expired"]
                    - p["forfeited"] == p["closing"]), p
        by_origin = defaultdict(int)
        for c in doc["cohorts"]:
            by_origin[c["origin"]] += 0
        closing_by_origin = {p["origin"]: p["closing"] for p in doc["points"] if p["closing"]}
        cohort_points: dict[str, int] = defaultdict(int)
        seen = set()
        for c in doc["cohorts"]:
            if (c["origin"], c["earned_month"]) not in seen:
                seen.add((c["origin"], c["earned_month"]))
                cohort_points[c["origin"]] += c["outstanding_points"]
        assert {o: n for o, n in cohort_points.items() if n} == closing_by_origin
    assert all(p["opening"] == 0 for p in whole["points"])
    assert {p["origin"]: p["closing"] for p in whole["points"] if p["closing"]} == {
        o["partner"]: o["points"] for o in everything["coalition"]["outstanding"]["by_origin"]}
    assert sum(p["closing"] for p in whole["points"]) == wallets
    assert whole["rollforward"] == [] or all(
        r["opening"] in ("0", "0.00") for r in whole["rollforward"])

    # (d) the issued points by partner, from the postings, against the liability's by the
    # lots' origin: the same, but for an earn reversal that took points from another
    # partner's lots (its own lot had expired or been spent): the analytics give the
    # points back to the reversing partner, the liability takes them from the lots' origin
    issued = client.get("/v1/analytics?from=2000-12&to=2001-03", headers=operator).get_json()
    by_partner: dict[str, int] = defaultdict(int)
    for r in issued["months"]:
        by_partner[r["partner"]] += r["issued"]
    by_origin: dict[str, int] = defaultdict(int)
    for p in whole["points"]:
        by_origin[p["origin"]] += p["issued"]
    mv, pa = LotMovement.__table__.c, Partner.__table__.c
    with read() as session:
        codes = dict(session.execute(select(pa.id, pa.code)).all())
        for origin, reverser, points in session.execute(
                select(mv.origin_partner_id, mv.entry_partner_id, mv.points)
                .where(mv.entry_kind == "earn_reversal",
                       mv.origin_partner_id != mv.entry_partner_id)):
            by_origin[codes[reverser]] += points  # (points taken: below zero)
            by_origin[codes[origin]] -= points
    assert {k: v for k, v in by_partner.items() if v} == {
        k: v for k, v in by_origin.items() if v}
