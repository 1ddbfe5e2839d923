"""The database layer: SQLite's pragmas and write locking, the unit of work, retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from coalition.db import UnitOfWork, alongside, db, is_retryable, read, run_with_retries
from coalition.models import Partner, RateCard
from tests.conftest import make_test_app
from tests.factories.statements import statements_run


@pytest.fixture
def sqlite_app(tmp_path) -> Iterator[Flask]:
    """An app on a fresh SQLite file with a short lock wait and one scratch table."""
    app = make_test_app(f"sqlite:///{tmp_path / 'locks.sqlite3'}", DB_BUSY_TIMEOUT_MS=200)
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
            conn.execute(text("INSERT INTO counter VALUES (1, 0)"))
        yield app
        db.engine.dispose()


def _pragma(conn, name: str):
    return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_sqlite_pragmas(sqlite_app):
    with db.engine.connect() as conn:
        assert _pragma(conn, "journal_mode") == "wal"
        assert _pragma(conn, "foreign_keys") == 1
        assert _pragma(conn, "busy_timeout") == 200
        assert _pragma(conn, "synchronous") == 1  # NORMAL


def test_sqlite_writers_begin_immediate_and_readers_deferred(sqlite_app):
    with statements_run(db.engine) as statements:
        with UnitOfWork() as uow:
            uow.session.execute(text("SELECT n FROM counter"))
        with read() as session:
            session.execute(text("SELECT n FROM counter"))
    assert statements == ["BEGIN IMMEDIATE", "SELECT n FROM counter",
                          "BEGIN", "SELECT n FROM counter"]


def test_sqlite_second_writer_gets_busy_rather_than_both_proceeding(sqlite_app):
    with UnitOfWork() as first:
        # the first writer only reads, yet already holds the write lock
        assert first.session.scalar(text("SELECT n FROM counter")) == 0
        started = time.monotonic()
        with UnitOfWork() as second, pytest.raises(OperationalError) as caught:
            second.session.execute(text("SELECT n FROM counter"))
        waited = time.monotonic() - started
        assert "database is locked" in str(caught.value)
        assert is_retryable(caught.value)
        # it waited out the busy timeout (200 ms) before giving up
        assert waited >= 0.15
        first.session.execute(text("UPDATE counter SET n = n + 1"))
        first.commit()
    with read() as session:
        assert session.scalar(text("SELECT n FROM counter")) == 1


def test_sqlite_second_writer_waits_for_the_first(sqlite_app, tmp_path):
    """Two read-modify-write increments: the second waits and sees the first's write, so
    no update is lost."""
    app = make_test_app(f"sqlite:///{tmp_path / 'locks.sqlite3'}", DB_BUSY_TIMEOUT_MS=5000)
    first_has_lock = threading.Event()
    errors: list[BaseException] = []

    def first_writer() -> None:
        try:
            with app.app_context(), UnitOfWork() as uow:
                n = uow.session.scalar(text("SELECT n FROM counter"))
                first_has_lock.set()
                time.sleep(0.3)
                uow.session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
                uow.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            first_has_lock.set()

    thread = threading.Thread(target=first_writer)
    thread.start()
    try:
        assert first_has_lock.wait(5)
        with app.app_context():
            started = time.monotonic()
            with UnitOfWork() as uow:
                n = uow.session.scalar(text("SELECT n FROM counter"))
                waited = time.monotonic() - started
                uow.session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
                uow.commit()
    finally:
        thread.join(5)
        with app.app_context():
            db.engine.dispose()
    assert errors == []
    assert waited >= 0.1
    assert n == 1  # read after the first writer's commit
    with read() as session:
        assert session.scalar(text("SELECT n FROM counter")) == 2


def test_sqlite_reader_is_not_blocked_by_a_writer(sqlite_app):
    with UnitOfWork() as writer:
        writer.session.execute(text("UPDATE counter SET n = 5"))
        with read() as session:
            # WAL: the reader sees the last committed state at once
            assert session.scalar(text("SELECT n FROM counter")) == 0
        writer.commit()


# --------------------------------------------------------------------------- both backends


def test_foreign_keys_are_enforced(app):
    with UnitOfWork() as uow:
        uow.session.add(RateCard(partner_id=999_999, valid_from=datetime(2026, 1, 1, tzinfo=UTC),
                                 earn_rate=Decimal("1"), issue_price=Decimal("0"),
                                 redeem_rate=Decimal("0")))
        with pytest.raises(IntegrityError):
            uow.session.flush()


def _partner(code: str) -> Partner:
    return Partner(code=code, name=code, kind="merchant", currency="GBP")


def test_unit_of_work_rolls_back_unless_committed(app):
    with UnitOfWork() as uow:
        uow.session.add(_partner("dropped"))
        uow.session.flush()
    with pytest.raises(RuntimeError), UnitOfWork() as uow:
        uow.session.add(_partner("failed"))
        uow.session.flush()
        raise RuntimeError("use case failed")
    with UnitOfWork() as uow:
        uow.session.add(_partner("kept"))
        uow.commit()
    with read() as session:
        assert session.scalars(select(Partner.code)).all() == ["kept"]


def test_read_only_unit_of_work_cannot_commit(app):
    with UnitOfWork(readonly=True) as uow, pytest.raises(RuntimeError):
        uow.commit()


def test_objects_stay_readable_after_the_unit_of_work(app):
    with UnitOfWork() as uow:
        partner = _partner("acme")
        uow.session.add(partner)
        uow.commit()
    # expire_on_commit=False: no lazy load on a closed session
    assert partner.code == "acme"
    assert partner.created_at.tzinfo is UTC


def test_run_with_retries_retries_transient_conflicts(app):
    attempts = []

    def work() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        return "done"

    assert run_with_retries(work, attempts=5) == "done"
    assert len(attempts) == 3


def test_run_with_retries_gives_up_and_never_retries_other_errors(app):
    attempts = []

    def locked() -> None:
        attempts.append(1)
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    with pytest.raises(OperationalError):
        run_with_retries(locked, attempts=2)
    assert len(attempts) == 2

    attempts.clear()

    def duplicate() -> None:
        attempts.append(1)
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    with pytest.raises(IntegrityError):
        run_with_retries(duplicate, attempts=5)
    assert len(attempts) == 1


def test_timestamps_and_decimals_round_trip_exactly(app):
    when = datetime(2026, 3, 29, 1, 30, 15, tzinfo=UTC)
    with UnitOfWork() as uow:
        partner = _partner("acme")
        partner.rate_cards.append(RateCard(valid_from=when, earn_rate=Decimal("1.5"),
                                           issue_price=Decimal("0.00012345"),
                                           redeem_rate=Decimal("12345678.00000001")))
        uow.session.add(partner)
        uow.commit()
    with read() as session:
        card = session.scalar(select(RateCard))
        assert card.valid_from == when and card.valid_from.tzinfo is UTC
        assert card.issue_price == Decimal("0.00012345")
        assert card.redeem_rate == Decimal("12345678.00000001")
        assert session.scalar(select(func.count()).select_from(RateCard)) == 1


def test_decimals_read_back_the_same_on_both_backends(app):
    # PostgreSQL's numeric(24, 8) would otherwise answer "1.00000000" where SQLite says "1"
    when = datetime(2026, 1, 1, tzinfo=UTC)
    with UnitOfWork() as uow:
        partner = _partner("acme")
        partner.rate_cards.append(RateCard(valid_from=when, earn_rate=Decimal("100"),
                                           issue_price=Decimal("0.0100"),
                                           redeem_rate=Decimal("0E-8")))
        uow.session.add(partner)
        uow.commit()
    with read() as session:
        card = session.scalar(select(RateCard))
    assert [str(card.earn_rate), str(card.issue_price), str(card.redeem_rate)] == [
        "100", "0.01", "0"]


def test_a_snapshot_read_and_its_side_statement_see_one_moment(app):
    """Partners added after a snapshot read began are seen neither by it nor by the
    statement it runs alongside."""
    with UnitOfWork() as uow:
        uow.session.add(_partner("before"))
        uow.commit()
    codes = select(Partner.code).order_by(Partner.code)
    with read(snapshot=True) as session:
        assert session.scalars(codes).all() == ["before"]
        with UnitOfWork() as uow:
            uow.session.add(_partner("after"))
            uow.commit()
        with alongside(session, codes) as rows:
            assert session.scalars(codes).all() == ["before"]
            assert [row.code for row in rows()] == ["before"]
    with read(snapshot=True) as session, alongside(session, codes) as rows:
        assert [row.code for row in rows()] == ["after", "before"]


@pytest.mark.postgres
def test_side_statement_runs_with_its_own_settings_on_another_connection(app):
    with read(snapshot=True) as session:
        session.execute(text("SET LOCAL work_mem = '5MB'"))
        mine = session.execute(text("SELECT pg_backend_pid()")).scalar()
        side = text("SELECT pg_backend_pid() AS pid, current_setting('work_mem') AS work_mem, "
                    "current_setting('transaction_isolation') AS isolation")
        with alongside(session, side, {"work_mem": "7MB"}) as rows:
            (row,) = rows()
        assert row.pid != mine
        assert (row.work_mem, row.isolation) == ("7MB", "repeatable read")
        assert session.execute(text("SHOW work_mem")).scalar() == "5MB"


@pytest.mark.postgres
def test_side_statement_is_cancelled_when_the_block_fails(app):
    began = time.monotonic()
    with pytest.raises(RuntimeError), read(snapshot=True) as session, \
            alongside(session, text("SELECT pg_sleep(30)")):
        _wait_until_running("SELECT pg_sleep(30)")
        raise RuntimeError("the report failed")
    assert time.monotonic() - began < 10


def _wait_until_running(statement: str) -> None:
    watch = text("SELECT count(*) FROM pg_stat_activity WHERE query = :q AND state = 'active'")
    deadline = time.monotonic() + 10
    with db.engine.connect() as conn:
        while not conn.execute(watch, {"q": statement}).scalar():
            assert time.monotonic() < deadline, "the side statement never started"
            conn.rollback()
