"""``coalition ledger check``: a clean ledger passes; each invariant, broken on purpose,
fails with the rows involved and a non-zero exit from the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coalition.ledger.check import check_ledger
from coalition.ledger.jobs import expire
from tests.conftest import empty_all_tables
from tests.factories.ledger import (
    book_bonus,
    book_burn,
    book_capture,
    book_earn,
    book_hold,
    check_constraint_lifted,
    entries,
    execute,
    execute_unchecked,
    journal_unlocked,
    lots,
    make_member,
    make_partner,
    set_rules,
    wallet,
)

T0 = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
T_SQL = "2024-01-10 12:00:00.000000"  # T0 as raw SQL writes it
NAMES = ["entries_balance", "wallets_agree", "no_negative", "unique_partner_txn",
         "conservation", "merges", "funded_points", "closed_runs", "emails_accounted",
         "memberships_agree", "vouchers_paid", "claims_booked", "promotion_caps"]


@pytest.fixture
def ledger(app) -> dict[str, Any]:
    """A small coalition with every kind of entry the ledger books so far."""
    set_rules(pending_days=7, policy="fixed", months=12)
    acme, shop = make_partner("acme"), make_partner("shop")
    ann, bob = make_member(), make_member()
    earn = book_earn(ann, acme, 100, T0)
    book_earn(ann, shop, 60, T0 + timedelta(days=1))
    book_earn(bob, shop, 40, T0 + timedelta(days=2))
    expire(T0 + timedelta(days=10))                       # release all three
    book_bonus(bob, 15, T0 + timedelta(days=10))
    book_burn(ann, shop, 30, T0 + timedelta(days=11))
    hold, _ = book_hold(ann, acme, 50, T0 + timedelta(days=12),
                        expires_at=T0 + timedelta(days=12, minutes=15))
    book_capture(hold, 35, T0 + timedelta(days=12, minutes=5))
    book_hold(bob, shop, 20, T0 + timedelta(days=13),
              expires_at=T0 + timedelta(days=13, minutes=15))
    expire(T0 + timedelta(days=14))                       # void bob's hold
    book_hold(ann, shop, 5, T0 + timedelta(days=360),
              expires_at=T0 + timedelta(days=380))      # still open at the check
    book_earn(bob, acme, 25, T0 + timedelta(days=370))    # still pending at the check
    expire(T0 + timedelta(days=376))                      # expire every earlier lot
    return {"acme": acme, "shop": shop, "ann": ann, "bob": bob, "earn": earn}


def run_cli(app, *args: str) -> tuple[int, dict[str, Any]]:
    result = app.test_cli_runner().invoke(args=["ledger", "check", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def failing(report) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


def assert_fails(app, name: str) -> list[dict[str, Any]]:
    """The check ``name`` fails (in the API and through the CLI); its violations."""
    report = check_ledger()
    assert name in failing(report), json.dumps(report.to_dict(), default=str, indent=1)
    code, data = run_cli(app)
    assert code == 1
    [check] = [c for c in data["checks"] if c["name"] == name]
    assert not check["ok"] and check["violation_count"] >= 1
    return report.check(name).violations


# --------------------------------------------------------------------------- clean


def test_a_clean_ledger_passes(app, ledger):
    assert wallet(ledger["ann"]) == (0, 0, 5)
    assert wallet(ledger["bob"]) == (0, 25, 0)
    report = check_ledger()
    assert report.ok, json.dumps(report.to_dict(), default=str, indent=1)
    assert [c.name for c in report.checks] == NAMES
    assert report.check("entries_balance").covered["entries"] == len(
        [e for k in ("earn", "burn", "hold", "hold_capture", "hold_void", "release",
                     "expiry", "bonus") for e in entries(k)])
    assert report.check("wallets_agree").covered["members_with_ledger_rows"] == 2
    totals = report.check("conservation").figures["totals"]
    assert totals["issued"] == 225 and totals["funded"] == 15
    assert totals["redeemed"] == 65 and totals["expired"] == 145
    assert totals["outstanding_wallets"] == totals["outstanding_lots"] == 30

    code, data = run_cli(app)
    assert code == 0 and data["ok"] and data["violation_count"] == 0
    text = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert text.exit_code == 0 and "OK" in text.output


def test_an_empty_ledger_passes(app):
    assert check_ledger().ok


# --------------------------------------------------------------------------- 1


def test_an_unbalanced_entry_fails(app, ledger):
    [posting_id] = [row for row in _ids(
        "SELECT id FROM posting WHERE entry_id = :e AND account = 'partner:issued'",
        e=ledger["earn"])]
    with journal_unlocked("posting"):
        execute("UPDATE posting SET points = points + 1 WHERE id = :id", id=posting_id)
    [violation] = assert_fails(app, "entries_balance")
    assert violation["entry_id"] == ledger["earn"]
    assert violation["sum"] == 1 and violation["expected"]["sum"] == 0


def test_an_entry_with_one_posting_fails(app, ledger):
    execute("INSERT INTO entry (kind, booked_at, occurred_at, points) "
            "VALUES ('adjustment', :t, :t, 0)", t=T_SQL)
    bad = max(_ids("SELECT id FROM entry"))
    execute("INSERT INTO posting (entry_id, account, points) "
            "VALUES (:e, 'coalition:funded', 0 + 0 + 3)", e=bad)
    violations = assert_fails(app, "entries_balance")
    assert [(v["entry_id"], v["postings"], v["sum"]) for v in violations] == [(bad, 1, 3)]


def test_a_posting_without_its_owner_fails(app, ledger):
    execute("INSERT INTO entry (kind, booked_at, occurred_at, points) "
            "VALUES ('adjustment', :t, :t, 0)", t=T_SQL)
    bad = max(_ids("SELECT id FROM entry"))
    execute("INSERT INTO posting (entry_id, account, points) "
            "VALUES (:e, 'member:available', 1)", e=bad)
    execute("INSERT INTO posting (entry_id, account, points) "
            "VALUES (:e, 'coalition:breakage', -1)", e=bad)
    violations = assert_fails(app, "entries_balance")
    assert {v["problem"] for v in violations} >= {"posting owner does not fit its account"}


# --------------------------------------------------------------------------- 2


def test_a_wallet_that_disagrees_fails(app, ledger):
    execute("UPDATE wallet SET pending = pending + 7 WHERE member_id = :m", m=ledger["bob"])
    [violation] = assert_fails(app, "wallets_agree")
    assert violation["member_id"] == ledger["bob"]
    assert violation["wallet"]["pending"] == 32
    assert violation["postings"]["pending"] == 25 == violation["pending_lots_remaining"]
    assert "pending != postings on member:pending" in violation["problem"]


def test_a_lot_that_disagrees_with_its_movements_fails(app, ledger):
    [lot_id] = _ids("SELECT id FROM lot WHERE member_id = :m AND state = 'pending'",
                    m=ledger["bob"])
    execute("UPDATE lot SET remaining = remaining - 4 WHERE id = :id", id=lot_id)
    violations = assert_fails(app, "wallets_agree")
    [lot] = [v for v in violations if "lot_id" in v]
    assert (lot["lot_id"], lot["expected_remaining"], lot["remaining"]) == (lot_id, 25, 21)
    [member] = [v for v in violations if "wallet" in v]
    assert member["member_id"] == ledger["bob"]
    assert "pending != remaining of pending lots" in member["problem"]


def test_held_points_without_an_open_hold_fail(app, ledger):
    execute("UPDATE hold SET status = 'voided' WHERE status = 'open'")
    violations = assert_fails(app, "wallets_agree")
    [member] = [v for v in violations if "wallet" in v]
    assert member["member_id"] == ledger["ann"]
    assert (member["wallet"]["held"], member["open_holds"]) == (5, 0)


def test_a_lot_movement_without_its_postings_fails(app, ledger):
    [lot_id] = _ids("SELECT id FROM lot WHERE member_id = :m AND state = 'pending'",
                    m=ledger["bob"])
    execute("INSERT INTO lot_movement (lot_id, entry_id, points) VALUES (:l, :e, -1)",
            l=lot_id, e=ledger["earn"])
    violations = assert_fails(app, "wallets_agree")
    [entry] = [v for v in violations if "lot_movements" in v]
    assert (entry["entry_id"], entry["member_postings"], entry["lot_movements"],
            entry["lots_created"]) == (ledger["earn"], 100, -1, 100)


# --------------------------------------------------------------------------- 3


def test_a_negative_wallet_fails(app, ledger):
    with check_constraint_lifted("wallet", "ck_wallet_available", "available >= 0"):
        execute_unchecked("UPDATE wallet SET available = -3 WHERE member_id = :m",
                          m=ledger["bob"])
        try:
            [violation] = assert_fails(app, "no_negative")
            assert (violation["member_id"], violation["available"]) == (ledger["bob"], -3)
        finally:
            execute("UPDATE wallet SET available = 0 WHERE member_id = :m", m=ledger["bob"])
    assert check_ledger().ok


def test_a_negative_lot_remaining_fails(app, ledger):
    [lot_id] = _ids("SELECT id FROM lot WHERE member_id = :m AND state = 'pending'",
                    m=ledger["bob"])
    with check_constraint_lifted("lot", "ck_lot_remaining",
                                 "remaining >= 0 AND remaining <= points"):
        execute_unchecked("UPDATE lot SET remaining = -1 WHERE id = :id", id=lot_id)
        try:
            violations = assert_fails(app, "no_negative")
            assert [(v["lot_id"], v["remaining"]) for v in violations] == [(lot_id, -1)]
        finally:
            execute("UPDATE lot SET remaining = 25 WHERE id = :id", id=lot_id)
    assert check_ledger().ok


# --------------------------------------------------------------------------- 4


def test_a_duplicated_txn_id_without_a_partner_fails(app, ledger):
    # the unique index treats NULL partners as distinct; the check does not
    for _ in range(2):
        execute("INSERT INTO entry (kind, booked_at, occurred_at, points, partner_txn_id) "
                "VALUES ('adjustment', :t, :t, 0, 'op-1')", t=T_SQL)
    violations = assert_fails(app, "unique_partner_txn")
    [violation] = violations
    assert (violation["partner_id"], violation["partner_txn_id"], violation["entries"]) \
        == (None, "op-1", 2)
    assert len(violation["entry_ids"]) == 2


def test_a_moment_of_merging_on_a_member_not_merged_fails(app, ledger):
    execute("UPDATE member SET merged_at = :t WHERE id = :m", t=T_SQL, m=ledger["ann"])
    [violation] = assert_fails(app, "merges")
    assert (violation["member_id"], violation["status"], violation["problem"]) == (
        ledger["ann"], "active", "not merged, yet with a survivor or a moment of merging")


@pytest.mark.postgres
def test_a_duplicated_partner_txn_id_fails(app, ledger):
    constraint = "uq_entry_partner_id_partner_txn_id"
    execute(f"ALTER TABLE entry DROP CONSTRAINT {constraint}")
    try:
        execute("INSERT INTO entry (kind, booked_at, occurred_at, points, partner_id, "
                "partner_txn_id) SELECT kind, booked_at, occurred_at, points, partner_id, "
                "partner_txn_id FROM entry WHERE id = :e", e=ledger["earn"])
        [violation] = assert_fails(app, "unique_partner_txn")
        assert violation["partner_id"] == ledger["acme"] and violation["entries"] == 2
        assert violation["entry_ids"][0] == ledger["earn"]
    finally:
        empty_all_tables(app)
        execute(f"ALTER TABLE entry ADD CONSTRAINT {constraint} "
                f"UNIQUE (partner_id, partner_txn_id)")


# --------------------------------------------------------------------------- 5


def test_a_lot_credited_to_the_wrong_origin_fails(app, ledger):
    [lot_id] = _ids("SELECT id FROM lot WHERE entry_id = :e", e=ledger["earn"])
    execute("UPDATE lot SET origin_partner_id = :p WHERE id = :id", p=ledger["shop"],
            id=lot_id)
    violations = assert_fails(app, "conservation")
    # the lot's movements still carry its true origin, which the wallets check notices too
    report = check_ledger()
    assert failing(report) == {"conservation", "wallets_agree"}
    assert any("movement origin differs" in v["problem"] for v in
               next(c for c in report.checks if c.name == "wallets_agree").violations)
    issued = [v for v in violations if "partner:issued postings of its earns" in v["problem"]]
    assert {(v["partner_id"], v["expected"], v["actual"]) for v in issued} == {
        (ledger["acme"], 125, 25), (ledger["shop"], 100, 200)}


def test_an_earn_without_its_lot_fails(app, ledger):
    execute("INSERT INTO entry (kind, booked_at, occurred_at, points, partner_id) "
            "VALUES ('earn', :t, :t, 9, :p)", t=T_SQL, p=ledger["acme"])
    bad = max(_ids("SELECT id FROM entry"))
    execute("INSERT INTO posting (entry_id, account, partner_id, points) "
            "VALUES (:e, 'partner:issued', :p, -9)", e=bad, p=ledger["acme"])
    execute("INSERT INTO posting (entry_id, account, points) "
            "VALUES (:e, 'coalition:breakage', 9)", e=bad)
    violations = assert_fails(app, "conservation")
    assert failing(check_ledger()) == {"conservation"}
    assert {(v.get("partner_id"), v["expected"], v["actual"]) for v in violations} == {
        (ledger["acme"], 134, 125), (None, 154, 145)}


def test_points_stranded_in_an_expired_lot_fail(app, ledger):
    [lot_id] = _ids("SELECT id FROM lot WHERE member_id = :m AND state = 'pending'",
                    m=ledger["bob"])
    # the lot and the wallet both forget the points, the journal still has them
    execute("UPDATE lot SET state = 'expired' WHERE id = :id", id=lot_id)
    execute("UPDATE wallet SET pending = 0 WHERE member_id = :m", m=ledger["bob"])
    violations = assert_fails(app, "conservation")
    origin = [v for v in violations if v.get("origin_partner_id") == ledger["acme"]]
    assert origin and origin[0]["stranded"] == 25


def test_violations_are_limited_but_counted(app, ledger):
    for m in (ledger["ann"], ledger["bob"]):
        execute("UPDATE wallet SET held = held + 1 WHERE member_id = :m", m=m)
    report = check_ledger(limit=1)
    check = report.check("wallets_agree")
    assert check.violation_count == 2 and len(check.violations) == 1
    code, data = run_cli(app, "--limit", "1")
    assert code == 1 and data["violation_count"] >= 2
    text = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert text.exit_code == 1 and "FAIL  wallets_agree" in text.output


# --------------------------------------------------------------------------- helpers


def member_id(member: dict[str, Any]) -> int:
    [found] = _ids("SELECT id FROM member WHERE member_number = :n", n=member["member_number"])
    return found


# --------------------------------------------------------------------------- 6


@pytest.fixture
def closed(app, ledger) -> dict[str, Any]:
    """The ledger's first five days settled in a closed run."""
    from settlement.service import close_run, create_run

    run = create_run(T0, T0 + timedelta(days=5), "finance")
    closed = close_run(run["id"], "finance")
    assert check_ledger().ok
    return closed


