"""The settlement fence: no booking commits into a period that is closed or being closed,
and a rate card and a close are ordered by the one lock. The races run on PostgreSQL.

Everything reads the test's clock (tests/settlement/conftest.py): the bookings are in the
period [S, S + 10 s), and the runs and the rate cards come once it has ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from coalition.db import db, read
from coalition.errors import CoalitionError
from coalition.ledger.models import Entry, Member, Wallet
from settlement.compute import compute
from settlement.service import close_run, create_run, digest, get_run
from tests.conftest import snapshot
from tests.factories.partner_api import enrol, post_ok
from tests.factories.settlement import T0

S = T0
E = S + timedelta(seconds=10)


class Worker(threading.Thread):
    """Runs ``call`` in the app's context and keeps its result or its domain error."""

    def __init__(self, app: Flask, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.app, self.call = app, call
        self.result: Any = None
        self.error: CoalitionError | None = None

    def run(self) -> None:
        with self.app.app_context():
            try:
                self.result = self.call()
            except CoalitionError as exc:
                self.error = exc

    def outcome(self, timeout: float = 30) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "still waiting"
        return self.error if self.error is not None else self.result


def waiting_on_a_lock(count: int = 1, timeout: float = 10) -> None:
    """Until ``count`` backends of this database wait for a lock."""
    deadline = time.monotonic() + timeout
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock'")
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            if conn.execute(query).scalar() >= count:
                return
        time.sleep(0.02)
    raise AssertionError(f"no {count} backend(s) waiting for a lock")


def figures_now(run_id: int) -> str:
    """The digest of the run's period computed from the journal as it is now."""
    run = get_run(run_id)
    with read() as session:
        return digest(compute(session, run["period_start"], run["period_end"]))


@pytest.fixture
def booked(app, client, make_partner, clock) -> dict[str, Any]:
    """acme, with an earn and a burn by ann in [S, E); the clock then at E."""
    clock.set(S - timedelta(minutes=5))
    acme, headers = make_partner("acme", valid_from=S - timedelta(days=1))
    member = enrol(client, headers, "ann")
    clock.set(S + timedelta(seconds=1))
    post_ok(client, "/v1/earn", headers, {"member_number": member, "partner_txn_id": "e1",
                                          "points": 100})
    post_ok(client, "/v1/burn", headers, {"member_number": member, "partner_txn_id": "b1",
                                          "points": 40})
    with read() as session:
        member_id = session.scalar(select(Member.id).where(Member.member_number == member))
    clock.set(E)  # the period has ended
    return {"headers": headers, "member": member, "member_id": member_id}


def test_nothing_is_booked_into_a_closed_period(app, client, booked, clock) -> None:
    """Any entry (a partner's earn, a coalition-funded bonus) whose booked_at falls in a
    closed period is refused with period_closed and writes nothing."""
    from tests.factories.ledger import book_bonus

    run = create_run(S, E, "finance")
    close_run(run["id"], "finance")
    before = snapshot(app)
    clock.set(S + timedelta(seconds=5))  # a clock that stays inside the closed period
    response = client.post("/v1/earn", headers=booked["headers"], json={
        "member_number": booked["member"], "partner_txn_id": "late", "points": 7})
    assert response.status_code == 409 and response.get_json()["error"] == "period_closed"
    with pytest.raises(CoalitionError) as refused:
        book_bonus(booked["member_id"], 5, S + timedelta(seconds=6))
    assert refused.value.code == "period_closed"
    assert snapshot(app) == before
    clock.set(E)
    post_ok(client, "/v1/earn", booked["headers"], {"member_number": booked["member"],
                                                    "partner_txn_id": "late", "points": 7})
    assert get_run(run["id"])["digest"] == figures_now(run["id"])


@pytest.mark.postgres
def test_a_booking_waiting_for_a_wallet_lock_lands_after_a_close(app, booked, clock) -> None:
    """An earn reads the clock inside the period, then waits for the member's wallet while
    the period is closed: it commits after the period end, and the closed run's figures
    are what the close froze."""
    from coalition.ledger.earn_burn import earn
    from partners.service import partner_id

    acme = partner_id("acme")
    clock.set(S + timedelta(seconds=5))
    with db.engine.connect() as holder:
        holder.begin()
        holder.execute(select(Wallet.member_id).where(Wallet.member_id == booked["member_id"])
                       .with_for_update())
        booking = Worker(app, lambda: earn(acme, {"member_number": booked["member"],
                                                  "partner_txn_id": "late", "points": 7}))
        booking.start()
        waiting_on_a_lock()  # its clock read inside the period

        clock.set(E + timedelta(minutes=1))  # the period has ended and is settled
        run = create_run(S, E, "finance")
        closed = Worker(app, lambda: close_run(run["id"], "finance"))
        closed.start()
        closed = closed.outcome(timeout=10)  # a waiting booking does not hold up the close
        assert closed["status"] == "closed" and closed["digest"] == run["digest"]
        before = snapshot(app)
        clock.set(E + timedelta(minutes=2))
        holder.rollback()

    outcome = booking.outcome()
    assert not outcome.replayed and outcome.body["points"] == 7
    assert outcome.body["booked_at"] == E + timedelta(minutes=2)
    with read() as session:
        entry = session.get_one(Entry, outcome.body["id"])
        assert entry.booked_at == E + timedelta(minutes=2)
    # the closed run is as it was closed, and the journal still gives its figures
    assert get_run(run["id"])["digest"] == closed["digest"] == figures_now(run["id"])
    after = snapshot(app)
    assert after["settlement_run"] == before["settlement_run"]
    assert len(after["entry"]) == len(before["entry"]) + 1


@pytest.mark.postgres
def test_a_close_waits_for_the_bookings_that_passed_the_fence(app, booked) -> None:
    """A transaction that passed the fence (as a booking does when it writes its entry)
    holds the close until it ends."""
    from coalition.ledger.fence import FENCE_KEY

    run = create_run(S, E, "finance")
    with db.engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT coalition_fence(:key)"), {"key": FENCE_KEY})
        closing = Worker(app, lambda: close_run(run["id"], "finance"))
        closing.start()
        waiting_on_a_lock()
        time.sleep(0.2)
        assert closing.is_alive(), "the close did not wait for a booking in flight"
        assert get_run(run["id"])["status"] == "draft"
        holder.rollback()
    assert closing.outcome()["status"] == "closed"


@pytest.mark.postgres
def test_a_rate_card_cannot_start_inside_a_period_being_closed(app, booked) -> None:
    """The close has passed the fence and waits for its run's row: a card valid from inside
    the period waits for the close and is then refused; nothing of it is written."""
    from partners.service import add_rate_card

    run = create_run(S, E, "finance")
    with db.engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT id FROM settlement_run WHERE id = :id FOR UPDATE"),
                       {"id": run["id"]})
        closing = Worker(app, lambda: close_run(run["id"], "finance"))
        closing.start()
        waiting_on_a_lock()
        card = Worker(app, lambda: add_rate_card("acme", S,
                                                 issue_price=Decimal("0.05")))
        card.start()
        time.sleep(0.3)
        assert card.is_alive(), "a rate card was accepted while its period was being closed"
        holder.rollback()
    closed = closing.outcome()
    refused = card.outcome()
    assert closed["status"] == "closed"
    assert isinstance(refused, CoalitionError) and refused.code == "period_closed"
    assert refused.errors and "valid_from" in refused.errors
    assert get_run(run["id"])["digest"] == closed["digest"] == figures_now(run["id"])
    with read() as session:
        assert session.scalar(text("SELECT count(*) FROM rate_card")) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("round_", range(6))
