"""Crash safety (DESIGN.md "Idempotency": a retry after a timeout is always safe), on
PostgreSQL, through the real gunicorn.

Client threads fire earns and burns, each with its own ``partner_txn_id``, at gunicorn (two
gthread workers) on a freshly migrated database. In the middle of the load the master and
its workers are killed with SIGKILL (their whole process group: no graceful anything), and
gunicorn is started again on the same port; twice. Every client retries every request
whose outcome it did not receive (connection refused, reset or closed, timeout) with the
same ``partner_txn_id`` and the same body, until it gets an answer; one call of each client
also gives up waiting after a millisecond (a client timeout: the server goes on with it)
and retries. Then:

* every transaction is in the journal exactly once: each earn, and each burn that was
  answered 201 (a 409 ``insufficient_points`` books nothing), with the id it was answered
  with;
* an answer marked ``Idempotent-Replayed`` is one that a crash (or a timeout) took from the
  client: its entry was booked by an earlier attempt, before the crash that followed it,
  or after an attempt the client stopped waiting for (a busy server goes on with it); an
  answer after a retry that is not marked was booked after the crashes before it; and the
  calls that timed out on purpose are answered as replays;
* each member's balance is the sum of the earns less the burns answered 201;
* ``coalition ledger check`` is green.

Everything is bounded (about 10-20 s in all on an idle machine; every wait has a deadline:
the load's is that no call goes unanswered for ``STALL`` seconds while gunicorn is up, so a
busy machine slows the test down without failing it), talks only to 127.0.0.1, and every
process started is killed at the end, whatever happens.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.coalition.test_serving import BIN, started, wait_until_healthy
from tests.conftest import PG_URL, worker_suffix

# up to 80 connections at once: one such test at a time, whatever the worker
pytestmark = [pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.usefixtures("many_connections")]

APP = "coalition.app:create_app()"
THREADS = 12
OPS_PER_THREAD = 40
MEMBERS = 6
CRASHES = 2
#: the load hangs when no call is answered for this long while gunicorn is up (each restart
#: has its own deadline, test_serving.START_TIMEOUT)
STALL = 30.0
#: one HTTP call; a call that takes longer is an outcome not received, and is retried
REQUEST_TIMEOUT = 10.0
#: the op of each client whose first attempt times out after IMPATIENCE seconds (the server
#: goes on with it, so its retry is normally answered as a replay)
IMPATIENT_AT = 3
IMPATIENCE = 0.001
PARTNER_SCOPES = ["points:earn", "points:burn", "members:write", "members:read"]


# --------------------------------------------------------------------------- processes


@pytest.fixture
def crash_database(database_url: str) -> Iterator[str]:
    """A database of its own (the shared test database is emptied by the ``app`` fixture,
    which this test does not use), dropped at the end."""
    base = make_url(PG_URL)  # type: ignore[arg-type]
    name = f"coalition_crash_{worker_suffix()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def server_env(tmp_path: Path, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COALITION_", "FLASK_", "GUNICORN_"))}
    env.update(
        COALITION_ENV="production",
        COALITION_DATABASE_URL=database,
        COALITION_SECRET_KEY=secrets.token_urlsafe(32),
        COALITION_INSTANCE_PATH=str(tmp_path),
        COALITION_LOG_LEVEL="warning",
        COALITION_LOG_FORMAT="text",
        # one partner client drives all the load: the per-client limit is not under test
        COALITION_RATE_LIMIT_ENABLED="false",
    )
    return env


def cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    result = subprocess.run([str(BIN / "coalition"), *args], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"coalition {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def gunicorn(port: int) -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS

    command = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2",
               "--worker-class", "gthread", "--threads", "4", "--timeout", "30",
               "--graceful-timeout", "5"]
    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
        command.append("--no-control-socket")  # see test_serving.gunicorn_command
    return [*command, APP]


def kill_group(process: subprocess.Popen[bytes]) -> float:
    """SIGKILL to gunicorn's whole process group, master and workers at once; the time
    of the kill."""
    at = time.time()
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=15)
    return at


# --------------------------------------------------------------------------- clients


class NoAnswer(Exception):
    """The outcome of the call was not received."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        #: the client gave up waiting: the server may still book the call afterwards
        self.timed_out = isinstance(cause, TimeoutError)


