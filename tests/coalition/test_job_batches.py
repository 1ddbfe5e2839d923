"""The jobs (``coalition expire``, ``coalition daily``) work in batches of members: a few
statements per batch whatever its size, bookings racing a batch neither lost nor doubled
(PostgreSQL, real concurrent transactions), one member's broken rows stopping only that
member, and progress shown per batch."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text

from coalition import clock
from coalition.db import UnitOfWork, db
from coalition.errors import InsufficientPoints
from coalition.ledger import earn_burn
from coalition.ledger.check import check_ledger
from coalition.ledger.daily import daily
from coalition.ledger.jobs import expire
from coalition.ledger.models import Entry, Member
from coalition.program.schemas import ProgramRulesSchema
from coalition.program.service import publish_rules
from tests.conftest import snapshot
from tests.factories.ledger import (
    book_earn,
    book_hold,
    entries,
    execute,
    lots,
    make_member,
    make_partner,
    set_rules,
    wallet,
)

T0 = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
TIERS = [{"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
         {"code": "gold", "name": "Gold", "threshold": 100, "multiplier": "1"}]


def assert_clean() -> None:
    report = check_ledger()
    assert report.ok, json.dumps(report.to_dict(), default=str, indent=1)


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements sent to the database meanwhile (an ``executemany`` is one)."""
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


def number(member_id: int) -> str:
    with UnitOfWork(readonly=True) as uow:
        return uow.session.scalars(select(Member.member_number)
                                   .where(Member.id == member_id)).one()


def expiring_members(count: int, acme: int) -> list[int]:
    """Members with a due hold, points to release and points to expire, as of T0 + 40 days
    under pending days 7 and fixed expiry after one month."""
    members = []
    for _ in range(count):
        m = make_member(created_at=T0)
        book_earn(m, acme, 100, T0)
        members.append(m)
    expire(T0 + timedelta(days=7))  # released
    for m in members:
        book_hold(m, acme, 30, T0 + timedelta(days=8), expires_at=T0 + timedelta(days=9))
        book_earn(m, acme, 20, T0 + timedelta(days=20))  # released by the run below
    return members


# --------------------------------------------------------------------------- set-based


# Statements sent through SQLAlchemy, on PostgreSQL (the batch's rows are written with one
# COPY per table besides, on the same connection; on SQLite, in the process, an
# executemany runs the statement row by row).


@pytest.mark.postgres
def test_a_batch_costs_the_same_statements_for_5_members_as_for_40(app):
    set_rules(pending_days=7, policy="fixed", months=1)
    acme = make_partner("acme")
    as_of = T0 + timedelta(days=40)
    counted = []
    for count in (5, 40):
        members = expiring_members(count, acme)
        with statements() as sent:
            summary = expire(as_of, batch=100)
        assert (summary.members, summary.holds_voided, summary.members_released,
                summary.members_expired) == (count, count, count, count)
        assert summary.failures == []
        counted.append(len(sent))
        for m in members:
            assert wallet(m) == (20, 0, 0)
            assert [state for _, _, state in lots(m)] == ["expired", "live"]
    # rules, counts, candidates; then per batch the locks, each step's reads and
    # writes, and the entries, postings, movements and holds written for all at once
    assert counted[0] == counted[1] < 30
    assert_clean()


@pytest.mark.postgres
def test_the_daily_job_costs_the_same_statements_for_5_members_as_for_40(app):
    publish_rules(ProgramRulesSchema().load({
        "tiers": TIERS, "expiry": {"policy": "fixed", "months": 12},
        "bonuses": {"welcome": 0, "birthday": 25}}), "tests")
    daily(date(2025, 1, 1))  # the rules read once (a worker keeps them by version)
    counted = []
    for count, day in ((5, date(2025, 3, 15)), (40, date(2025, 3, 16))):
        members = [make_member(created_at=T0) for _ in range(count)]
        for m in members:
            execute("UPDATE member SET birth_date = :b, tier = 'gold' WHERE id = :m",
                    b=day.replace(year=1990), m=m)
        with statements() as sent:
            summary = daily(day, batch=100)
        assert (summary.birthday_members, summary.tier_downgrades) == (count, count)
        counted.append(len(sent))
        assert all(wallet(m) == (25, 0, 0) for m in members)
    assert counted[0] == counted[1] < 30
    assert_clean()


