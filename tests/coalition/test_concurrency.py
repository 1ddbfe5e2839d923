"""The ledger under real concurrency (DESIGN.md "The ledger"), on PostgreSQL only.

Every test here runs many client threads, each with its own keep-alive HTTP connection,
against the app served by a threaded WSGI server on loopback, with a database pool big
enough that the requests really overlap in the database. Requests that must race are
released together by a barrier. Nothing is mocked: the races, row locks, unique-index
waits and deadlocks are PostgreSQL's own.

Each test has a global deadline: a thread still running after it is reported as a hang (a
lost wakeup or a deadlock nobody detected), not waited for.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from coalition.db import UnitOfWork, db, is_retryable, run_with_retries
from coalition.errors import InsufficientPoints
from coalition.ledger import journal
from tests.conftest import LiveServer, make_test_app

# up to 80 connections at once: one such test at a time, whatever the worker
pytestmark = [pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.usefixtures("many_connections")]

#: no test may take longer than this to get every thread back
DEADLINE = 60.0
#: a single HTTP call
REQUEST_TIMEOUT = 30.0


# --------------------------------------------------------------------------- harness


@dataclass
class Server:
    url: str
    app: Flask


@pytest.fixture
def server(app: Flask, database_url: str) -> Iterator[Server]:
    """Its own app on the test database with a pool for ~80 concurrent transactions (the
    shared test app's 10 + 10 would queue the threads at the pool, not in PostgreSQL),
    served over HTTP. Depends on ``app``, whose teardown empties every table."""
    hot = make_test_app(database_url, DB_POOL_SIZE=40, DB_MAX_OVERFLOW=40)
    try:
        with LiveServer(hot) as live:
            yield Server(live.url, hot)
    finally:
        with hot.app_context():
            db.engine.dispose()


@dataclass
class Reply:
    status: int
    body: Any
    replayed: bool

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


class Api:
    """One client with its own HTTP connection (a ``requests.Session`` keeps it alive)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers.update(headers)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def _reply(self, response: requests.Response) -> Reply:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return Reply(response.status_code, body,
                     response.headers.get("Idempotent-Replayed") == "true")

    def post(self, path: str, body: dict[str, Any]) -> Reply:
        return self._reply(self.session.post(self.url + path, json=body,
                                             timeout=REQUEST_TIMEOUT))

    def get(self, path: str) -> Reply:
        return self._reply(self.session.get(self.url + path, timeout=REQUEST_TIMEOUT))

    def warm_up(self) -> None:
        """Open the connection (and authenticate once) before the race starts."""
        assert self.get("/v1/program").status == 200


def run_concurrently(count: int, target: Callable[[int, threading.Barrier], Any],
                     deadline: float = DEADLINE) -> list[Any]:
    """Run ``target(i, barrier)`` in ``count`` threads; the barrier (for ``count``
    parties) lets each release its racing step together. Returns the results in order;
    fails on any exception and on any thread still running after ``deadline`` seconds."""
    barrier = threading.Barrier(count, timeout=deadline)
    results: list[Any] = [None] * count
    errors: list[str] = []

    def runner(i: int) -> None:
        try:
            results[i] = target(i, barrier)
        except BaseException:  # noqa: BLE001 - reported below, with the traceback
            barrier.abort()
            errors.append(f"thread {i}:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=runner, args=(i,), daemon=True, name=f"client-{i}")
               for i in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, started + deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"{len(hung)} threads still running after {deadline}s: {hung}"
    assert not errors, "\n".join(errors)
    return results


def unexpected(replies: list[Reply], allowed: dict[int, set[str | None]]) -> list[Reply]:
    """The replies whose status, or whose error code for that status, is not allowed."""
    return [r for r in replies if r.status not in allowed or r.error not in allowed[r.status]]


# --------------------------------------------------------------------------- setup


def enrol(client: FlaskClient, headers: dict[str, str], ref: str) -> str:
    response = client.post("/v1/members", json={"partner_member_ref": ref}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["member_number"]


def post(client: FlaskClient, headers: dict[str, str], path: str,
         body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 201, (path, body, response.get_json())
    return response.get_json()


def available(client: FlaskClient, headers: dict[str, str], number: str) -> dict[str, int]:
    response = client.get(f"/v1/members/{number}/balance", headers=headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    return {"available": body["available"], "pending": body["pending"], "held": body["held"]}


def scalar(sql: str, **params: Any) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def member_id(number: str) -> int:
    return scalar("SELECT id FROM member WHERE member_number = :n", n=number)


# --------------------------------------------------------------------------- invariants


def _sql_violations() -> list[str]:
    """DESIGN.md invariants 1-4 (and the lots agreeing with their movements), in SQL."""
    checks = {
        "entry postings do not sum to zero": """
            SELECT entry_id, SUM(points) FROM posting GROUP BY entry_id
            HAVING SUM(points) <> 0""",
        "wallet differs from its postings": """
            SELECT w.member_id, w.available, w.pending, w.held, p.available, p.pending, p.held
            FROM wallet w LEFT JOIN (
                SELECT member_id,
                       SUM(points) FILTER (WHERE account = 'member:available') AS available,
                       SUM(points) FILTER (WHERE account = 'member:pending') AS pending,
                       SUM(points) FILTER (WHERE account = 'member:held') AS held
                FROM posting WHERE member_id IS NOT NULL GROUP BY member_id
            ) p ON p.member_id = w.member_id
            WHERE w.available <> COALESCE(p.available, 0)
               OR w.pending <> COALESCE(p.pending, 0)
               OR w.held <> COALESCE(p.held, 0)""",
        "wallet available differs from its live lots": """
            SELECT w.member_id, w.available, l.live
            FROM wallet w LEFT JOIN (
                SELECT member_id, SUM(remaining) AS live FROM lot WHERE state = 'live'
                GROUP BY member_id
            ) l ON l.member_id = w.member_id
            WHERE w.available <> COALESCE(l.live, 0)""",
        "wallet pending differs from its pending lots": """
            SELECT w.member_id, w.pending, l.pending
            FROM wallet w LEFT JOIN (
                SELECT member_id, SUM(remaining) AS pending FROM lot WHERE state = 'pending'
                GROUP BY member_id
            ) l ON l.member_id = w.member_id
            WHERE w.pending <> COALESCE(l.pending, 0)""",
        "wallet held differs from its open holds": """
            SELECT w.member_id, w.held, h.held
            FROM wallet w LEFT JOIN (
                SELECT member_id, SUM(points) AS held FROM hold WHERE status = 'open'
                GROUP BY member_id
            ) h ON h.member_id = w.member_id
            WHERE w.held <> COALESCE(h.held, 0)""",
        "negative balance": """
            SELECT member_id FROM wallet WHERE available < 0 OR pending < 0 OR held < 0""",
        "lot remaining differs from its movements": """
            SELECT l.id, l.points, l.remaining, m.moved
            FROM lot l LEFT JOIN (
                SELECT lot_id, SUM(points) AS moved FROM lot_movement GROUP BY lot_id
            ) m ON m.lot_id = l.id
            WHERE l.remaining <> l.points + COALESCE(m.moved, 0)""",
        "two entries for one partner_txn_id": """
            SELECT partner_id, partner_txn_id, COUNT(*) FROM entry
            WHERE partner_txn_id IS NOT NULL
            GROUP BY partner_id, partner_txn_id HAVING COUNT(*) > 1""",
        "reversed more than the original": """
            SELECT o.id, o.points, SUM(r.points) FROM entry o
            JOIN entry r ON r.reference_id = o.id AND r.kind IN ('earn_reversal', 'burn_reversal')
            GROUP BY o.id, o.points HAVING SUM(r.points) > o.points""",
    }
    found = []
    with db.engine.connect() as conn:
        for name, sql in checks.items():
            rows = conn.execute(text(sql)).all()
            if rows:
                found.append(f"{name}: {rows[:10]}")
    return found


def assert_ledger_consistent() -> None:
    """The invariants hold: ``coalition.ledger.check.check_ledger()`` when it exists, and
    the same rules in plain SQL in any case."""
    violations = _sql_violations()
    assert not violations, "\n".join(violations)
    try:
        from coalition.ledger.check import check_ledger  # type: ignore[import-not-found]
    except ImportError:
        return
    report = check_ledger()
    if report is None or isinstance(report, bool):
        assert report is not False, "check_ledger() found the ledger inconsistent"
    elif hasattr(report, "ok"):
        assert report.ok, report.to_dict() if hasattr(report, "to_dict") else report
    else:
        assert not list(report), report


# --------------------------------------------------------------------------- the model


@dataclass
class Model:
    """What the successful responses imply for each member's balances."""

    balances: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, number: str, available: int = 0, held: int = 0) -> None:
        with self.lock:
            self.balances[number]["available"] += available
            self.balances[number]["held"] += held

    def of(self, number: str) -> dict[str, int]:
        return {"available": self.balances[number]["available"], "pending": 0,
                "held": self.balances[number]["held"]}


# --------------------------------------------------------------------------- 1. racing burns


def test_64_concurrent_burns_never_overdraw_one_member(server, client, make_partner):
    points, cost, threads = 1010, 25, 64
    _, headers = make_partner("acme")
    number = enrol(client, headers, "hot-1")
    # several lots, so the burns also race over which lots they consume
    for i, lot in enumerate((400, 300, 200, 110)):
        post(client, headers, "/v1/earn",
             {"member_number": number, "partner_txn_id": f"seed-{i}", "points": lot})

    def burn(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            return api.post("/v1/burn", {"member_number": number,
                                         "partner_txn_id": f"burn-{i}", "points": cost})

    replies = run_concurrently(threads, burn)

    assert not unexpected(replies, {201: {None}, 409: {"insufficient_points"}}), \
        unexpected(replies, {201: {None}, 409: {"insufficient_points"}})
    won = [r for r in replies if r.status == 201]
    assert len(won) == points // cost == 40
    assert len(replies) - len(won) == threads - 40
    assert not any(r.replayed for r in replies)
    # the burns were serialised: each saw a different balance, one step of ``cost`` apart
    seen = sorted(r.body["balance"]["available"] for r in won)
    assert seen == [points - cost * n for n in range(40, 0, -1)]
    final = points - len(won) * cost
    assert final == 10
    assert available(client, headers, number) == {"available": final, "pending": 0, "held": 0}
    assert scalar("SELECT COUNT(*) FROM entry WHERE kind = 'burn'") == 40
    assert scalar("SELECT SUM(remaining) FROM lot") == final
    # what is left cannot be held either (a hold refused for want of points says so)
    with Api(server.url, headers) as api:
        refused = api.post("/v1/holds", {"member_number": number, "partner_txn_id": "hold-1",
                                         "points": final + 1})
    assert (refused.status, refused.error) == (409, "insufficient_points"), refused
    assert_ledger_consistent()


# --------------------------------------------------------------------------- 2. racing duplicates


def _setup_duplicate(kind: str, client: FlaskClient, headers: dict[str, str],
                     number: str) -> tuple[str, dict[str, Any], dict[str, int]]:
    """The path and body of one ``kind`` request, and the balances after it."""
    if kind == "earn":
        return "/v1/earn", {"member_number": number, "points": 70}, \
            {"available": 170, "pending": 0, "held": 0}
    if kind == "burn":
        # exactly enough for one: a duplicate that runs the burn again must not be refused
        return "/v1/burn", {"member_number": number, "points": 100}, \
            {"available": 0, "pending": 0, "held": 0}
    if kind == "hold":
        return "/v1/holds", {"member_number": number, "points": 100}, \
            {"available": 0, "pending": 0, "held": 100}
    if kind in ("capture", "void"):
        hold = post(client, headers, "/v1/holds",
                    {"member_number": number, "partner_txn_id": "the-hold", "points": 100})
        if kind == "capture":
            return f"/v1/holds/{hold['id']}/capture", {"points": 60}, \
                {"available": 40, "pending": 0, "held": 0}
        return f"/v1/holds/{hold['id']}/void", {}, {"available": 100, "pending": 0, "held": 0}
    if kind == "reversal":
        burnt = post(client, headers, "/v1/burn",
                     {"member_number": number, "partner_txn_id": "the-burn", "points": 100})
        return f"/v1/transactions/{burnt['id']}/reversals", {}, \
            {"available": 100, "pending": 0, "held": 0}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["earn", "burn", "hold", "capture", "void", "reversal"])
def test_32_concurrent_duplicates_book_once_and_answer_alike(server, client, make_partner,
                                                              kind):
    _, headers = make_partner("acme")
    number = enrol(client, headers, "dup-1")
    post(client, headers, "/v1/earn",
         {"member_number": number, "partner_txn_id": "seed", "points": 100})
    path, body, after = _setup_duplicate(kind, client, headers, number)
    body = {**body, "partner_txn_id": "dup-7"}

    def send(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            return api.post(path, body)

    replies = run_concurrently(32, send)

    assert [r.status for r in replies] == [201] * 32, \
        [(r.status, r.body) for r in replies if r.status != 201]
    assert all(r.body == replies[0].body for r in replies), \
        [r.body for r in replies if r.body != replies[0].body]
    assert sum(not r.replayed for r in replies) == 1
    assert scalar("SELECT COUNT(*) FROM entry WHERE partner_txn_id = 'dup-7'") == 1
    assert available(client, headers, number) == after
    assert_ledger_consistent()


@pytest.mark.parametrize(("path", "first", "second"), [
    ("/v1/burn", 100, 60),   # whichever wins, the other could not be paid for any more
    ("/v1/earn", 10, 20),
])
def test_one_id_with_two_bodies_at_once_books_one_of_them(server, client, make_partner,
                                                          path, first, second):
    _, headers = make_partner("acme")
    number = enrol(client, headers, "dup-2")
    post(client, headers, "/v1/earn",
         {"member_number": number, "partner_txn_id": "seed", "points": 100})
    bodies = [{"member_number": number, "partner_txn_id": "dup-8", "points": points}
              for points in (first, second)]

    def send(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            return api.post(path, bodies[i % 2])

    replies = run_concurrently(32, send)

    assert scalar("SELECT COUNT(*) FROM entry WHERE partner_txn_id = 'dup-8'") == 1
    booked = scalar("SELECT points FROM entry WHERE partner_txn_id = 'dup-8'")
    winner = 0 if booked == first else 1
    same = [r for i, r in enumerate(replies) if i % 2 == winner]
    other = [r for i, r in enumerate(replies) if i % 2 != winner]
    assert [r.status for r in same] == [201] * 16, [(r.status, r.body) for r in same]
    assert all(r.body == same[0].body for r in same)
    assert sum(not r.replayed for r in same) == 1
    assert same[0].body["points"] == booked
    assert [(r.status, r.error) for r in other] == [(409, "idempotency_conflict")] * 16, \
        [(r.status, r.body) for r in other]
    sign = -1 if path == "/v1/burn" else 1
    assert available(client, headers, number)["available"] == 100 + sign * booked
    assert_ledger_consistent()


# --------------------------------------------------------------------------- 3. deadlocks


def test_crossing_reversals_burns_and_hot_holds_all_finish(server, client, make_partner):
    """Threads pair up on members X and Y in opposite orders (reverse a burn of one, then
    burn on the other), split burns into concurrent partial reversals, and hammer a hot
    member Z with holds, captures and voids among earns."""
    _, headers = make_partner("acme")
    x, y, z = (enrol(client, headers, ref) for ref in ("x", "y", "z"))
    model = Model()
    burns: dict[str, list[int]] = {}
    for number in (x, y):
        post(client, headers, "/v1/earn",
             {"member_number": number, "partner_txn_id": f"seed-{number}", "points": 2000})
        burns[number] = [
            post(client, headers, "/v1/burn", {"member_number": number,
                                               "partner_txn_id": f"b-{number}-{k}",
                                               "points": 10})["id"]
            for k in range(16)
        ]
        model.add(number, available=2000 - 160)
    post(client, headers, "/v1/earn",
         {"member_number": z, "partner_txn_id": "seed-z", "points": 300})
    model.add(z, available=300)

    threads, rounds = 16, 8
    over_reversed = Counter[int]()
    lock = threading.Lock()

    def work(i: int, barrier: threading.Barrier) -> list[Reply]:
        mine, theirs = (x, y) if i % 2 == 0 else (y, x)
        rng = random.Random(i)
        replies = []
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            for r in range(rounds):
                # two threads at a time reverse 5 points of the same burn of 10, and
                # two more do it again four rounds later: two of the four are refused
                target = burns[mine][(i // 4 + 4 * r) % 16]
                reply = api.post(f"/v1/transactions/{target}/reversals",
                                 {"partner_txn_id": f"rev-{i}-{r}", "points": 5})
                if reply.status == 201:
                    model.add(mine, available=5)
                elif reply.status == 422:
                    with lock:
                        over_reversed[target] += 1
                replies.append(reply)
                reply = api.post("/v1/burn", {"member_number": theirs,
                                              "partner_txn_id": f"burn-{i}-{r}", "points": 7})
                if reply.status == 201:
                    model.add(theirs, available=-7)
                replies.append(reply)
                # the hot member: a hold then its capture or void, or an earn
                if rng.random() < 0.7:
                    held = rng.randint(5, 40)
                    reply = api.post("/v1/holds", {"member_number": z,
                                                   "partner_txn_id": f"hold-{i}-{r}",
                                                   "points": held})
                    replies.append(reply)
                    if reply.status != 201:
                        continue
                    model.add(z, available=-held, held=held)
                    if rng.random() < 0.5:
                        taken = rng.randint(1, held)
                        reply = api.post(f"/v1/holds/{reply.body['id']}/capture",
                                         {"partner_txn_id": f"cap-{i}-{r}", "points": taken})
                        if reply.status == 201:
                            model.add(z, available=held - taken, held=-held)
                    else:
                        reply = api.post(f"/v1/holds/{reply.body['id']}/void",
                                         {"partner_txn_id": f"void-{i}-{r}"})
                        if reply.status == 201:
                            model.add(z, available=held, held=-held)
                    replies.append(reply)
                else:
                    earned = rng.randint(1, 30)
                    reply = api.post("/v1/earn", {"member_number": z,
                                                  "partner_txn_id": f"earn-{i}-{r}",
                                                  "points": earned})
                    if reply.status == 201:
                        model.add(z, available=earned)
                    replies.append(reply)
        return replies

    replies = [r for batch in run_concurrently(threads, work) for r in batch]

    allowed = {201: {None}, 409: {"insufficient_points"},
               422: {"invalid_request"}}  # 422: nothing left to reverse
    assert not unexpected(replies, allowed), unexpected(replies, allowed)
    # 16 threads x 8 rounds = 128 reversals of 5 points over 32 burns of 10: four each,
    # so each burn is reversed in full exactly and two of its four reversals are refused
    assert sorted(over_reversed.values()) == [2] * 32, over_reversed
    for number in (x, y, z):
        assert available(client, headers, number) == model.of(number), number
    # every burn of X and Y is now reversed in full, exactly
    assert scalar("""SELECT COUNT(*) FROM entry o WHERE o.kind = 'burn'
                     AND o.points = (SELECT SUM(points) FROM entry r
                                     WHERE r.reference_id = o.id)""") == 32
    assert_ledger_consistent()


def test_crossing_transfers_between_members_all_finish(server, client, make_partner):
    """Members transfer to each other in both directions at once (A->B while B->A, over
    three members), while the partner burns and earns on the same members: each transfer
    locks two wallets, so only a fixed lock order keeps this from deadlocking."""
    from tests.factories.member_records import member_token

    _, headers = make_partner("acme")
    numbers = [enrol(client, headers, f"t-{k}") for k in range(3)]
    tokens = {number: member_token(number) for number in numbers}
    model = Model()
    for number in numbers:
        post(client, headers, "/v1/earn",
             {"member_number": number, "partner_txn_id": f"seed-{number}", "points": 400})
        model.add(number, available=400)
    directions = [(0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (0, 2)]
    threads, rounds = 12, 10

    def work(i: int, barrier: threading.Barrier) -> list[Reply]:
        rng = random.Random(i)
        sender, receiver = (numbers[k] for k in directions[i % len(directions)])
        replies = []
        with Api(server.url, tokens[sender]) as member, Api(server.url, headers) as partner:
            member.warm_up()
            partner.warm_up()
            barrier.wait()
            for r in range(rounds):
                points = rng.randint(1, 80)
                reply = member.post("/v1/me/transfers",
                                    {"to_member_number": receiver, "points": points})
                if reply.status == 201:
                    model.add(sender, available=-points)
                    model.add(receiver, available=points)
                replies.append(reply)
                # the partner touches one of the two members meanwhile
                target = rng.choice((sender, receiver))
                points = rng.randint(1, 50)
                if rng.random() < 0.5:
                    reply = partner.post("/v1/burn", {"member_number": target,
                                                      "partner_txn_id": f"b-{i}-{r}",
                                                      "points": points})
                    if reply.status == 201:
                        model.add(target, available=-points)
                else:
                    reply = partner.post("/v1/earn", {"member_number": target,
                                                      "partner_txn_id": f"e-{i}-{r}",
                                                      "points": points})
                    if reply.status == 201:
                        model.add(target, available=points)
                replies.append(reply)
        return replies

    replies = [r for batch in run_concurrently(threads, work) for r in batch]

    allowed = {201: {None}, 409: {"insufficient_points"}}
    assert not unexpected(replies, allowed), unexpected(replies, allowed)
    transfers = [r for r in replies if r.status == 201 and r.body.get("type") == "transfer"]
    assert transfers, "no transfer went through"
    assert scalar("SELECT COUNT(*) FROM entry WHERE kind = 'transfer'") == len(transfers)
    for number in numbers:
        assert available(client, headers, number) == model.of(number), number
    assert_ledger_consistent()


def test_16_concurrent_duplicate_transfers_book_once(server, client, make_partner):
    from tests.factories.member_records import member_token

    _, headers = make_partner("acme")
    sender, receiver = (enrol(client, headers, ref) for ref in ("s", "r"))
    post(client, headers, "/v1/earn",
         {"member_number": sender, "partner_txn_id": "seed", "points": 100})
    # exactly enough for one: a duplicate that runs again must not be refused
    token = {**member_token(sender), "Idempotency-Key": "tx-0001"}

    def send(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, token) as api:
            api.warm_up()
            barrier.wait()
            return api.post("/v1/me/transfers", {"to_member_number": receiver, "points": 100})

    replies = run_concurrently(16, send)
    assert [r.status for r in replies] == [201] * 16, [(r.status, r.body) for r in replies]
    assert all(r.body == replies[0].body for r in replies)
    assert sum(not r.replayed for r in replies) == 1
    assert scalar("SELECT COUNT(*) FROM entry WHERE kind = 'transfer'") == 1
    assert available(client, headers, sender)["available"] == 0
    assert available(client, headers, receiver)["available"] == 100
    assert_ledger_consistent()


def test_opposite_lock_order_deadlock_is_detected_and_retried(server, client, make_partner):
    """Two units of work lock two wallets in opposite orders: PostgreSQL detects the
    deadlock (40P01), kills one, and ``run_with_retries`` runs that one again."""
    _, headers = make_partner("acme")
    first, second = (member_id(enrol(client, headers, ref)) for ref in ("a", "b"))
    versions = scalar("SELECT SUM(version) FROM wallet")
    both_hold_one = threading.Barrier(2, timeout=DEADLINE)
    attempts = [0, 0]
    failures: list[DBAPIError] = []

    def unit(i: int, order: tuple[int, int]) -> Callable[[], str]:
        def work() -> str:
            attempts[i] += 1
            with UnitOfWork() as uow:
                journal.lock_wallet(uow.session, order[0])
                if attempts[i] == 1:
                    both_hold_one.wait()  # each holds one lock and now wants the other's
                try:
                    journal.lock_wallet(uow.session, order[1])
                except DBAPIError as exc:
                    failures.append(exc)
                    raise
                for member in order:  # a change that shows both transactions committed
                    assert journal.change_wallet(uow.session, member) is not None
                uow.commit()
                return f"done-{i}"
        return work

    def run(i: int, _barrier: threading.Barrier) -> str:
        order = (first, second) if i == 0 else (second, first)
        with server.app.app_context():
            return run_with_retries(unit(i, order), attempts=5)

    started = time.monotonic()
    assert run_concurrently(2, run, deadline=30) == ["done-0", "done-1"]
    elapsed = time.monotonic() - started

    assert len(failures) == 1, failures
    assert failures[0].orig.sqlstate == "40P01"
    assert is_retryable(failures[0])
    assert sorted(attempts) == [1, 2]
    # each lock moves the version, and so does each change: 2 × (2 locks + 2 changes)
    assert scalar("SELECT SUM(version) FROM wallet") == versions + 8
    assert_ledger_consistent()
    assert elapsed < 15, f"took {elapsed:.1f}s"


def _raise_sqlstate(code: str) -> Callable[[], None]:
    def work() -> None:
        with UnitOfWork() as uow:
            uow.session.execute(text(
                f"DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '{code}'; END $$"))
    return work


def test_a_serialization_failure_is_retried_a_bounded_number_of_times(server):
    calls = 0
    fail = _raise_sqlstate("40001")

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            fail()
        return "ok"

    with server.app.app_context():
        assert run_with_retries(flaky, attempts=5) == "ok"
        assert calls == 3

        calls = 0

        def always() -> None:
            nonlocal calls
            calls += 1
            fail()

        with pytest.raises(DBAPIError) as raised:
            run_with_retries(always, attempts=4)
        assert calls == 4
        assert raised.value.orig.sqlstate == "40001"


@pytest.mark.parametrize("error", ["unique", "division", "domain"])
def test_a_non_retryable_error_is_not_retried(server, client, make_partner, error):
    _, headers = make_partner("acme")
    wallet_of = member_id(enrol(client, headers, "c"))
    calls = 0

    def work() -> None:
        nonlocal calls
        calls += 1
        with UnitOfWork() as uow:
            if error == "unique":
                uow.session.execute(text(
                    "INSERT INTO wallet (member_id, available, pending, held, version) "
                    "VALUES (:m, 0, 0, 0, 0)"), {"m": wallet_of})
            elif error == "division":
                uow.session.execute(text("SELECT 1 / 0"))
            else:
                raise InsufficientPoints("refused")
            uow.commit()

    expected = {"unique": IntegrityError, "division": DBAPIError,
                "domain": InsufficientPoints}[error]
    with server.app.app_context(), pytest.raises(expected) as raised:
        run_with_retries(work, attempts=5)
    assert calls == 1
    assert not is_retryable(raised.value)


# --------------------------------------------------------------------------- 4. racing enrolments


def test_16_concurrent_enrolments_of_one_reference_make_one_member(server, client,
                                                                   make_partner):
    _, headers = make_partner("acme")
    _, other_headers = make_partner("bravo")
    body = {"partner_member_ref": "card-42", "email": "ada@example.com", "name": "Ada"}

    def enrol_one(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            return api.post("/v1/members", body)

    replies = run_concurrently(16, enrol_one)
    assert sorted(r.status for r in replies) == [200] * 15 + [201], \
        [(r.status, r.body) for r in replies]
    numbers = {r.body["member_number"] for r in replies}
    assert len(numbers) == 1
    assert all(r.body["partner_member_ref"] == "card-42" for r in replies)
    assert scalar("SELECT COUNT(*) FROM member") == 1
    assert scalar("SELECT COUNT(*) FROM wallet") == 1
    assert scalar("SELECT COUNT(*) FROM member_link") == 1

    # another partner links its own reference to that member, 16 times at once
    (number,) = numbers

    def link_one(i: int, barrier: threading.Barrier) -> Reply:
        with Api(server.url, other_headers) as api:
            api.warm_up()
            barrier.wait()
            return api.post("/v1/members", {"partner_member_ref": "b-7",
                                            "member_number": number})

    replies = run_concurrently(16, link_one)
    assert [r.status for r in replies] == [200] * 16, [(r.status, r.body) for r in replies]
    assert {r.body["member_number"] for r in replies} == {number}
    assert scalar("SELECT COUNT(*) FROM member") == 1
    assert scalar("SELECT COUNT(*) FROM member_link") == 2


# --------------------------------------------------------------------------- 5. hot members


def test_hot_member_mix_balances_match_the_answers(server, client, make_partner):
    threads, operations = 8, 50
    _, headers = make_partner("acme")
    numbers = [enrol(client, headers, f"hot-{k}") for k in range(3)]
    model = Model()
    for number in numbers:
        post(client, headers, "/v1/earn",
             {"member_number": number, "partner_txn_id": f"seed-{number}", "points": 300})
        model.add(number, available=300)
    open_holds: list[tuple[str, int, int]] = []  # (member, hold id, points), any thread's
    holds_lock = threading.Lock()
    kinds = Counter[str]()

    def work(i: int, barrier: threading.Barrier) -> list[tuple[str, Reply]]:
        rng = random.Random(1000 + i)
        done = []
        with Api(server.url, headers) as api:
            api.warm_up()
            barrier.wait()
            for n in range(operations):
                txn = f"t{i}-{n}"
                number = rng.choice(numbers)
                op = rng.choices(["earn", "burn", "hold", "capture", "void"],
                                 weights=[25, 25, 20, 15, 15])[0]
                with holds_lock:
                    hold = rng.choice(open_holds) if open_holds else None
                if op in ("capture", "void") and hold is None:
                    op = "earn"
                # debits run larger than credits, so balances hover near zero and some
                # burns and holds are refused
                points = rng.randint(1, 60) if op == "earn" else rng.randint(20, 150)
                if op == "earn":
                    reply = api.post("/v1/earn", {"member_number": number,
                                                  "partner_txn_id": txn, "points": points})
                    if reply.status == 201:
                        model.add(number, available=points)
                elif op == "burn":
                    reply = api.post("/v1/burn", {"member_number": number,
                                                  "partner_txn_id": txn, "points": points})
                    if reply.status == 201:
                        model.add(number, available=-points)
                elif op == "hold":
                    reply = api.post("/v1/holds", {"member_number": number,
                                                   "partner_txn_id": txn, "points": points})
                    if reply.status == 201:
                        model.add(number, available=-points, held=points)
                        with holds_lock:
                            open_holds.append((number, reply.body["id"], points))
                else:
                    # other threads may be closing the same hold right now
                    held_by, hold_id, held = hold
                    if op == "capture":
                        taken = rng.randint(1, held)
                        reply = api.post(f"/v1/holds/{hold_id}/capture",
                                         {"partner_txn_id": txn, "points": taken})
                        back = held - taken
                    else:
                        reply = api.post(f"/v1/holds/{hold_id}/void", {"partner_txn_id": txn})
                        back = held
                    if reply.status == 201:
                        model.add(held_by, available=back, held=-held)
                        with holds_lock:
                            open_holds.remove(hold)
                with holds_lock:
                    kinds[f"{op} {reply.status}"] += 1
                done.append((op, reply))
        return done

    done = [d for batch in run_concurrently(threads, work) for d in batch]

    replies = [r for _, r in done]
    allowed = {201: {None}, 409: {"insufficient_points", "hold_not_open"}}
    assert not unexpected(replies, allowed), unexpected(replies, allowed)
    assert not any(r.replayed for r in replies)
    for op, reply in done:
        if reply.status == 409:
            expected = "hold_not_open" if op in ("capture", "void") else "insufficient_points"
            assert reply.error == expected, (op, reply)
    assert len(done) == threads * operations
    # every kind of operation both won and (but earns) lost somewhere
    assert all(kinds[f"{op} 201"] for op in ("earn", "burn", "hold", "capture", "void")), kinds
    assert kinds["burn 409"] + kinds["hold 409"], kinds
    for number in numbers:
        assert available(client, headers, number) == model.of(number), (number, kinds)
    booked = {kind: scalar("SELECT COUNT(*) FROM entry WHERE kind = :k AND partner_txn_id "
                           "LIKE 't%'", k=kind)
              for kind in ("earn", "burn", "hold", "hold_capture", "hold_void")}
    assert booked == {"earn": kinds["earn 201"], "burn": kinds["burn 201"],
                      "hold": kinds["hold 201"], "hold_capture": kinds["capture 201"],
                      "hold_void": kinds["void 201"]}, (booked, kinds)
    assert scalar("SELECT COUNT(*) FROM hold WHERE status = 'open'") == len(open_holds)
    assert_ledger_consistent()