def test_a_rate_card_racing_a_close_happens_wholly_before_or_after_it(app, booked,
                                                                      round_) -> None:
    """Whichever wins, the closed run's figures are the journal's and its cards': a card
    accepted is one the close priced with, a card refused came after the close."""
    from partners.service import add_rate_card

    run = create_run(S, E, "finance")
    start = threading.Barrier(2)

    def racing(call: Callable[[], Any]) -> Callable[[], Any]:
        def go() -> Any:
            start.wait()
            if round_ % 2:
                time.sleep(0.001 * round_)
            return call()
        return go

    closing = Worker(app, racing(lambda: close_run(run["id"], "finance")))
    card = Worker(app, racing(lambda: add_rate_card("acme", S,
                                                    issue_price=Decimal("0.05"))))
    closing.start()
    card.start()
    closed, added = closing.outcome(), card.outcome()
    assert closed["status"] == "closed"
    if isinstance(added, CoalitionError):
        assert added.code == "period_closed"
        with read() as session:
            assert session.scalar(text("SELECT count(*) FROM rate_card")) == 1
    else:
        assert added["issue_price"] == Decimal("0.05")
        statement = next(s for s in closed["statements"] if s["partner"] == "acme")
        assert statement["payable"] == "5.00"  # 100 points at the new card's 0.05
    assert get_run(run["id"])["digest"] == closed["digest"] == figures_now(run["id"])
