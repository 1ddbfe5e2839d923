"""The loss of the primary (DESIGN.md "Running on more than one machine"): a Patroni cluster
of this test's own (etcd, a primary and a synchronous standby, ports 18100-18121), Coalition
under gunicorn connected through a libpq multi-host URL (``target_session_attrs=
read-write``), a load of earns and burns, and in its middle the primary's node killed
outright (Patroni and PostgreSQL, SIGKILL: the machine is gone).

Each client retries every call it got no answer to, or a 503 for (honouring its
``Retry-After``), with the same ``partner_txn_id`` and body, until it is answered. Then:

* the standby was promoted, and the time without a primary is reported;
* every call was answered with an answer a partner can act on (201, or 409
  ``insufficient_points`` for a burn), never a 500;
* every acknowledged booking is in the journal of the new primary exactly once, with the
  id it was answered with; no entry exists that was not acknowledged (nothing half-done);
* each member's balance is the earns less the burns answered 201, and
  ``coalition ledger check`` is green.

Every wait has a deadline, everything listens on 127.0.0.1, and every process started is
killed at the end, whatever happens.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.coalition.pg_cluster import fixed_ports, patroni_cluster, wait_for, workdir
from tests.coalition.test_crash import Http, NoAnswer, cli, fetch_token, gunicorn, server_env
from tests.coalition.test_serving import started, wait_until_healthy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ETCD_PORT, ETCD_PEER_PORT = 18100, 18101
PG_PORTS, REST_PORTS = (18110, 18111), (18120, 18121)
THREADS = 8
OPS_PER_THREAD = 30
MEMBERS = 6
#: the whole load, the failover included
DEADLINE = 120.0
PARTNER_SCOPES = ["points:earn", "points:burn", "members:write", "members:read"]


@dataclass
class Op:
    kind: str
    txn: str
    member: str
    points: int
    attempts: int = 0
    first_sent: float = 0.0
    last_sent: float = 0.0
    status: int | None = None
    answer: Any = None
    replayed: bool = False
    unavailable: int = 0
    unanswered: int = 0
    body: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self.body = json.dumps({"member_number": self.member, "partner_txn_id": self.txn,
                                "points": self.points}).encode()


class Load:
    """Closed-loop clients, each retrying each call until it has an answer to act on."""

    def __init__(self, port: int, token: str, members: list[str], seed: int) -> None:
        rng = random.Random(seed)
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}",
                        "Content-Type": "application/json", "Accept": "application/json"}
        self.plans = [[Op(kind, f"f{t}-{i}", rng.choice(members),
                          rng.randint(1, 50) if kind == "earn" else rng.randint(1, 60))
                       for i, kind in enumerate(rng.choices(("earn", "burn"), (3, 2),
                                                            k=OPS_PER_THREAD))]
                      for t in range(THREADS)]
        self.answered = 0
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
                    try:
                        status, answer, headers = http.call("POST", f"/v1/{op.kind}", op.body)
                    except NoAnswer:
                        op.unanswered += 1
                        time.sleep(0.05)
                        continue
                    if status == 503:
                        op.unavailable += 1
                        time.sleep(float(headers["retry-after"]))
                        continue
                    op.status, op.answer = status, answer
                    op.replayed = headers.get("idempotent-replayed") == "true"
                    with self.lock:
                        self.answered += 1
                    break
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            http.close()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wait_answered(self, count: int, deadline: float) -> None:
        while self.answered < count:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"only {self.answered} calls answered in time"
            time.sleep(0.005)

    def join(self, deadline: float) -> None:
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.stop.set()
        hung = sum(thread.is_alive() for thread in self.threads)
        assert not hung, f"{hung} client thread(s) still waiting for an answer at the deadline"
        assert not self.errors, self.errors


def test_losing_the_primary_loses_or_doubles_no_booking(tmp_path: Path) -> None:
    with ExitStack() as stack:
        stack.enter_context(fixed_ports())
        deadline = time.monotonic() + DEADLINE
        root = stack.enter_context(workdir())
        cluster = patroni_cluster(stack, root, ETCD_PORT, ETCD_PEER_PORT, PG_PORTS, REST_PORTS)
        admin_db = create_engine(cluster.url("postgres"), isolation_level="AUTOCOMMIT")
        stack.callback(admin_db.dispose)
        with admin_db.connect() as conn:
            conn.execute(text("CREATE DATABASE coalition"))
        database = cluster.url("coalition")

        env = server_env(tmp_path, database)
        env.update(COALITION_DB_FAILOVER_WAIT="2", COALITION_DB_RETRY_AFTER="1",
                   COALITION_DB_CONNECT_TIMEOUT="1")
        cli(env, tmp_path, "db", "upgrade")
        operator = json.loads(cli(env, tmp_path, "client", "create", "--operator",
                                  "--scope", "admin", "--json"))
        log = tmp_path / "gunicorn.log"
        server = stack.enter_context(started(gunicorn(0), env, log, cwd=tmp_path))
        port = int(wait_until_healthy(server, log).rsplit(":", 1)[1])

        admin = Http(port, {"Authorization": "Bearer " + fetch_token(
            port, operator["client_id"], operator["client_secret"]),
            "Content-Type": "application/json"})
        admin.json("PUT", "/v1/admin/program", {
            "pending_days": 0, "expiry": {"policy": "none"},
            "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]})
        admin.json("POST", "/v1/admin/partners", {
            "code": "failover", "name": "Failover Stores", "kind": "merchant",
            "currency": "GBP", "earn_rate": "1", "issue_price": "0.01", "redeem_rate": "0.008"})
        issued = admin.json("POST", "/v1/admin/partners/failover/clients",
                            {"scopes": PARTNER_SCOPES})
        admin.close()
        token = fetch_token(port, issued["client_id"], issued["client_secret"])
        partner = Http(port, {"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        members = [partner.json("POST", "/v1/members", {"partner_member_ref": f"m{i}"})
                   ["member_number"] for i in range(MEMBERS)]
        partner.close()

        # the load, and the primary's machine lost a third of the way through
        load = Load(port, token, members, seed=random.randrange(2**32))
        stack.callback(load.stop.set)
        total = len(load.ops)
        old = cluster.primary()
        assert old is not None
        load.start()
        load.wait_answered(total // 3, deadline)
        assert load.answered < total, "the load ended before the failover"
        killed_at = time.time()
        cluster.kill_node(old)
        new = wait_for(lambda: (p := cluster.primary()) is not None and p is not old and p,
                       "the standby was not promoted", old.log, timeout=60)
        promoted_at = time.time()
        load.join(deadline)

        ops = load.ops
        unexpected = [(op.txn, op.kind, op.status, op.answer) for op in ops
                      if not (op.status == 201 or (
                          op.kind == "burn" and op.status == 409
                          and op.answer.get("error") == "insufficient_points"))]
        assert not unexpected, unexpected[:10]
        across = [op for op in ops if op.first_sent < killed_at < op.last_sent]
        assert across, "no call was in flight at the failover: the test proved nothing"
        assert any(op.unavailable for op in ops), "no call was answered 503 during the failover"

        # the journal on the new primary: one entry per acknowledged booking, no other
        engine = create_engine(database)
        stack.callback(engine.dispose)
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT e.partner_txn_id, e.id, e.kind, e.points, m.member_number "
                "FROM entry e JOIN partner p ON p.id = e.partner_id "
                "JOIN member m ON m.id = e.member_id WHERE p.code = 'failover'")).all()
            wallets = dict(conn.execute(text(
                "SELECT m.member_number, w.available FROM wallet w "
                "JOIN member m ON m.id = w.member_id")).all())
            served_by = conn.execute(text("SELECT inet_server_port()")).scalar()
        assert served_by == new.pg_port
        counts = Counter(row.partner_txn_id for row in rows)
        assert not [txn for txn, n in counts.items() if n > 1], "doubled bookings"
        entries = {row.partner_txn_id: row for row in rows}
        acknowledged = {op.txn for op in ops if op.status == 201}
        assert set(entries) == acknowledged, {
            "lost": sorted(acknowledged - set(entries))[:10],
            "not acknowledged": sorted(set(entries) - acknowledged)[:10]}
        for op in ops:
            if op.status == 201:
                row = entries[op.txn]
                assert (op.answer["id"], op.answer["type"], op.answer["points"],
                        op.answer["member_number"]) == (row.id, op.kind, op.points,
                                                        row.member_number), op
        expected = dict.fromkeys(members, 0)
        for op in ops:
            if op.status == 201:
                expected[op.member] += op.points if op.kind == "earn" else -op.points
        assert wallets == expected

        report = json.loads(cli(env, tmp_path, "ledger", "check", "--json"))
        assert report["ok"] is True, report
        server_log = log.read_text(errors="replace")
        assert not re.search(r"Traceback|Internal Server Error", server_log), server_log[-4000:]

    print(f"\nno primary for {promoted_at - killed_at:.1f} s (Patroni ttl {8} s); "
          f"{len(acknowledged)} acknowledged bookings checked of {total} calls; "
          f"{len(across)} calls in flight at the kill, "
          f"{sum(op.unavailable for op in ops)} answers 503, "
          f"{sum(op.unanswered for op in ops)} calls unanswered, "
          f"{sum(op.replayed for op in ops)} replays")