def test_batches_run_side_by_side_settle_every_member_once(app):
    set_rules(pending_days=7, policy="fixed", months=1)
    acme = make_partner("acme")
    members = expiring_members(30, acme)
    seen = []
    summary = expire(T0 + timedelta(days=40), batch=4, workers=3,
                     progress=lambda done, total: seen.append((done, total)))
    assert (summary.members, summary.holds_voided, summary.members_released,
            summary.members_expired, summary.points_expired) == (30, 30, 30, 30, 30 * 100)
    assert summary.failures == []
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[0] == (0, 30) and seen[-1] == (30, 30) and len(seen) == 1 + 8
    assert all(wallet(m) == (20, 0, 0) for m in members)
    assert len(entries("expiry")) == 30 and len(entries("hold_void")) == 30
    assert_clean()
    before = snapshot(app)
    assert expire(T0 + timedelta(days=40), batch=4, workers=3).members == 0
    assert snapshot(app) == before


def test_the_daily_job_side_by_side(app):
    publish_rules(ProgramRulesSchema().load({
        "tiers": TIERS, "expiry": {"policy": "none"},
        "bonuses": {"welcome": 0, "birthday": 25}}), "tests")
    members = [make_member(created_at=T0) for _ in range(25)]
    for m in members:
        execute("UPDATE member SET birth_date = '1990-03-15', tier = 'gold' WHERE id = :m",
                m=m)
    summary = daily(date(2025, 3, 15), batch=3, workers=3)
    assert (summary.birthday_members, summary.tier_downgrades) == (25, 25)
    assert summary.failures == []
    assert all(wallet(m) == (25, 0, 0) for m in members)
    assert_clean()
    before = snapshot(app)
    assert daily(date(2025, 3, 15), batch=3, workers=3).birthday_members == 0
    assert snapshot(app) == before


# --------------------------------------------------------------------------- failures


def test_a_member_whose_rows_break_a_constraint_stops_only_that_member(app):
    """The batch's statement fails for everyone; run member by member, it names the one."""
    set_rules(pending_days=7, policy="fixed", months=1)
    acme = make_partner("acme")
    members = expiring_members(6, acme)
    broken = members[3]
    # the hold's lot was given its points back behind the ledger's back: returning the
    # hold's 30 points would take the lot above its own points (a CHECK constraint)
    execute("UPDATE lot SET remaining = points WHERE member_id = :m AND points = 100",
            m=broken)
    before = [row for row in snapshot(app)["lot"] if row[1] == broken]
    summary = expire(T0 + timedelta(days=40), batch=10)
    assert [f["member_id"] for f in summary.failures] == [broken]
    assert "remaining" in summary.failures[0]["error"]
    assert (summary.members, summary.holds_voided, summary.members_expired) == (6, 5, 5)
    assert [row for row in snapshot(app)["lot"] if row[1] == broken] == before
    for m in members:
        if m != broken:
            assert wallet(m) == (20, 0, 0)
    assert entries("hold_void", broken) == [] and entries("expiry", broken) == []


