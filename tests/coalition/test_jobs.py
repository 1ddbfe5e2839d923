"""The expiry job: expired holds, pending points, fixed and inactivity expiry."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from coalition.ledger import jobs
from coalition.ledger.check import check_ledger
from coalition.ledger.jobs import expire
from tests.conftest import snapshot
from tests.factories.ledger import (
    book_bonus,
    book_burn,
    book_earn,
    book_hold,
    entries,
    execute,
    lots,
    make_member,
    make_partner,
    movements,
    postings,
    set_rules,
    wallet,
)

T0 = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)


def counts(summary: jobs.ExpirySummary) -> dict[str, int]:
    data = summary.to_dict()
    return {k: v for k, v in data.items() if k not in ("as_of", "policy", "failures")}


def assert_clean() -> None:
    report = check_ledger()
    assert report.ok, json.dumps(report.to_dict(), default=str, indent=1)


# --------------------------------------------------------------------------- release


def test_release_makes_pending_points_spendable_when_due(app):
    set_rules(pending_days=14)
    acme = make_partner("acme")
    m = make_member()
    first = book_earn(m, acme, 100, T0)
    book_earn(m, acme, 30, T0 + timedelta(days=1))
    assert wallet(m) == (0, 130, 0)

    early = expire(T0 + timedelta(days=14) - timedelta(seconds=1))
    assert counts(early) == dict.fromkeys(counts(early), 0)
    assert wallet(m) == (0, 130, 0)

    summary = expire(T0 + timedelta(days=14))
    assert (summary.members_released, summary.lots_released, summary.points_released) \
        == (1, 1, 100)
    assert wallet(m) == (100, 30, 0)
    assert lots(m) == [(100, 100, "live"), (30, 30, "pending")]
    [release] = entries("release", m)
    assert release.points == 100 and release.partner_id is None
    assert release.occurred_at == T0 + timedelta(days=14)
    assert release.reference_id is None and movements(release.id) == []
    assert postings(release.id) == {("member:pending", m, None, -100),
                                    ("member:available", m, None, 100)}
    assert (release.available_after, release.pending_after) == (100, 30)
    assert entries("earn", m)[0].id == first

    summary = expire(T0 + timedelta(days=20))
    assert (summary.members_released, summary.points_released) == (1, 30)
    assert wallet(m) == (130, 0, 0)
    assert_clean()


def test_release_is_not_member_activity(app):
    set_rules(pending_days=14)
    acme = make_partner("acme")
    m = make_member()
    book_earn(m, acme, 100, T0)
    expire(T0 + timedelta(days=15))
    with app.app_context():
        from coalition.db import read
        from coalition.ledger.models import Wallet

        with read() as session:
            assert session.get_one(Wallet, m).last_activity_at == T0


# --------------------------------------------------------------------------- fixed


def test_fixed_expiry_takes_only_due_lots_earliest_first(app):
    set_rules(policy="fixed", months=12)
    acme, shop = make_partner("acme"), make_partner("shop")
    m, other = make_member(), make_member()
    book_earn(m, acme, 100, datetime(2024, 1, 15, tzinfo=UTC))   # expires 2025-01-15
    b = book_earn(m, shop, 50, datetime(2024, 3, 1, tzinfo=UTC))  # expires 2025-03-01
    book_earn(m, acme, 70, datetime(2024, 6, 1, tzinfo=UTC))      # expires 2025-06-01
    book_burn(m, shop, 120, datetime(2024, 7, 1, tzinfo=UTC))     # all of A, 20 of B
    assert lots(m) == [(100, 0, "live"), (50, 30, "live"), (70, 70, "live")]
    book_earn(other, acme, 40, datetime(2024, 6, 1, tzinfo=UTC))

    as_of = datetime(2025, 4, 1, tzinfo=UTC)
    summary = expire(as_of)
    assert counts(summary) == {
        "members": 1, "holds_voided": 0, "points_unheld": 0,
        "members_released": 0, "lots_released": 0, "points_released": 0,
        "members_expired": 1, "lots_expired": 1, "points_expired": 30,
    }
    assert summary.policy == "fixed" and summary.failures == []
    # the spent lot is left as it is; the partly spent one loses what is left of it
    assert lots(m) == [(100, 0, "live"), (50, 0, "expired"), (70, 70, "live")]
    assert wallet(m) == (70, 0, 0)
    assert wallet(other) == (40, 0, 0)
    [expiry] = entries("expiry")
    assert (expiry.member_id, expiry.partner_id, expiry.points) == (m, None, 30)
    assert expiry.occurred_at == as_of and expiry.booked_at > as_of
    assert expiry.available_after == 70
    assert postings(expiry.id) == {("member:available", m, None, -30),
                                   ("coalition:breakage", None, None, 30)}
    assert movements(b) == []  # an earn creates its lot; it moves nothing
    [(_, points)] = movements(expiry.id)
    assert points == -30

    # the breakage is attributed to the origin partner of the expired lot
    report = check_ledger()
    assert report.ok
    per_origin = {r["origin_partner_id"]: r for r in
                  report.check("conservation").figures["per_origin_partner"]}
    assert per_origin[shop]["expired"] == 30 and per_origin[acme]["expired"] == 0


def test_fixed_expiry_of_several_lots_is_one_entry_per_member(app):
    set_rules(policy="fixed", months=1)
    acme = make_partner("acme")
    members = [make_member() for _ in range(3)]
    for i, m in enumerate(members):
        book_earn(m, acme, 10, T0)
        book_earn(m, acme, 20 + i, T0 + timedelta(days=1))
        book_bonus(m, 5, T0 + timedelta(days=2))
    summary = expire(T0 + timedelta(days=40))
    assert (summary.members_expired, summary.lots_expired, summary.points_expired) \
        == (3, 9, 3 * 35 + 3)
    assert len(entries("expiry")) == 3
    for m in members:
        assert wallet(m) == (0, 0, 0)
        assert all(state == "expired" for _, _, state in lots(m))
    assert_clean()


def test_no_expiry_under_policy_none(app):
    set_rules(policy="none")
    acme = make_partner("acme")
    m = make_member(created_at=T0)
    book_earn(m, acme, 10, T0)
    summary = expire(T0 + timedelta(days=3650))
    assert summary.members == 0 and wallet(m) == (10, 0, 0)


# --------------------------------------------------------------------------- inactivity


def test_inactivity_expires_everything_after_months_without_activity(app):
    set_rules(policy="inactivity", months=6)
    acme, shop = make_partner("acme"), make_partner("shop")
    last = datetime(2024, 8, 31, 10, 0, tzinfo=UTC)  # + 6 months = 2025-02-28 10:00
    idle = make_member(created_at=last - timedelta(days=30))
    book_earn(idle, acme, 100, last - timedelta(days=20))
    book_earn(idle, shop, 50, last)
    active = make_member(created_at=last)
    book_earn(active, acme, 10, datetime(2024, 9, 15, tzinfo=UTC))
    # never active: only a welcome bonus, so inactivity counts from enrolment
    dormant = make_member(created_at=datetime(2024, 1, 1, tzinfo=UTC))
    book_bonus(dormant, 20, datetime(2024, 1, 1, tzinfo=UTC))

    due = datetime(2025, 2, 28, 10, 0, tzinfo=UTC)
    early = expire(due - timedelta(seconds=1))
    assert (early.members_expired, early.points_expired) == (1, 20)  # only the dormant
    assert wallet(idle) == (150, 0, 0) and wallet(dormant) == (0, 0, 0)

    summary = expire(due)
    assert (summary.members_expired, summary.lots_expired, summary.points_expired) \
        == (1, 2, 150)
    assert wallet(idle) == (0, 0, 0)
    assert [state for _, _, state in lots(idle)] == ["expired", "expired"]
    assert wallet(active) == (10, 0, 0)
    [expiry] = entries("expiry", idle)
    assert postings(expiry.id) == {("member:available", idle, None, -150),
                                   ("coalition:breakage", None, None, 150)}
    assert sorted(p for _, p in movements(expiry.id)) == [-100, -50]

    report = check_ledger()
    assert report.ok
    per_origin = {r["origin_partner_id"]: r for r in
                  report.check("conservation").figures["per_origin_partner"]}
    assert (per_origin[acme]["expired"], per_origin[shop]["expired"],
            per_origin[None]["expired"]) == (100, 50, 20)


def test_activity_keeps_points_under_inactivity(app):
    set_rules(policy="inactivity", months=6)
    acme = make_partner("acme")
    m = make_member(created_at=T0)
    book_earn(m, acme, 100, T0)
    book_burn(m, acme, 10, T0 + timedelta(days=150))
    assert expire(T0 + timedelta(days=200)).members_expired == 0
    assert wallet(m) == (90, 0, 0)
    assert expire(T0 + timedelta(days=150 + 190)).points_expired == 90


# --------------------------------------------------------------------------- holds


def test_expired_hold_is_voided_and_returns_points_to_its_lots(app):
    acme, shop = make_partner("acme"), make_partner("shop")
    m = make_member()
    first = book_earn(m, acme, 40, T0)
    book_earn(m, shop, 60, T0 + timedelta(minutes=1))
    hold_id, hold_entry = book_hold(m, shop, 70, T0 + timedelta(minutes=2),
                                    expires_at=T0 + timedelta(minutes=17))
    assert wallet(m) == (30, 0, 70)
    assert lots(m) == [(40, 0, "live"), (60, 30, "live")]

    assert expire(T0 + timedelta(minutes=16)).holds_voided == 0
    summary = expire(T0 + timedelta(minutes=17))
    assert (summary.holds_voided, summary.points_unheld) == (1, 70)
    assert wallet(m) == (100, 0, 0)
    assert lots(m) == [(40, 40, "live"), (60, 60, "live")]
    [void] = entries("hold_void", m)
    assert (void.reference_id, void.partner_id, void.points, void.note) \
        == (hold_entry, shop, 70, "expired")
    assert postings(void.id) == {("member:held", m, None, -70),
                                 ("member:available", m, None, 70)}
    # exactly the negation of the hold's movements, lot by lot
    assert movements(void.id) == [(lot, -points) for lot, points in movements(hold_entry)]
    assert entries("earn", m)[0].id == first

    with app.app_context():
        from coalition.db import read
        from coalition.ledger.models import Hold

        with read() as session:
            hold = session.get_one(Hold, hold_id)
            assert (hold.status, hold.captured, hold.closed_by_entry_id) \
                == ("expired", 0, void.id)
    assert_clean()


def test_points_held_when_their_lot_expires_expire_once_the_hold_is_voided(app):
    set_rules(policy="fixed", months=12)
    acme = make_partner("acme")
    m = make_member()
    book_earn(m, acme, 100, T0)                       # expires T0 + 12 months
    book_earn(m, acme, 50, T0 + timedelta(days=100))
    lot_expiry = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    book_hold(m, acme, 60, lot_expiry - timedelta(minutes=5),
              expires_at=lot_expiry + timedelta(days=1))

    summary = expire(lot_expiry)
    assert (summary.points_expired, summary.holds_voided) == (40, 0)
    assert lots(m) == [(100, 0, "expired"), (50, 50, "live")]
    assert wallet(m) == (50, 0, 60)
    assert_clean()

    # the void gives the expired lot its points back as live ones; they are due, so the
    # same run expires them
    summary = expire(lot_expiry + timedelta(days=1))
    assert (summary.holds_voided, summary.points_unheld, summary.points_expired) \
        == (1, 60, 60)
    assert lots(m) == [(100, 0, "expired"), (50, 50, "live")]
    assert wallet(m) == (50, 0, 0)
    assert len(entries("expiry", m)) == 2
    assert_clean()


# --------------------------------------------------------------------------- reruns


def _mixed_history() -> list[int]:
    set_rules(pending_days=7, policy="fixed", months=1)
    acme = make_partner("acme")
    members = [make_member() for _ in range(4)]
    book_earn(members[0], acme, 100, T0)
    book_earn(members[1], acme, 50, T0)
    expire(T0 + timedelta(days=7))  # release them
    book_hold(members[1], acme, 20, T0 + timedelta(days=8),
              expires_at=T0 + timedelta(days=8, minutes=15))
    book_earn(members[2], acme, 10, T0 + timedelta(days=20))
    book_earn(members[3], acme, 10, T0 + timedelta(days=60))  # nothing due
    return members


def test_a_second_run_with_the_same_as_of_changes_nothing(app):
    _mixed_history()
    as_of = T0 + timedelta(days=32)
    first = expire(as_of)
    assert first.holds_voided == 1 and first.points_expired > 0 and first.points_released
    before = snapshot(app)
    second = expire(as_of)
    assert counts(second) == dict.fromkeys(counts(second), 0)
    assert snapshot(app) == before
    assert_clean()


def test_a_crash_mid_run_loses_nothing_and_a_rerun_finishes(app, monkeypatch):
    members = _mixed_history()
    as_of = T0 + timedelta(days=32)
    settle, calls = jobs._settle, []

    def crashing(member_ids, *args):
        calls.append(member_ids)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return settle(member_ids, *args)

    monkeypatch.setattr(jobs, "_settle", crashing)
    with pytest.raises(RuntimeError):
        expire(as_of, batch=2)
    monkeypatch.setattr(jobs, "_settle", settle)
    assert calls == [members[:2], members[2:3]]
    assert_clean()  # the first batch was settled in full, the second not at all
    assert wallet(members[0]) == (0, 0, 0) and wallet(members[2]) == (0, 10, 0)
    expire(as_of)
    assert wallet(members[0]) == (0, 0, 0)
    assert len(entries("expiry", members[0])) == 1
    assert len(entries("hold_void")) == 1
    before = snapshot(app)
    expire(as_of)
    assert snapshot(app) == before
    assert_clean()


def test_concurrent_runs_book_everything_once(app):
    set_rules(policy="fixed", months=1)
    acme = make_partner("acme")
    members = [make_member() for _ in range(12)]
    for m in members:
        book_earn(m, acme, 10, T0)
    as_of = T0 + timedelta(days=40)
    results, errors = [], []

    def run():
        try:
            with app.app_context():
                results.append(expire(as_of))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.points_expired for r in results) == 120
    assert len(entries("expiry")) == 12
    assert_clean()


def test_progress_is_reported_per_batch(app):
    set_rules(policy="fixed", months=1)
    acme = make_partner("acme")
    for _ in range(3):
        book_earn(make_member(), acme, 10, T0)
    seen = []
    expire(T0 + timedelta(days=40), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 3), (3, 3)]
    seen.clear()
    for _ in range(3):
        book_earn(make_member(), acme, 10, T0)
    expire(T0 + timedelta(days=40), progress=lambda done, total: seen.append((done, total)),
           batch=2)
    assert seen == [(0, 3), (2, 3), (3, 3)]  # after each batch


def test_a_member_whose_state_disagrees_is_reported_and_the_others_settled(app):
    set_rules(pending_days=1)
    acme = make_partner("acme")
    broken, fine = make_member(), make_member()
    book_earn(broken, acme, 10, T0)
    book_earn(fine, acme, 20, T0)
    execute("UPDATE wallet SET pending = 3 WHERE member_id = :m", m=broken)
    before = snapshot(app)["wallet"]
    summary = expire(T0 + timedelta(days=2))
    assert [f["member_id"] for f in summary.failures] == [broken]
    assert "pending" in summary.failures[0]["error"]
    assert (summary.members, summary.members_released, summary.points_released) == (2, 1, 20)
    assert wallet(fine) == (20, 0, 0)
    assert [row for row in snapshot(app)["wallet"] if row[0] == broken] \
        == [row for row in before if row[0] == broken]
    assert lots(broken) == [(10, 10, "pending")]
    result = app.test_cli_runner().invoke(args=["expire", "--as-of", "2024-01-12"])
    assert result.exit_code == 1
    assert f"FAILED member {broken}" in result.output


# --------------------------------------------------------------------------- CLI


def test_cli_expire_prints_the_summary(app, monkeypatch):
    import coalition.commands

    set_rules(policy="fixed", months=1)
    acme = make_partner("acme")
    for _ in range(3):
        book_earn(make_member(), acme, 10, T0)
    monkeypatch.setattr(coalition.commands, "PROGRESS_THRESHOLD", 1)  # show the bar
    runner = app.test_cli_runner()
    result = runner.invoke(args=["expire", "--as-of", "2024-03-01", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["as_of"] == "2024-03-01T00:00:00Z"
    assert (data["members_expired"], data["lots_expired"], data["points_expired"]) \
        == (3, 3, 30)

    result = runner.invoke(args=["expire", "--as-of", "2024-03-01T00:00:00Z"])
    assert result.exit_code == 0, result.output
    assert "expired:         0 points" in result.output


@pytest.mark.parametrize("value", ["2024-13-01", "yesterday", "2024-03-01T00:00:00"])
def test_cli_expire_refuses_a_bad_date(app, value):
    result = app.test_cli_runner().invoke(args=["expire", "--as-of", value])
    assert result.exit_code == 2
    assert "--as-of" in result.output


def test_cli_expire_refuses_a_future_date(app):
    future = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    result = app.test_cli_runner().invoke(args=["expire", "--as-of", future])
    assert result.exit_code == 2
    assert "future" in result.output


def test_cli_expire_defaults_to_now(app):
    result = app.test_cli_runner().invoke(args=["expire", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["members"] == 0
