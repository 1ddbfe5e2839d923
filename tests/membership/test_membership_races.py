"""Paid membership under real concurrency, on PostgreSQL: purchases racing each other (by
the member with points, by partners with money) give one membership and one entry, and
two daily runs at once renew once. Real threads, each its own transaction; the races are
PostgreSQL's own (the wallet lock, the unique index on the current membership)."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from coalition.db import read
from coalition.errors import CoalitionError
from coalition.ledger.booking import partner_ref
from coalition.ledger.daily import daily
from coalition.membership import purchase
from coalition.models import Partner
from tests.factories.ledger import PRICED_FROM
from tests.factories.member_records import assert_clean, entries_of, member_id
from tests.factories.partner_api import publish
from tests.membership.test_membership import PLANS, member_with, rows

pytestmark = pytest.mark.postgres


@pytest.fixture
def acme(make_partner, client, operator_headers):

    publish(client, operator_headers, memberships=PLANS)
    return make_partner("acme", valid_from=PRICED_FROM)


def race(app: Flask, calls: list[Any]) -> list[str]:
    """Run every call at once (released by a barrier); each one's outcome: ``ok``, or the
    error code it was refused with."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[str] = [""] * len(calls)

    def run(index: int, call: Any) -> None:
        with app.app_context():
            barrier.wait(timeout=30)
            try:
                call()
                outcomes[index] = "ok"
            except CoalitionError as refused:
                outcomes[index] = refused.code
            except Exception as failed:  # noqa: BLE001 - reported, so the test names it
                outcomes[index] = f"crash: {failed!r}"

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a racing purchase hung"
    return outcomes


def test_purchases_at_once_give_one_membership(app, client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 5000)
    ref = member_id(ann)
    with read() as session:
        acme_ref = partner_ref(session, session.scalars(
            select(Partner.id).where(Partner.code == "acme")).one())

    def with_points(key: str) -> Any:
        return lambda: purchase.buy_with_points(ref, "club", request_id=key)

    def with_money(txn: str) -> Any:
        return lambda: purchase.record_money_purchase(acme_ref, {
            "member_number": ann, "plan": "club", "partner_txn_id": txn,
            "price": {"amount": Decimal("9.99"), "currency": "GBP"}})

    outcomes = race(app, [with_points(f"k{i}") for i in range(4)]
                    + [with_money(f"till-{i}") for i in range(3)])
    assert Counter(outcomes) == {"ok": 1, "membership_active": 6}, outcomes
    assert len(rows(ann)) == 1
    assert len(entries_of(ref, "membership")) == 1
    assert_clean()


def test_two_daily_runs_at_once_renew_once(app, client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 5000)
    assert purchase.buy_with_points(member_id(ann), "club").body["auto_renew"] is True
    day = rows(ann)[0].ends_at.date()
    outcomes = race(app, [lambda: daily(day), lambda: daily(day), lambda: daily(day)])
    assert outcomes == ["ok", "ok", "ok"]
    statuses = [r.status for r in rows(ann)]
    assert statuses == ["renewed", "active"]
    assert len(entries_of(member_id(ann), "membership")) == 2
    assert_clean()