def test_a_closed_run_whose_period_lost_an_entry_fails_naming_it(app, ledger, closed):
    """An earn's booked_at moved out of the closed period behind the journal's back."""
    [shop_earn] = _ids("SELECT id FROM entry WHERE kind = 'earn' AND partner_id = :p "
                       "AND member_id = :m", p=ledger["shop"], m=ledger["ann"])
    with journal_unlocked("entry"):
        execute("UPDATE entry SET booked_at = :t WHERE id = :id",
                t="2024-01-16 12:00:00.000000", id=shop_earn)
    [violation] = assert_fails(app, "closed_runs")
    assert failing(check_ledger()) == {"closed_runs"}
    assert violation["run_id"] == closed["id"]
    assert violation["expected"] == closed["digest"] != violation["actual"]
    code, data = run_cli(app)
    [check] = [c for c in data["checks"] if c["name"] == "closed_runs"]
    assert code == 1 and check["violations"][0]["run_id"] == closed["id"]


def test_an_entry_slipped_into_a_closed_period_fails_naming_the_run(app, ledger, closed):
    execute("INSERT INTO entry (kind, booked_at, occurred_at, points, partner_id) "
            "VALUES ('burn', :t, :t, 7, :p)", t=T_SQL, p=ledger["acme"])
    bad = max(_ids("SELECT id FROM entry"))
    execute("INSERT INTO posting (entry_id, account, partner_id, points) "
            "VALUES (:e, 'partner:redeemed', :p, 7), (:e, 'partner:issued', :p, -7)",
            e=bad, p=ledger["acme"])
    violations = assert_fails(app, "closed_runs")
    assert [(v["run_id"], v["expected"]) for v in violations] == [
        (closed["id"], closed["digest"])]