def test_a_member_refused_under_the_lock_leaves_the_others_of_its_batch_booked(app):
    publish_rules(ProgramRulesSchema().load({
        "tiers": TIERS, "expiry": {"policy": "none"},
        "bonuses": {"welcome": 0, "birthday": 25}}), "tests")
    members = [make_member(created_at=T0) for _ in range(4)]
    for m in members:
        execute("UPDATE member SET birth_date = '1990-03-15' WHERE id = :m", m=m)
    full = members[1]
    # a balance at the largest allowed cannot take the bonus
    execute("UPDATE wallet SET available = 9007199254740991 WHERE member_id = :m", m=full)
    summary = daily(date(2025, 3, 15), batch=10)
    assert [(f["member_id"], f["step"]) for f in summary.failures] == [(full, "birthday")]
    assert summary.birthday_members == 3
    with UnitOfWork(readonly=True) as uow:
        years = dict(uow.session.execute(select(Member.id, Member.birthday_bonus_year)).all())
    assert years[full] is None  # its year was not moved: the next run tries again
    assert all(years[m] == 2025 and wallet(m) == (25, 0, 0) for m in members if m != full)


# --------------------------------------------------------------------------- races


def _race(app: Any, job: Any, members: list[str], partner: int,
          ops_per_thread: int = 25, threads: int = 4) -> tuple[Any, list[tuple]]:
    """``job()`` in one thread while ``threads`` threads earn and burn at random on
    ``members`` through the ledger's own use cases; returns the job's result and every
    operation answered ``(op, member number, points, entry id)``."""
    done: list[tuple] = []
    finished: list[float] = []
    during: list[float] = []
    errors: list[BaseException] = []
    result: list[Any] = []
    barrier = threading.Barrier(threads + 1, timeout=30)

    def booker(seed: int) -> None:
        rng = random.Random(seed)
        with app.app_context():
            barrier.wait()
            for i in range(ops_per_thread):
                member = rng.choice(members)
                op = rng.choice(("earn", "burn"))
                points = rng.randint(1, 40)
                data = {"member_number": member, "points": points,
                        "partner_txn_id": f"race-{seed}-{i}"}
                try:
                    outcome = getattr(earn_burn, op)(partner, data)
                except InsufficientPoints:
                    continue
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return
                done.append((op, member, points, outcome.body["id"]))
                finished.append(time.monotonic())

    def runner() -> None:
        with app.app_context():
            barrier.wait()
            try:
                began = time.monotonic()
                result.append(job())
                during.extend((began, time.monotonic()))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    workers = [threading.Thread(target=booker, args=(seed,)) for seed in range(threads)]
    workers.append(threading.Thread(target=runner))
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in workers), "a thread is still running"
    assert errors == []
    # the race took place: bookings were answered while the job ran
    raced = sum(1 for t in finished if during[0] < t < during[1])
    assert raced >= 5, (raced, len(finished), during[1] - during[0])
    return result[0], done


def _entry_ids(kind: str) -> list[int]:
    with UnitOfWork(readonly=True) as uow:
        return list(uow.session.scalars(select(Entry.id).where(Entry.kind == kind)))


@pytest.mark.postgres
def test_earns_and_burns_racing_the_expiry_job_are_neither_lost_nor_doubled(app):
    set_rules(policy="fixed", months=1)
    acme = make_partner("acme")
    ids = [make_member(created_at=T0) for _ in range(24)]
    for m in ids:
        book_earn(m, acme, 60, T0)  # due for expiry
    numbers = [number(m) for m in ids]
    by_number = dict(zip(numbers, ids, strict=True))

    summary, done = _race(app, lambda: expire(clock.utcnow(), batch=3), numbers, acme)
    # every member is examined, but for one whose old points racing burns had all taken
    # before the job read its candidates
    assert summary.failures == []
    assert summary.members_expired <= summary.members <= len(ids)
    assert len(done) > 40
    earned = Counter()
    burned = Counter()
    for op, member, points, _ in done:
        (earned if op == "earn" else burned)[by_number[member]] += points
    # every answer is in the journal, once
    for kind in ("earn", "burn"):
        booked = set(_entry_ids(kind))
        answered = [entry_id for op, _, _, entry_id in done if op == kind]
        assert len(set(answered)) == len(answered) and set(answered) <= booked
        assert len(booked) == len(answered) + (len(ids) if kind == "earn" else 0)
    # each member: the 60 old points were burned or expired, never both, never lost
    expired = Counter()
    for entry in entries("expiry"):
        expired[entry.member_id] += entry.points
    assert sum(expired.values()) == summary.points_expired
    assert len(expired) == summary.members_expired
    for m in ids:
        assert wallet(m)[0] == 60 + earned[m] - burned[m] - expired[m]
        old = [lot for lot in lots(m) if lot[0] == 60][0]
        assert old[1] == 0  # nothing of the old lot is left live
    assert_clean()
    before = snapshot(app)
    again = expire(clock.utcnow())
    assert again.points_expired == 0 and snapshot(app) == before


