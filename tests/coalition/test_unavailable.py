"""No primary reachable: a 503 with Retry-After in the one error shape, never a 500; a unit
of work retried while a failover is under way; a commit whose outcome is unknown retried
only by work that replays it, and a real booking whose COMMIT answer is cut on the wire
answered once (DESIGN.md "Running on more than one machine").

The Patroni failover itself is in test_failover.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import psycopg
import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from coalition.db import (
    CommitOutcomeUnknown,
    UnitOfWork,
    db,
    is_unreachable,
    run_with_retries,
)
from tests.conftest import make_test_app
from tests.factories.member_records import member_token
from tests.factories.partner_api import earn, enrol, publish

#: nothing listens here (the range this project's own test clusters use)
NOWHERE = "postgresql+psycopg://postgres@127.0.0.1:18199/coalition"


@pytest.fixture
def down_app() -> Iterator[Flask]:
    app = make_test_app(NOWHERE, DB_FAILOVER_WAIT=0, DB_RETRY_AFTER=7, DB_CONNECT_TIMEOUT=1)
    with app.app_context():
        yield app
        db.dispose()


def _lost() -> OperationalError:
    """What SQLAlchemy raises when libpq loses (or never gets) its connection."""
    return OperationalError("SELECT 1", {}, psycopg.OperationalError(
        "consuming input failed: server closed the connection unexpectedly"))


def test_no_primary_answers_503_with_retry_after(down_app: Flask) -> None:
    client = down_app.test_client()
    for method, path, body in (("GET", "/v1/program", None),
                               ("POST", "/v1/earn", {"member_number": "1", "points": 1,
                                                     "partner_txn_id": "t"})):
        response = client.open(path, method=method, json=body,
                               headers={"Authorization": "Bearer some-token"})
        assert response.status_code == 503, response.get_json()
        assert response.headers["Retry-After"] == "7"
        answer = response.get_json()
        assert answer["error"] == "unavailable" and answer["code"] == 503
        assert set(answer) == {"code", "status", "message", "error"}
        assert "18199" not in answer["message"]  # nothing of the database leaks


def test_unreachable_is_told_from_other_errors() -> None:
    assert is_unreachable(_lost())
    assert not is_unreachable(OperationalError("x", {}, Exception("database is locked")))
    timeout = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    assert not is_unreachable(OperationalError("x", {}, timeout))


def test_a_lost_connection_is_retried_while_a_failover_may_end(down_app: Flask) -> None:
    down_app.config["DB_FAILOVER_WAIT"] = 2
    calls: list[float] = []

    def work() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise _lost()
        return "booked"

    assert run_with_retries(work) == "booked"
    assert len(calls) == 3

    calls.clear()

    def never() -> str:
        calls.append(time.monotonic())
        raise _lost()

    started = time.monotonic()
    with pytest.raises(OperationalError):
        run_with_retries(never)
    assert 2 <= time.monotonic() - started < 4 and len(calls) > 2


def test_an_unknown_commit_is_retried_only_by_work_that_replays(down_app: Flask) -> None:
    down_app.config["DB_FAILOVER_WAIT"] = 2
    attempts = []

    def work() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise CommitOutcomeUnknown("lost while committing")
        return "replayed"

    with pytest.raises(CommitOutcomeUnknown):
        run_with_retries(work)  # it might have committed: running it again could double it
    assert len(attempts) == 1
    assert run_with_retries(work, replays=True) == "replayed"


@pytest.mark.postgres
def test_a_connection_lost_at_commit_is_an_unknown_outcome(app: Flask) -> None:
    with UnitOfWork() as uow:
        pid = uow.session.execute(text("SELECT pg_backend_pid()")).scalar()
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(CommitOutcomeUnknown) as caught:
            uow.commit()
    assert is_unreachable(caught.value.__cause__)
    db.dispose()  # the pool's other connections are fine; start the next test clean


@pytest.mark.postgres
def test_an_unreachable_replica_sends_reads_to_the_primary(app: Flask) -> None:
    """A replica that cannot be reached serves nothing: the reads go to the primary, and it
    is not tried again (each try may wait for the connect timeout) for a while."""
    routed = make_test_app(app.config["DATABASE_URL"], DATABASE_REPLICA_URL=NOWHERE,
                           DB_CONNECT_TIMEOUT=1)
    with routed.app_context():
        try:
            client = routed.test_client()
            assert client.get("/v1/program").status_code == 200
            replica = db._state.replica
            assert replica is not None and replica.lag is None and not replica.usable()
            # not measured again for the back-off, far longer than the lag-check interval
            assert replica._next_check - time.monotonic() > 5 > replica.interval
            assert client.get("/v1/program").status_code == 200
        finally:
            db.dispose()


# ------------------------------------------------------- a commit whose answer is lost

#: PostgreSQL's answer to a COMMIT that committed: CommandComplete "COMMIT"
COMMITTED = b"C\x00\x00\x00\x0bCOMMIT\x00"


class CommitCutter:
    """A TCP relay in front of PostgreSQL that, once armed, passes the server's answer to
    one COMMIT to nobody and cuts that connection: the transaction is committed, and the
    client only sees its connection lost (what a primary lost just after committing does)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=10)
            for args in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pipe, args=args, daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if answers and COMMITTED in chunk and self.armed.is_set():
                    self.armed.clear()
                    self.cut.set()
                    break  # the commit's answer goes nowhere
                sink.sendall(chunk)
        except OSError:
            pass
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.mark.postgres
def test_a_booking_whose_commit_answer_is_lost_is_answered_once(app: Flask,
                                                                make_partner) -> None:
    """The earn commits, its connection is cut before the answer arrives: the unit of work
    runs again, finds the entry by its partner_txn_id, and answers with it. One entry."""
    partner, headers = make_partner("cutter")
    client = app.test_client()
    member = client.post("/v1/members", json={"partner_member_ref": "c1"},
                         headers=headers).get_json()["member_number"]
    url = make_url(app.config["DATABASE_URL"])
    cutter = CommitCutter(url.port or 5432)
    through = make_test_app(
        url.set(host="127.0.0.1", port=cutter.port, query={"sslmode": "disable"})
        .render_as_string(hide_password=False))
    try:
        with through.app_context():
            cutter.armed.set()
            response = through.test_client().post(
                "/v1/earn", json={"member_number": member, "partner_txn_id": "lost-answer",
                                  "points": 40}, headers=headers)
            db.dispose()
    finally:
        cutter.close()
    assert cutter.cut.is_set(), "no COMMIT answer was cut: the test proved nothing"
    assert response.status_code == 201, response.get_json()
    assert response.headers.get("Idempotent-Replayed") == "true"
    assert response.get_json()["balance"]["available"] == 40
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM entry WHERE partner_txn_id = "
                                 "'lost-answer'")).scalar() == 1
        assert conn.execute(text("SELECT sum(available) FROM wallet")).scalar() == 40