class Http:
    """One keep-alive connection to 127.0.0.1:``port``, opened again when it is lost."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None,
             timeout: float = REQUEST_TIMEOUT) -> tuple[int, Any, dict[str, str]]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                   timeout=REQUEST_TIMEOUT)
        self.conn.timeout = timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or self.headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, EOF
            self.close()
            raise NoAnswer(exc) from exc
        if response.will_close:
            self.close()
        elif timeout != REQUEST_TIMEOUT:
            self.conn.sock.settimeout(REQUEST_TIMEOUT)  # type: ignore[union-attr]
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        return response.status, parsed, {k.lower(): v for k, v in response.getheaders()}

    def json(self, method: str, path: str, body: Any = None,
             expect: tuple[int, ...] = (200, 201)) -> Any:
        status, parsed, _ = self.call(method, path,
                                      None if body is None else json.dumps(body).encode())
        assert status in expect, f"{method} {path} answered {status}: {parsed}"
        return parsed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def fetch_token(port: int, client_id: str, secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    http = Http(port, {})
    try:
        status, body, _ = http.call(
            "POST", "/oauth/token", b"grant_type=client_credentials",
            {"Authorization": f"Basic {basic}",
             "Content-Type": "application/x-www-form-urlencoded"})
    finally:
        http.close()
    assert status == 200, body
    return body["access_token"]


@dataclass
class Lost:
    """An attempt whose outcome the client did not receive."""

    sent: float
    error: str
    timed_out: bool


@dataclass
class Op:
    """One earn or burn, and what became of it."""

    kind: str
    txn: str
    member: str
    points: int
    #: its first attempt gives up waiting for the answer at once (a client timeout)
    impatient: bool = False
    body: bytes = b""
    attempts: int = 0
    first_sent: float = 0.0
    last_sent: float = 0.0
    status: int | None = None
    answer: Any = None
    replayed: bool = False
    lost: list[Lost] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.body = json.dumps({"member_number": self.member, "partner_txn_id": self.txn,
                                "points": self.points}).encode()


class Load:
    """``THREADS`` closed-loop clients, each working through its own list of ops and
    retrying each until it is answered."""

    def __init__(self, port: int, token: str, members: list[str], seed: int) -> None:
        rng = random.Random(seed)
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}",
                        "Content-Type": "application/json", "Accept": "application/json"}
        self.plans = [[Op(kind, f"t{t}-{i}", rng.choice(members),
                          rng.randint(1, 50) if kind == "earn" else rng.randint(1, 60),
                          impatient=i == IMPATIENT_AT)
                       for i, kind in enumerate(rng.choices(("earn", "burn"), (3, 2),
                                                            k=OPS_PER_THREAD))]
                      for t in range(THREADS)]
        self.answered = 0
        #: when the load last moved on: a call answered, or gunicorn up again
        self.progress_at = time.monotonic()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(plan,), daemon=True)
                        for plan in self.plans]

    @property
    def ops(self) -> list[Op]:
        return [op for plan in self.plans for op in plan]

    def _run(self, plan: list[Op]) -> None:
        http = Http(self.port, self.headers)
        try:
            for op in plan:
                while not self.stop.is_set():
                    op.attempts += 1
                    op.last_sent = time.time()
                    op.first_sent = op.first_sent or op.last_sent
                    impatient = op.impatient and op.attempts == 1
                    try:
                        status, answer, headers = http.call(
                            "POST", f"/v1/{op.kind}", op.body,
                            timeout=IMPATIENCE if impatient else REQUEST_TIMEOUT)
                    except NoAnswer as exc:
                        op.lost.append(Lost(op.last_sent, str(exc), exc.timed_out))
                        # the server is down: knock again shortly; after a timeout, give
                        # the request that is still running the time to finish
                        time.sleep(0.5 if impatient else 0.05)
                        continue
                    op.status, op.answer = status, answer
                    op.replayed = headers.get("idempotent-replayed") == "true"
                    with self.lock:
                        self.answered += 1
                        self.progress_at = time.monotonic()
                    break
                if self.stop.is_set():
                    return
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            http.close()

    def start(self) -> None:
        self.resumed()
        for thread in self.threads:
            thread.start()

    def resumed(self) -> None:
        """gunicorn answers again: the clients' retries are answered from now on."""
        with self.lock:
            self.progress_at = time.monotonic()

    def _assert_moving(self) -> None:
        assert not self.errors, self.errors
        assert time.monotonic() - self.progress_at < STALL, (
            f"no call answered for {STALL}s: {self.answered} of {len(self.ops)} answered")

    def wait_answered(self, count: int) -> None:
        while self.answered < count:
            self._assert_moving()
            time.sleep(0.005)

    def join(self) -> None:
        try:
            for thread in self.threads:
                while thread.is_alive():
                    self._assert_moving()
                    thread.join(timeout=0.05)
        finally:
            self.stop.set()
        assert not self.errors, self.errors


