"""Reads routed to a streaming replica (``COALITION_DATABASE_REPLICA_URL``), on a primary
and a hot standby of this test's own (pg_basebackup), on ports 18130-18131.

The standby's replay is paused (``pg_wal_replay_pause``) so that it is behind the primary
by a known write, and every statement each engine runs is counted:

* balance, history and program reads go to the replica while it is within the lag bound
  (they answer the replica's older balance, and only the replica's engine is used);
* a booking, and a read of the transaction it booked, never do (their answers carry the
  write);
* with the standby further behind than ``DB_REPLICA_MAX_LAG``, the same reads go to the
  primary; once it has caught up, back to the replica.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, text

from coalition.db import db
from coalition.migrations import runner
from partners.service import create_partner, issue_partner_client
from tests.coalition.pg_cluster import (
    Server,
    fixed_ports,
    kill,
    primary_and_replica,
    url,
    wait_for,
    workdir,
)
from tests.conftest import bearer, fetch_token, make_test_app

pytestmark = pytest.mark.postgres

PRIMARY_PORT, REPLICA_PORT = 18130, 18131


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str, Server]]:
    """A primary with the ``coalition`` database migrated, and its streaming replica:
    their URLs, and the replica's server."""
    with ExitStack() as stack:
        stack.enter_context(fixed_ports())
        root = stack.enter_context(workdir())
        primary, replica = primary_and_replica(stack, root, PRIMARY_PORT, REPLICA_PORT)
        admin = create_engine(url(primary.port), isolation_level="AUTOCOMMIT")
        stack.callback(admin.dispose)
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE coalition"))
        primary_url, replica_url = url(primary.port, "coalition"), url(replica.port, "coalition")
        app = make_test_app(primary_url)
        with app.app_context():
            runner.upgrade()
            db.dispose()
        yield primary_url, replica_url, replica


def _counting(app: Flask) -> Counter[str]:
    """How many statements each engine of ``app`` runs for the requests (the lag checks,
    which read WAL positions, left out): ``primary`` and ``replica``."""
    ran: Counter[str] = Counter()
    state = app.extensions["coalition.db"]
    for name, engine in (("primary", state.engine), ("replica", state.replica.engine)):
        def count(conn: Any, cursor: Any, statement: str, *_: Any, name: str = name) -> None:
            if "_wal_" not in statement:
                ran[name] += 1

        event.listen(engine, "before_cursor_execute", count)
    return ran


def _dispose(app: Flask) -> None:
    with app.app_context():
        db.dispose()


def _sql(database_url: str, statement: str) -> Any:
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return conn.execute(text(statement)).scalar()
    finally:
        engine.dispose()


def _caught_up(primary_url: str, replica_url: str) -> bool:
    lsn = _sql(primary_url, "SELECT pg_current_wal_lsn()")
    return bool(_sql(replica_url, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"))


def test_reads_go_to_the_replica_within_the_lag_bound(
        servers: tuple[str, str, Server]) -> None:
    primary_url, replica_url, replica = servers
    # one app that always trusts the replica, one that leaves it when 1 s behind
    patient = make_test_app(primary_url, DATABASE_REPLICA_URL=replica_url,
                            DB_REPLICA_MAX_LAG=3600)
    strict = make_test_app(primary_url, DATABASE_REPLICA_URL=replica_url,
                           DB_REPLICA_MAX_LAG=1)
    with ExitStack() as cleanup:
        for app in (patient, strict):
            cleanup.callback(_dispose, app)
        with patient.app_context():
            create_partner(code="replica", name="Replica", kind="merchant", currency="GBP",
                           earn_rate=Decimal("1"), issue_price=Decimal("0.01"),
                           redeem_rate=Decimal("0.008"))
            issued = issue_partner_client("replica", ["points:earn", "members:write",
                                                      "members:read", "transactions:read"])
        clients = {"patient": patient.test_client(), "strict": strict.test_client()}
        ran = {"patient": _counting(patient), "strict": _counting(strict)}
        headers = bearer(fetch_token(clients["patient"], issued.client_id,
                                     issued.client_secret))

        def call(app: str, method: str, path: str, body: Any = None) -> Any:
            response = clients[app].open(path, method=method, json=body, headers=headers)
            assert response.status_code in (200, 201), response.get_json()
            return response.get_json()

        def balance(app: str) -> int:
            return call(app, "GET", f"/v1/members/{member}/balance")["available"]

        member = call("patient", "POST", "/v1/members",
                      {"partner_member_ref": "r1"})["member_number"]
        call("patient", "POST", "/v1/earn",
             {"member_number": member, "partner_txn_id": "first", "points": 100})
        wait_for(lambda: _caught_up(primary_url, replica_url), "the replica did not catch up")

        # within the bound, and caught up: the reads are the replica's
        for app in ran:
            ran[app].clear()
            assert balance(app) == 100
            assert ran[app]["replica"] > 0
        assert [t["partner_txn_id"] for t in call("patient", "GET", "/v1/transactions")
                ["items"]] == ["first"]
        assert call("patient", "GET", "/v1/program")

        # the standby stops replaying: it is behind by the next booking
        _sql(replica_url, "SELECT pg_wal_replay_pause()")
        ran["patient"].clear()
        booked = call("patient", "POST", "/v1/earn",
                      {"member_number": member, "partner_txn_id": "second", "points": 50})
        assert booked["balance"]["available"] == 150  # the answer carries its own write
        assert ran["patient"]["replica"] == 0  # a booking never touches the replica
        # the transaction just booked, asked for by the id in its answer: from the primary
        assert call("patient", "GET", f"/v1/transactions/{booked['id']}")["partner_txn_id"] \
            == "second"
        assert ran["patient"]["replica"] == 0

        # the patient app still reads the replica, which has not seen the booking
        assert balance("patient") == 100
        # nor a member enrolled since: its balance is read from the primary, not a 404
        newer = call("patient", "POST", "/v1/members",
                     {"partner_member_ref": "r2"})["member_number"]
        assert call("patient", "GET", f"/v1/members/{newer}/balance")["available"] == 0
        assert [t["partner_txn_id"] for t in call("patient", "GET", "/v1/transactions")
                ["items"]] == ["first"]
        assert ran["patient"]["replica"] > 0

        # the strict app finds the replica more than 1 s behind, and reads the primary
        time.sleep(1.2)
        wait_for(lambda: balance("strict") == 150, "reads did not leave the lagging replica",
                 timeout=10)
        with strict.app_context():
            assert db._state.replica.lag > 1
        ran["strict"].clear()
        assert balance("strict") == 150
        assert ran["strict"]["replica"] == 0 and ran["strict"]["primary"] > 0

        # caught up again: back to the replica
        _sql(replica_url, "SELECT pg_wal_replay_resume()")
        wait_for(lambda: _caught_up(primary_url, replica_url), "the replica did not catch up")
        time.sleep(0.6)  # the strict app measures the lag every 0.5 s
        ran["strict"].clear()
        assert balance("strict") == 150
        assert ran["strict"]["replica"] > 0

        # the replica is lost: the read under way on it answers 503 (its client retries),
        # and the reads after it go to the primary
        kill(replica.process)
        first = clients["strict"].get(f"/v1/members/{member}/balance", headers=headers)
        assert first.status_code in (200, 503), first.get_json()
        if first.status_code == 503:
            assert first.get_json()["error"] == "unavailable" and "Retry-After" in first.headers
        ran["strict"].clear()
        assert balance("strict") == 150
        assert ran["strict"]["replica"] == 0 and ran["strict"]["primary"] > 0