@pytest.mark.postgres
def test_a_member_transfer_whose_commit_answer_is_lost(app: Flask, make_partner,
                                                       operator_headers) -> None:
    """With an Idempotency-Key, the transfer is run again and answered once, as a replay;
    without one, running it again could move the points twice, so the member is told the
    outcome is unknown (503) — and the transfer had in fact been made, once."""
    _, headers = make_partner("cutter")
    client = app.test_client()
    publish(client, operator_headers)
    alice, bob = (enrol(client, headers, ref) for ref in ("alice", "bob"))
    earn(client, headers, alice, "welcome", 100)
    alice_h = member_token(alice)
    url = make_url(app.config["DATABASE_URL"])
    cutter = CommitCutter(url.port or 5432)
    through = make_test_app(
        url.set(host="127.0.0.1", port=cutter.port, query={"sslmode": "disable"})
        .render_as_string(hide_password=False))
    answers = []
    try:
        with through.app_context():
            for key, points in (("move-1", 30), (None, 20)):
                cutter.cut.clear()
                cutter.armed.set()
                answers.append(through.test_client().post(
                    "/v1/me/transfers", json={"to_member_number": bob, "points": points},
                    headers={**alice_h, **({"Idempotency-Key": key} if key else {})}))
                assert cutter.cut.is_set(), "no COMMIT answer was cut"
            db.dispose()
    finally:
        cutter.close()
    keyed, unkeyed = answers
    assert keyed.status_code == 201, keyed.get_json()
    assert keyed.headers.get("Idempotent-Replayed") == "true"
    assert keyed.get_json()["balance"]["available"] == 70
    assert unkeyed.status_code == 503 and unkeyed.headers["Retry-After"]
    assert "Idempotency-Key" in unkeyed.get_json()["message"]
    with db.engine.connect() as conn:
        moved = conn.execute(text("SELECT points FROM entry WHERE kind = 'transfer' "
                                  "ORDER BY id")).scalars().all()
        balances = dict(conn.execute(text(
            "SELECT m.member_number, w.available FROM wallet w "
            "JOIN member m ON m.id = w.member_id")).all())
    assert moved == [30, 20]  # each once
    assert (balances[alice], balances[bob]) == (50, 50)