@pytest.mark.postgres
def test_earns_racing_the_daily_job_keep_tiers_and_bonuses_exact(app):
    publish_rules(ProgramRulesSchema().load({
        "tiers": TIERS, "expiry": {"policy": "none"},
        "bonuses": {"welcome": 0, "birthday": 25}}), "tests")
    acme = make_partner("acme")
    today = clock.utcnow().date()
    ids = [make_member(created_at=T0) for _ in range(20)]
    for m in ids:
        # gold without the points for it, born today: a downgrade and a bonus are due
        execute("UPDATE member SET tier = 'gold', birth_date = :b WHERE id = :m",
                b=date(2000, today.month, today.day), m=m)
    numbers = [number(m) for m in ids]
    by_number = dict(zip(numbers, ids, strict=True))

    summary, done = _race(app, lambda: daily(today, batch=3), numbers, acme)
    assert summary.failures == []
    earned, burned = Counter(), Counter()
    for op, member, points, _ in done:
        (earned if op == "earn" else burned)[by_number[member]] += points
    with UnitOfWork(readonly=True) as uow:
        tiers = dict(uow.session.execute(select(Member.id, Member.tier)).all())
    for m in ids:
        assert wallet(m)[0] == 25 + earned[m] - burned[m]
        # an earn that crossed 100 upgraded after the downgrade, or kept gold before it
        assert tiers[m] == ("gold" if earned[m] >= 100 else "blue")
    assert summary.birthday_members == len(ids)
    assert_clean()
    before = snapshot(app)
    assert daily(today).birthday_members == 0 and snapshot(app) == before


# --------------------------------------------------------------------------- CLI


def test_cli_daily_shows_progress_per_step(app, monkeypatch):
    import coalition.commands

    publish_rules(ProgramRulesSchema().load({
        "tiers": TIERS, "expiry": {"policy": "none"},
        "bonuses": {"welcome": 0, "birthday": 25}}), "tests")
    for _ in range(3):
        m = make_member(created_at=T0)
        execute("UPDATE member SET birth_date = '1990-03-15', tier = 'gold' WHERE id = :m",
                m=m)
    monkeypatch.setattr(coalition.commands, "PROGRESS_THRESHOLD", 1)
    result = app.test_cli_runner().invoke(args=["daily", "--as-of", "2025-03-15", "--json"])
    assert result.exit_code == 0, result.output
    assert "birthdays" in result.stderr and "tiers" in result.stderr
    data = json.loads(result.stdout)
    assert (data["birthday_members"], data["tier_downgrades"]) == (3, 3)


def test_cli_batch_and_workers_options(app):
    set_rules(policy="fixed", months=1)
    acme = make_partner("acme")
    for _ in range(3):
        book_earn(make_member(), acme, 10, T0)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["expire", "--as-of", "2024-03-01", "--batch", "2",
                                 "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["points_expired"] == 30
    bad = runner.invoke(args=["expire", "--batch", "0"])
    assert bad.exit_code == 2 and "--batch" in bad.output
    bad = runner.invoke(args=["daily", "--workers", "0"])
    assert bad.exit_code == 2 and "--workers" in bad.output
    result = runner.invoke(args=["daily", "--as-of", "2025-03-15", "--batch", "2", "--json"])
    assert result.exit_code == 0, result.output
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM entry WHERE kind = 'expiry'")).scalar() == 3
