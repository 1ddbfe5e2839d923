"""Properties of the catalog over random histories: members redeem rewards of small stock,
tills use some vouchers, time passes and the daily job refunds or forfeits the rest. After
each history:

(a) ``coalition ledger check`` passes (the catalog's own check among them);
(b) no reward sold more than its stock, and its units sold are its vouchers;
(c) each member's available points are what was earned less the vouchers not refunded;
(d) no voucher was used at or after its expiry, and every voucher past its expiry when the
    job last ran is closed (refunded, or forfeited under that rule).
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from coalition.catalog import redemptions, vouchers
from coalition.catalog.expiry import close_expired
from coalition.catalog.models import Reward, Voucher
from coalition.db import read
from coalition.errors import CoalitionError
from coalition.ledger.check import check_ledger
from coalition.ledger.models import Wallet
from partners.service import partner_id
from tests.conftest import bearer, empty_all_tables, fetch_token
from tests.factories.ledger import PRICED_FROM
from tests.factories.member_records import member_id
from tests.factories.partner_api import earn, enrol, publish
from tests.factories.tokens import operator_client

SETTINGS = settings(
    max_examples=int(os.environ.get("CATALOG_EXAMPLES", "12")), deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EARNED = 1000
#: each example starts a second later than the one before: its rules are published at a
#: moment of their own (parsed rules are cached per version and publication time)
_EXAMPLES = itertools.count()

OP = st.one_of(
    st.tuples(st.just("redeem"), st.integers(0, 2), st.integers(0, 1)),
    st.tuples(st.just("use"), st.integers(0, 20)),
    st.tuples(st.just("wait"), st.integers(1, 20)),
    st.tuples(st.just("daily")),
)


@SETTINGS
@given(ops=st.lists(OP, max_size=25), unused=st.sampled_from(["refund", "forfeit"]))
# one voucher left unused under each rule, one after the other
@example(ops=[("redeem", 0, 0), ("wait", 10), ("daily",)], unused="refund")
@example(ops=[("redeem", 0, 0), ("wait", 10), ("daily",)], unused="forfeit")
def test_random_histories_keep_the_catalog_and_the_ledger_consistent(
        app, client, make_partner, clock, ops, unused):
    empty_all_tables(app)
    clock.set(T0 + timedelta(seconds=next(_EXAMPLES)))
    operator = operator_client()  # each example starts from empty tables
    headers = bearer(fetch_token(client, operator["client_id"], operator["client_secret"]))
    publish(client, headers, vouchers={"valid_days": 10, "unused": unused})
    _, acme = make_partner("acme", valid_from=PRICED_FROM)
    acme_id = partner_id("acme")
    rewards = [client.post("/v1/rewards", headers=acme, json={
        "name": name, "kind": "voucher", "points": points, "stock": stock,
        "per_member_limit": 3}).get_json()["id"]
        for name, points, stock in (("Ticket", 300, 4), ("Coffee", 70, 5))]
    members = []
    for i in range(3):
        number = enrol(client, acme, f"m{i}")
        earn(client, acme, number, f"e{i}", points=EARNED)
        members.append(member_id(number))
    codes: list[str] = []
    last_daily = None
    for op_ in ops:
        if op_[0] == "redeem":
            try:
                codes.append(redemptions.redeem(members[op_[1]], rewards[op_[2]])
                             .body["voucher_code"])
            except CoalitionError as refused:
                assert refused.code in ("out_of_stock", "insufficient_points"), refused
        elif op_[0] == "use" and codes:
            try:
                vouchers.use(acme_id, codes[op_[1] % len(codes)])
            except CoalitionError as refused:
                assert refused.code in ("voucher_used", "voucher_expired"), refused
        elif op_[0] == "wait":
            clock.advance(days=op_[1])
        elif op_[0] == "daily":
            last_daily = clock()
            close_expired(last_daily)

    report = check_ledger()
    assert report.ok, report.to_dict()
    with read() as session:
        all_vouchers = session.scalars(select(Voucher)).all()
        for reward in session.scalars(select(Reward)):
            sold = [v for v in all_vouchers if v.reward_id == reward.id]
            assert reward.sold == len(sold) <= (reward.stock or 0)
        for member in members:
            kept = sum(v.points for v in all_vouchers
                       if v.member_id == member and v.status != "refunded")
            assert session.get_one(Wallet, member).available == EARNED - kept
        for v in all_vouchers:
            assert v.used_at is None or v.used_at < v.expires_at
            if last_daily is not None and v.expires_at <= last_daily:
                assert v.status in ("used", "refunded" if unused == "refund" else "forfeited")
            assert (v.status == "refunded") == (v.refund_entry_id is not None)