# --------------------------------------------------------------------------- the test


def test_a_crash_loses_or_doubles_nothing(tmp_path: Path, crash_database: str) -> None:
    env = server_env(tmp_path, crash_database)
    cli(env, tmp_path, "db", "upgrade")
    operator = json.loads(cli(env, tmp_path, "client", "create", "--operator",
                              "--scope", "admin", "--json"))

    with ExitStack() as processes:
        log = tmp_path / "gunicorn-0.log"
        server = processes.enter_context(started(gunicorn(0), env, log, cwd=tmp_path))
        base = wait_until_healthy(server, log)
        port = int(base.rsplit(":", 1)[1])

        # set-up over the API, as a partner would get there
        admin = Http(port, {"Authorization": "Bearer " + fetch_token(
            port, operator["client_id"], operator["client_secret"]),
            "Content-Type": "application/json"})
        admin.json("PUT", "/v1/admin/program", {
            "pending_days": 0, "expiry": {"policy": "none"},
            "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]})
        admin.json("POST", "/v1/admin/partners", {
            "code": "crash", "name": "Crash Stores", "kind": "merchant", "currency": "GBP",
            "earn_rate": "1", "issue_price": "0.01", "redeem_rate": "0.008"})
        issued = admin.json("POST", "/v1/admin/partners/crash/clients",
                            {"scopes": PARTNER_SCOPES})
        admin.close()
        token = fetch_token(port, issued["client_id"], issued["client_secret"])
        partner = Http(port, {"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        members = [partner.json("POST", "/v1/members", {"partner_member_ref": f"m{i}"})
                   ["member_number"] for i in range(MEMBERS)]
        partner.close()  # its connection would not outlive the crashes

        load = Load(port, token, members, seed=random.randrange(2**32))
        processes.callback(load.stop.set)  # no client retries on after a failure
        total = len(load.ops)
        load.start()
        kills: list[float] = []
        for crash in range(1, CRASHES + 1):
            load.wait_answered(total * crash // (CRASHES + 1))
            assert load.answered < total, "the load ended before the crash"
            kills.append(kill_group(server))
            log = tmp_path / f"gunicorn-{crash}.log"
            server = processes.enter_context(started(gunicorn(port), env, log, cwd=tmp_path))
            assert wait_until_healthy(server, log) == base
            load.resumed()
        load.join()

        ops = load.ops
        # every call was answered, and with an answer a partner can act on
        unexpected = [(op.txn, op.kind, op.status, op.answer) for op in ops
                      if not (op.status == 201 or (
                          op.kind == "burn" and op.status == 409
                          and op.answer.get("error") == "insufficient_points"))]
        assert not unexpected, unexpected[:10]
        retried = [op for op in ops if any(op.first_sent < k < op.last_sent for k in kills)]
        assert retried, "no call was in flight at a crash: the test proved nothing"

        # the journal: one entry per transaction that was answered 201, none for the others
        with ExitStack() as cleanup:
            engine = create_engine(crash_database)
            cleanup.callback(engine.dispose)
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT e.partner_txn_id, e.id, e.kind, e.points, e.booked_at, "
                    "       m.member_number "
                    "FROM entry e JOIN partner p ON p.id = e.partner_id "
                    "JOIN member m ON m.id = e.member_id WHERE p.code = 'crash'")).all()
                wallets = dict(conn.execute(text(
                    "SELECT m.member_number, w.available FROM wallet w "
                    "JOIN member m ON m.id = w.member_id")).all())
        counts = Counter(row.partner_txn_id for row in rows)
        assert not [txn for txn, n in counts.items() if n > 1], "doubled transactions"
        entries = {row.partner_txn_id: row for row in rows}
        booked = {op.txn for op in ops if op.status == 201}
        assert set(entries) == booked, {"lost": sorted(booked - set(entries))[:10],
                                        "unanswered": sorted(set(entries) - booked)[:10]}
        for op in ops:
            if op.status != 201:
                continue
            row = entries[op.txn]
            assert (op.answer["id"], op.answer["type"], op.answer["points"],
                    op.answer["member_number"]) == (row.id, op.kind, op.points,
                                                    row.member_number), op
            # a replay answers a call whose first answer was lost
            assert not op.replayed or op.attempts > 1, op
            if op.impatient:
                continue
            # a replay was booked by an attempt whose answer was lost: to a crash (asked
            # before it and booked before it) or to a timeout (a slow server went on with
            # it); a retry that is not a replay booked it after the crashes before it
            booked_at = row.booked_at.timestamp()
            if op.replayed:
                assert any(lost.sent < booked_at and (lost.timed_out or any(
                    lost.sent < k < op.last_sent and booked_at < k for k in kills))
                    for lost in op.lost), (op, row.booked_at)
            elif op.attempts > 1:
                prior = [k for k in kills if k < op.last_sent]
                assert not prior or booked_at > prior[-1], (op, row.booked_at)
        timed_out = [op for op in ops if op.impatient and op.attempts > 1]
        assert not timed_out or any(op.replayed for op in timed_out), (
            "no call that timed out was answered as a replay")

        # balances: what was earned, less what the answers say was burned
        expected = dict.fromkeys(members, 0)
        for op in ops:
            if op.status == 201:
                expected[op.member] += op.points if op.kind == "earn" else -op.points
        assert wallets == expected
        for member in members:
            balance = partner.json("GET", f"/v1/members/{member}/balance")
            assert (balance["available"], balance["pending"], balance["held"]) == (
                expected[member], 0, 0)
        partner.close()

    report = json.loads(cli(env, tmp_path, "ledger", "check", "--json"))
    assert report["ok"] is True, report
    for crash in range(CRASHES + 1):
        # whatever the crashes left in the database, no server process stumbled on it
        text_log = (tmp_path / f"gunicorn-{crash}.log").read_text(errors="replace")
        assert not re.search(r"Traceback|\[ERROR\]|Internal Server Error", text_log), text_log
    print(f"\n{total} calls, {len(retried)} retried across {CRASHES} crashes and "
          f"{len(timed_out)} client timeouts ({sum(op.attempts - 1 for op in ops)} retries), "
          f"{sum(op.replayed for op in ops)} answered as replays "
          f"({sum(op.replayed for op in timed_out)} after a timeout), "
          f"{sum(op.status == 409 for op in ops)} burns refused (insufficient points)")