def _ids(sql: str, **params: Any) -> list[int]:
    from sqlalchemy import text

    from coalition.db import db

    with db.engine.connect() as conn:
        return [row[0] for row in conn.execute(text(sql), params)]


def test_the_services_bookings_pass_the_check(app):
    """What the partner use cases of coalition.ledger book (and the expiry job after it) keeps every
    invariant, including a burn reversal into a lot that expired meanwhile."""
    from coalition.db import utcnow
    from coalition.ledger import earn_burn, holds, members, reversals

    set_rules(policy="fixed", months=1)
    acme, shop = make_partner("acme"), make_partner("shop")
    member, _ = members.enrol(acme, "c-1")
    who = {"member_number": member["member_number"]}
    earn = earn_burn.earn(acme, {"partner_txn_id": "e1", "points": 100, **who}).body
    earn_burn.earn(shop, {"partner_txn_id": "e2", "points": 40, **who})
    burn = earn_burn.burn(shop, {"partner_txn_id": "b1", "points": 120, **who}).body
    hold = holds.authorise_hold(shop, {"partner_txn_id": "h1", "points": 10, **who}).body
    holds.capture_hold(shop, hold["id"], {"partner_txn_id": "c1", "points": 5})
    other = holds.authorise_hold(acme, {"partner_txn_id": "h2", "points": 3, **who}).body
    holds.cancel_hold(acme, other["id"], {"partner_txn_id": "v1"})
    # the earn's own lot is spent: the points come from the other lot
    reversals.reverse(acme, earn["id"], {"partner_txn_id": "r1", "points": 12})
    assert check_ledger().ok, json.dumps(check_ledger().to_dict(), default=str, indent=1)

    expire(utcnow() + timedelta(days=40))
    assert lots(member_id(member)) == [(100, 0, "live"), (40, 0, "expired")]
    # the burn's later-expiring lot expired meanwhile: it comes back to life for the
    # points restored to it, and the next run expires them
    reversals.reverse(shop, burn["id"], {"partner_txn_id": "r2", "points": 10})
    report = check_ledger()
    assert report.ok, json.dumps(report.to_dict(), default=str, indent=1)
    assert wallet(member_id(member)) == (10, 0, 0)
    assert lots(member_id(member)) == [(100, 0, "live"), (40, 10, "live")]
    expire(utcnow() + timedelta(days=40))
    report = check_ledger()
    assert report.ok, json.dumps(report.to_dict(), default=str, indent=1)
    totals = report.check("conservation").figures["totals"]
    assert (totals["issued"], totals["earn_reversals"], totals["redeemed"],
            totals["burn_reversals"], totals["expired"]) == (140, 12, 125, 10, 13)
    assert totals["outstanding_wallets"] == 0
