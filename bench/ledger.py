#!/usr/bin/env python3
"""Ledger benchmark: earn and burn through the real stack.

    .venv/bin/python bench/ledger.py --duration 20 --concurrency 16 \
        [--members 1000] [--hot-members 4] [--workers 2] \
        [--scenario NAME|jobs|all|goals] [--paced-rate N] [--job-members 100000] \
        [--json PATH] [--rate-limit-storage memory://|redis://host:6379/0]

``--scenario goals`` (``make bench``) runs every scenario of bench/scenarios.py, pgbench
first (the paced earn runs at half of its tps), and prints each goal of the hot path with
its figure, met or not, and the CPU per request of gunicorn and PostgreSQL beside it.

One run, start to finish, on this machine only (every connection goes to 127.0.0.1):

1. drops and re-creates the database ``coalition_bench`` on the PostgreSQL server,
   ``coalition db upgrade``, and bootstraps an operator client with
   ``coalition client create --operator --scope "admin settlement:run" --json``;
2. starts gunicorn (``-k gthread``, one worker per core, threads share a worker's database
   pool, HTTP/1.1 keep-alive) and waits for ``/healthz``;
3. over HTTP, as a partner would: operator token, ``POST /v1/admin/partners``, a partner
   client, a partner token over ``/oauth/token``, members over ``POST /v1/members``, points
   pre-loaded with ``POST /v1/earn`` where a scenario burns;
4. drives each scenario for ``--duration`` seconds (after ``--warmup`` seconds that are not
   counted) from ``--concurrency`` closed-loop clients, each with its own persistent
   connection, every request with a new ``partner_txn_id``: ``earn`` (many members),
   ``burn`` (many pre-loaded members), ``mixed`` (earn and burn over many members), ``hot``
   (earn and burn on ``--hot-members`` members: wallet-row contention, where a 409
   ``insufficient_points`` is an expected business answer, counted apart from errors);
5. stops gunicorn, then runs ``pgbench`` (TPC-B-like, same concurrency and duration) against
   the same server in the database ``coalition_pgbench`` as the yardstick of what this
   machine's PostgreSQL does with short write transactions;
6. ends with ``coalition ledger check`` on the benchmark database.

The load generator is the standard library only: ``http.client`` connections kept alive,
one per client thread (``--client-processes`` splits the threads over forked processes).
The CPU used by the client, by gunicorn and by PostgreSQL is measured from ``/proc`` over
each measured window and printed with the results, so that a client-bound run shows itself.

Every loop stops by time and by count, every wait has a deadline, and every process the
benchmark starts (gunicorn, pgbench, py-spy, client processes) is stopped at the end, on
error and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.client import Client, fetch_token, free_port
from harness.cpu import CpuMeter, ms_per_request, other_pct
from harness.gunicorn import FLOOR_APP, Gunicorn
from harness.jobs import run_jobs
from harness.load import drive, ops_stats
from harness.pgbench import run_pgbench
from harness.postgres import (
    analyze_database,
    connect,
    database_url,
    db_counters,
    db_work_per_request,
    parse_server,
    recreate_database,
    server_facts,
)
from harness.processes import (
    BIN,
    STOP,
    BenchError,
    Processes,
    clean_env,
    run_command,
    say,
    wait_until,
)
from harness.profile import Profilers
from harness.report import machine_facts, scenario_lines, summary_lines
from scenarios import CHAINS, FLOORS, SCENARIOS, pool_sizes, request_factory

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"
PARTNER_SCOPES = ["points:earn", "points:burn", "members:write", "members:read"]
SETUP_TIMEOUT = 600.0  # enrolment and pre-loading, all together
TARGET_RATIO = 0.5
TARGET_EARN_P99_MS = 25.0
TARGET_BALANCE_RATIO = 1.0
TARGET_HISTORY_RATIO = 1.2
TARGET_HOT64_RPS = 300.0
TARGET_HOT64_P99_MS = 100.0
TARGET_COST_RATIO = 1.5
#: the scenario whose CPU per request stands next to each goal (when not the key's prefix)
GOAL_SCENARIO = {"ratio": "earn", "earn_p99_ms": "earn", "balance_ratio": "balance",
                 "history_burn": "history", "history_balance": "history",
                 "hot64_rps": "hot64", "hot64_p99_ms": "hot64"}
#: the scenarios whose cost is held against earn's: scenario -> the operation measured
COSTED = {"burn": "burn", "authorise": "authorise", "capture": "capture", "void": "void",
          "earn_reversal": "earn_reversal", "burn_reversal": "burn_reversal"}


def cpu_per_call(report: dict[str, Any], scenario: str) -> float | None:
    """Milliseconds of gunicorn plus PostgreSQL (own database) CPU per call of a scenario's
    measured operation. In a chain the window holds as many first calls as second ones, so
    the second's cost is twice the window's cost per request less the first's, taken from
    the first's own scenario in the same run."""
    cpu = report["scenarios"].get(scenario, {}).get("cpu", {})
    if "server_ms_per_request" not in cpu:
        return None
    each = cpu["server_ms_per_request"] + cpu["postgres_bench_ms_per_request"]
    if scenario not in CHAINS:
        return float(each)
    first = cpu_per_call(report, CHAINS[scenario][0])
    return None if first is None else 2 * each - first


def calls_per_second(report: dict[str, Any], scenario: str) -> float | None:
    """Calls a second of a scenario's measured operation; in a chain, as if alone: one
    over its share of the window's time (its cost, by ``cpu_per_call``, over the pair's)."""
    op = _op(report, scenario, COSTED.get(scenario, scenario))
    if op is None:
        return None
    if scenario not in CHAINS:
        return float(op["ok_rps"])
    pair, second = (cpu_per_call(report, CHAINS[scenario][0]), cpu_per_call(report, scenario))
    if not pair or not second:
        return None
    return float(op["ok_rps"]) * (pair + second) / second


def _op(report: dict[str, Any], scenario: str, op: str) -> dict[str, Any] | None:
    return report["scenarios"].get(scenario, {}).get("ops", {}).get(op)  # type: ignore[no-any-return]


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Each goal of the hot path (docs/benchmarks.md) that this run measured, against its
    target: ratios to pgbench's tps in the same run, latencies, the cost of history."""
    earn = _op(report, "earn", "earn")
    pgbench = report.get("pgbench")
    found: dict[str, Any] = {}

    def goal(key: str, value: float, target: str, met: bool) -> None:
        found[key] = {"value": value, "target": target, "met": met}
        scenario = GOAL_SCENARIO.get(key) or key.removeprefix("cost_").split("_p99")[0]
        cpu = report["scenarios"].get(scenario, {}).get("cpu")
        if cpu and "server_ms_per_request" in cpu:
            found[key]["cpu_ms"] = {"gunicorn": cpu["server_ms_per_request"],
                                    "postgres": cpu["postgres_bench_ms_per_request"]}

    if earn and pgbench:
        ratio = earn["ok_rps"] / pgbench["tps"]
        goal("ratio", ratio, f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)
    if earn:
        goal("earn_p99_ms", earn["p99_ms"], f"<= {TARGET_EARN_P99_MS}",
             earn["p99_ms"] <= TARGET_EARN_P99_MS)
    balance = _op(report, "balance", "balance")
    if balance and pgbench:
        ratio = balance["ok_rps"] / pgbench["tps"]
        goal("balance_ratio", ratio, f">= {TARGET_BALANCE_RATIO}",
             ratio >= TARGET_BALANCE_RATIO)
    for op in ("burn", "balance"):
        deep, shallow = (_op(report, "history", f"{op}-{d}") for d in ("deep", "shallow"))
        if deep and shallow and shallow["p50_ms"] > 0:
            ratio = deep["p50_ms"] / shallow["p50_ms"]
            goal(f"history_{op}", ratio, f"<= {TARGET_HISTORY_RATIO}",
                 ratio <= TARGET_HISTORY_RATIO)
    paced = _op(report, "paced", "earn")
    if paced:
        goal("paced_p99_ms", paced["p99_ms"], f"<= {TARGET_EARN_P99_MS}",
             paced["p99_ms"] <= TARGET_EARN_P99_MS and not paced["errors"])
    earn_cost = cpu_per_call(report, "earn")
    for scenario in COSTED:
        cost = cpu_per_call(report, scenario)
        if earn_cost and cost is not None:
            ratio = cost / earn_cost
            goal(f"cost_{scenario}", ratio, f"<= {TARGET_COST_RATIO}",
                 ratio <= TARGET_COST_RATIO)
            rate = calls_per_second(report, scenario)
            if rate and earn:
                found[f"cost_{scenario}"]["throughput_ratio"] = earn["ok_rps"] / rate
    hot = _op(report, "hot64", "all")
    if hot:
        errors = sum(hot["errors"].values())
        goal("hot64_rps", hot["rps"], f">= {TARGET_HOT64_RPS:g}",
             hot["rps"] >= TARGET_HOT64_RPS and not errors)
        goal("hot64_p99_ms", hot["p99_ms"], f"<= {TARGET_HOT64_P99_MS:g}",
             hot["p99_ms"] <= TARGET_HOT64_P99_MS and not errors)
    return found


#: one earn entry, its two postings and its live lot per generated row, and the wallet
#: credited with them: a member's deep history written set-based in one statement, in the
#: shapes the ledger writes (so ``coalition ledger check`` holds), each lot expiring an hour
#: after the one before
PLANT_HISTORY = """
WITH m AS (SELECT id FROM member WHERE member_number = %(number)s),
p AS (SELECT id FROM partner WHERE code = %(partner)s),
e AS (
  INSERT INTO entry (kind, booked_at, occurred_at, partner_id, member_id, partner_txn_id,
                     request_hash, points)
  SELECT 'earn', now(), now(), p.id, m.id, %(tag)s || '-' || n, 'history', %(points)s
  FROM m, p, generate_series(1, %(lots)s) AS n
  RETURNING id, member_id, partner_id),
first AS (SELECT min(id) AS id FROM e),
postings AS (
  INSERT INTO posting (entry_id, account, member_id, partner_id, points)
  SELECT id, 'partner:issued', NULL, partner_id, -%(points)s FROM e
  UNION ALL SELECT id, 'member:available', member_id, NULL, %(points)s FROM e),
lots AS (
  INSERT INTO lot (member_id, origin_partner_id, source, entry_id, points, remaining, state,
                   earned_at, expires_at)
  SELECT e.member_id, e.partner_id, 'earn', e.id, %(points)s, %(points)s, 'live', now(),
         now() + interval '400 days' + (e.id - first.id) * interval '1 hour'
  FROM e, first)
UPDATE wallet SET available = available + %(points)s::bigint * %(lots)s, version = version + 1
WHERE member_id = (SELECT id FROM m)
"""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Processes()
        self.profilers = Profilers(self.procs)
        self.server = parse_server(args.server)
        self.db_url = database_url(self.server, args.database)
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="coalition-bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tag = time.strftime("%H%M%S") + secrets.token_hex(2)
        self.env = clean_env(
            COALITION_ENV="production",
            COALITION_DATABASE_URL=self.db_url,
            COALITION_SECRET_KEY=secrets.token_urlsafe(32),
            COALITION_LOG_LEVEL="warning",
            COALITION_INSTANCE_PATH=str(self.workdir / "instance"),
            COALITION_ACCESS_TOKEN_LIFETIME="7200",
            COALITION_DB_POOL_SIZE=str(max(10, args.threads)),
            # one partner client drives all the load: the rate limiter runs (its cost is in
            # the figures) but with a rate no run reaches
            COALITION_RATE_LIMIT="1000000",
            COALITION_RATE_LIMIT_BURST="1000000",
            # memory:// (each worker counts on its own) or a Redis URL shared by the workers
            COALITION_RATE_LIMIT_STORAGE=args.rate_limit_storage,
            COALITION_RATE_LIMIT_KEY_PREFIX=f"coalition-bench:{secrets.token_hex(4)}:",
        )
        self.gunicorn = Gunicorn(self.procs, env=self.env, log=self.workdir / "gunicorn.log",
                                 port=args.port or free_port(), workers=args.workers,
                                 worker_class=args.worker_class, threads=args.threads,
                                 reuse_port=args.reuse_port)
        self.port = self.gunicorn.port
        self.report: dict[str, Any] = {"scenarios": {}, "notes": []}

    # -- steps

    def note(self, message: str) -> None:
        say(f"  ! {message}")
        self.report["notes"].append(message)

    def background_load(self, seconds: float = 2.0) -> dict[str, float]:
        """How busy the machine is before the benchmark starts anything."""
        meter = CpuMeter(None, ()).start()
        STOP.wait(seconds)
        share = meter.stop()
        load = {"machine_pct": share["machine_pct"], "postgres_pct": share["postgres_pct"],
                "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0])}
        say(f"background load before the run: machine {load['machine_pct']:.0f}% of one core "
            f"(postgres {load['postgres_pct']:.0f}%), load average {load['loadavg_1m']:.2f}")
        if load["machine_pct"] > 20:
            self.note(f"the machine was already {load['machine_pct']:.0f}% busy (of "
                      f"{100 * (os.cpu_count() or 1)}%) before the benchmark started: other "
                      "work shares the cores, so the figures below understate the stack "
                      "on its own")
        return load

    def coalition(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_command([str(BIN / "coalition"), *argv], self.env, check=check)

    def prepare_database(self) -> dict[str, str]:
        say(f"database: drop and create {self.args.database} on "
            f"{self.server['host']}:{self.server['port']}")
        recreate_database(self.server, self.args.database)
        self.coalition("db", "upgrade")
        created = self.coalition("client", "create", "--operator", "--scope",
                                 "admin settlement:run", "--name", "benchmark", "--json")
        try:
            operator = json.loads(created.stdout)
            return {"client_id": operator["client_id"], "client_secret": operator["client_secret"]}
        except (ValueError, KeyError) as exc:
            raise BenchError(f"unexpected output from coalition client create: "
                             f"{created.stdout!r}") from exc

    def start_gunicorn(self) -> None:
        self.report["gunicorn"] = self.gunicorn.shown()
        say(f"server: {self.report['gunicorn']}")
        self.gunicorn.start()

    def stop_gunicorn(self) -> None:
        problems = self.gunicorn.stop()
        if problems:
            self.note(f"gunicorn logged {len(problems)} error line(s), e.g. "
                      f"{problems[0][:200]!r} (log: {self.gunicorn.log})")

    def setup_partner(self, operator: dict[str, str]) -> str:
        token = fetch_token(self.port, operator["client_id"], operator["client_secret"])
        admin = Client(self.port, token)
        try:
            # default rules spelled out: earned points are spendable at once, nothing expires
            status, data = admin.call("PUT", "/v1/admin/program", json.dumps({
                "pending_days": 0, "expiry": {"policy": "none"},
                "tiers": [{"code": "member", "name": "Member", "threshold": 0,
                           "multiplier": "1"}],
            }).encode())
            if status != 200:
                self.note(f"PUT /v1/admin/program answered {status}: "
                          f"{data[:200].decode(errors='replace')}")
            admin.json("POST", "/v1/admin/partners", {
                "code": "bench", "name": "Benchmark Stores", "kind": "merchant",
                "currency": "GBP", "earn_rate": "1", "issue_price": "0.01",
                "redeem_rate": "0.008",
            }, expect=(201,))
            issued = admin.json("POST", "/v1/admin/partners/bench/clients",
                                {"scopes": PARTNER_SCOPES, "name": "benchmark till"},
                                expect=(201,))
        finally:
            admin.close()
        return fetch_token(self.port, issued["client_id"], issued["client_secret"],
                           " ".join(PARTNER_SCOPES))

    def partner_api_present(self, token: str) -> bool:
        """Whether POST /v1/members and /v1/earn are served (the partner API exists)."""
        client = Client(self.port, token)
        try:
            found = []
            for path in ("/v1/members", "/v1/earn", "/v1/burn"):
                status, _ = client.call("POST", path, b"{}")
                found.append(status not in (404, 405))
            return all(found)
        finally:
            client.close()

    def parallel(self, token: str, jobs: list[Any], call: Callable[[Client, Any], Any],
                 what: str) -> list[Any]:
        """``call(client, job)`` for every job over ``--concurrency`` keep-alive clients."""
        local = threading.local()
        clients: list[Client] = []
        lock = threading.Lock()
        deadline = time.monotonic() + SETUP_TIMEOUT

        def run(job: Any) -> Any:
            if STOP.is_set() or time.monotonic() > deadline:
                raise BenchError(f"{what}: stopped (deadline or interrupt)")
            if not hasattr(local, "client"):
                local.client = Client(self.port, token)
                with lock:
                    clients.append(local.client)
            return call(local.client, job)

        started = time.monotonic()
        try:
            with ThreadPoolExecutor(self.args.concurrency) as pool:
                results = list(pool.map(run, jobs))
        finally:
            for client in clients:
                client.close()
        say(f"  {what}: {len(jobs)} in {time.monotonic() - started:.1f}s")
        return results

    def enrol(self, token: str, pools: dict[str, int]) -> dict[str, list[str]]:
        def one(client: Client, job: tuple[str, int]) -> str:
            pool, i = job
            answer = client.json("POST", "/v1/members",
                                 {"partner_member_ref": f"{self.tag}-{pool}-{i}"}, expect=(201,))
            return answer["member_number"]

        jobs = [(pool, i) for pool, n in pools.items() for i in range(n)]
        numbers = self.parallel(token, jobs, one, "enrol members (POST /v1/members)")
        out: dict[str, list[str]] = {pool: [] for pool in pools}
        for (pool, _), number in zip(jobs, numbers, strict=True):
            out[pool].append(number)
        return out

    def preload(self, token: str, members: list[str], points: int, label: str) -> None:
        def one(client: Client, job: tuple[int, str]) -> None:
            i, member = job
            client.json("POST", "/v1/earn", {"member_number": member, "points": points,
                                             "partner_txn_id": f"{self.tag}-pre-{label}-{i}"},
                        expect=(201,))

        self.parallel(token, list(enumerate(members)), one,
                      f"pre-load {points} points on the {label} members (POST /v1/earn)")

    def plant_history(self, number: str, lots: int, label: str) -> None:
        started = time.monotonic()
        with connect(self.server, self.args.database) as conn, conn.transaction():
            conn.execute(PLANT_HISTORY, {"number": number, "partner": "bench", "lots": lots,
                                         "points": 1000, "tag": f"{self.tag}-{label}"})
        say(f"  history: {lots} live lots for the {label} member in "
            f"{time.monotonic() - started:.1f}s")

    def concurrency(self, scenario: str) -> int:
        a = self.args
        return {"hot64": a.hot_concurrency, "history": a.history_concurrency,
                "paced": a.paced_concurrency}.get(scenario, a.concurrency)

    def paced_rate(self) -> float:
        """Requests a second of the paced scenario: ``--paced-rate``, or half of pgbench's."""
        if self.args.paced_rate:
            return float(self.args.paced_rate)
        return float(self.report["pgbench"]["tps"]) / 2

    def run_scenario(self, scenario: str, token: str,
                     pools: dict[str, list[str]]) -> dict[str, Any]:
        a = self.args
        concurrency = self.concurrency(scenario)
        now = time.monotonic_ns()
        t_start = now + int(0.3e9)
        t_measure = t_start + int(a.warmup * 1e9)
        t_end = t_measure + int(a.duration * 1e9)
        plan = {"scenario": scenario, "factory": request_factory(scenario, pools, a.earn_body),
                "tag": self.tag, "port": self.port, "token": token, "t_start": t_start,
                "t_measure": t_measure, "t_end": t_end, "request_timeout": 30.0,
                "max_per_thread": max(1, math.ceil(a.max_requests / concurrency)),
                "reconnect_every": a.reconnect_every,
                "rate": self.paced_rate() if scenario == "paced" else None}
        if plan["rate"]:
            say(f"scenario paced: earn at {plan['rate']:.0f}/s, open loop")
        server_pid = self.gunicorn.process.pid if self.gunicorn.process else None
        meter = CpuMeter(server_pid, (a.database,))
        say(f"scenario {scenario}: {concurrency} clients, {a.warmup:g}s warm-up + "
            f"{a.duration:g}s measured")
        sampler_result: dict[str, Any] = {}
        counters_before = db_counters(self.server, a.database)

        driven = threading.Event()

        def sample() -> None:
            if wait_until(t_measure):
                return
            meter.start()
            if scenario == a.profile_scenario and a.profile_dir:
                self.start_profilers(scenario, a.duration)
            if wait_until(t_end):
                return
            if plan["rate"]:
                # paced: requests scheduled in the window may be answered after it
                driven.wait(plan["request_timeout"] + 60)
            sampler_result.update(meter.stop())
            sampler_result["window_s"] = (time.monotonic_ns() - t_measure) / 1e9

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            merged = drive(plan, concurrency, a.client_processes)
        finally:
            driven.set()
        sampler.join(timeout=10)
        if STOP.is_set():
            raise KeyboardInterrupt
        STOP.wait(1.5)  # let the backends flush their statistics
        db_work = db_work_per_request(counters_before, db_counters(self.server, a.database),
                                      merged["sent"])
        window = max(merged["last_done"] - t_measure, 1) / 1e9
        ops = ops_stats(merged["latencies"], merged["outcomes"], window)
        total = ops["all" if len(ops) > 1 else next(iter(ops))] if ops else None
        result: dict[str, Any] = {"window_s": window, "connections": merged["connects"],
                                  "requests": total["requests"] if total else 0, "ops": ops,
                                  "db_per_request": db_work,
                                  "rps": total["rps"] if total else 0.0,
                                  "errors": sum(total["errors"].values()) if total else 0}
        cpu_window = sampler_result.pop("window_s", a.duration)
        result["cpu"] = {"client_pct": 100 * merged["cpu_seconds"] / cpu_window,
                         **sampler_result}
        if "machine_pct" in result["cpu"]:
            cpu = result["cpu"]
            cpu["other_pct"] = other_pct(cpu["machine_pct"], cpu["client_pct"],
                                         cpu["server_pct"], cpu["postgres_pct"])
            # CPU milliseconds per request: unlike req/s, barely moved by other load
            for key in ("client", "server", "postgres_bench"):
                cpu[f"{key}_ms_per_request"] = ms_per_request(cpu[f"{key}_pct"], cpu_window,
                                                              result["requests"])
        if merged["bad_bodies"]:
            self.note(f"{scenario}: {len(merged['bad_bodies'])} 2xx answer(s) were not the "
                      f"expected transaction, e.g. {merged['bad_bodies'][0]!r}")
        if merged["stuck_threads"]:
            self.note(f"{scenario}: {merged['stuck_threads']} client thread(s) still waiting "
                      f"for an answer at the end")
        if scenario not in ("hot", "hot64"):
            short = sum(o["insufficient_points"] for k, o in result["ops"].items() if k != "all")
            if short:
                self.note(f"{scenario}: {short} insufficient_points answers although every "
                          f"member was pre-loaded")
        self.stop_profilers()
        return result

    def run_floors(self, floors: list[str], token: str) -> None:
        """The floors (:mod:`harness.floor`), served by the same gunicorn command."""
        coalition = self.gunicorn
        self.gunicorn = dataclasses.replace(coalition, app=FLOOR_APP, process=None,
                                            log=self.workdir / "floor.log")
        say(f"floors: {self.gunicorn.shown()}")
        self.gunicorn.start()
        try:
            for scenario in floors:
                self.report["scenarios"][scenario] = self.run_scenario(scenario, token, {})
                self.print_scenario(scenario, self.report["scenarios"][scenario])
        finally:
            problems = self.gunicorn.stop()
            if problems:
                self.note(f"the floors' gunicorn logged {len(problems)} error line(s), e.g. "
                          f"{problems[0][:200]!r}")
            self.gunicorn = coalition

    # -- py-spy

    def start_profilers(self, scenario: str, duration: float) -> None:
        if not Profilers.available() or self.gunicorn.process is None:
            self.note("--profile-dir given but py-spy is not installed in the venv "
                      "(.venv/bin/pip install py-spy)")
            return
        self.profilers.start(self.gunicorn.worker_pids(), Path(self.args.profile_dir),
                             scenario, duration)

    def stop_profilers(self) -> None:
        profile = self.profilers.stop()
        if profile is not None:
            self.report["profile"] = {"scenario": self.args.profile_scenario, **profile}

    # -- pgbench and ledger check

    def run_pgbench(self) -> dict[str, Any] | None:
        a = self.args
        pgbench = shutil.which("pgbench")
        if pgbench is None:
            self.note("pgbench is not installed: no database yardstick this run")
            return None
        return run_pgbench(self.procs, pgbench, self.server, database=a.pgbench_database,
                           scale=a.pgbench_scale, concurrency=a.concurrency,
                           duration=a.duration, log=self.workdir / "pgbench.log")

    def ledger_check(self) -> dict[str, Any]:
        say("ledger check: coalition ledger check")
        result = self.coalition("ledger", "check", check=False)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 and re.search(r"No such command '?(ledger|check)'?", output):
            message = ("`coalition ledger check` does not exist in this checkout yet: "
                       "the ledger invariants were NOT checked")
            self.note(message)
            return {"status": "unavailable", "message": message, "output": output[-2000:]}
        status = "ok" if result.returncode == 0 else "failed"
        return {"status": status, "exit_code": result.returncode, "output": output[-4000:]}

    # -- the whole run

    def run(self) -> int:
        a = self.args
        scenarios = (list(SCENARIOS) if a.scenario in ("all", "goals")
                     else [] if a.scenario in ("jobs", "floors", *FLOORS) else [a.scenario])
        floors = (list(FLOORS) if a.scenario in ("goals", "floors")
                  else [a.scenario] if a.scenario in FLOORS else [])
        if "paced" in scenarios and not a.paced_rate and a.skip_pgbench:
            raise BenchError("the paced scenario needs --paced-rate or pgbench's rate")
        self.report["run"] = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "goals": a.scenario == "goals",
            "scenarios": scenarios, "duration_s": a.duration, "warmup_s": a.warmup,
            "concurrency": a.concurrency, "client_processes": a.client_processes,
            "members": a.members, "hot_members": a.hot_members, "workers": a.workers,
            "worker_class": a.worker_class, "threads": a.threads, "earn_body": a.earn_body,
            "rate_limit_storage": a.rate_limit_storage,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "workdir": str(self.workdir),
        }
        self.report["machine"] = machine_facts()
        self.report["postgres"] = server_facts(self.server)
        say(f"machine: {self.report['machine']['cores']} cores, {self.report['machine']['cpu']};"
            f" PostgreSQL {self.report['postgres']['version']}; logs in {self.workdir}")

        self.report["background"] = self.background_load()
        if "paced" in scenarios and not a.paced_rate:
            # the paced rate is half of what pgbench does, measured first in this run
            self.report["pgbench"] = self.run_pgbench()
            if not self.report["pgbench"]:
                raise BenchError("the paced scenario needs --paced-rate or pgbench")
        operator = self.prepare_database()
        self.start_gunicorn()
        token = self.setup_partner(operator)
        say(f"partner: 'bench' with a client of scopes {' '.join(PARTNER_SCOPES)}; token fetched")
        if not self.partner_api_present(token):
            self.note("the partner API (POST /v1/members, /v1/earn, /v1/burn) is not served "
                      "by this checkout: no earn/burn figures this run")
            scenarios = []
        if scenarios:
            pools = self.enrol(token, pool_sizes(scenarios, a.members, a.hot_members))
            if pools.get("burn"):
                self.preload(token, pools["burn"], a.burn_preload, "burn")
            if pools.get("hot"):
                self.preload(token, pools["hot"], a.hot_preload, "hot")
            if pools.get("hot64"):
                self.preload(token, pools["hot64"], a.hot64_preload, "hot64")
            if pools.get("history"):
                deep, shallow = pools["history"]
                self.plant_history(deep, a.history_lots, "deep")
                self.plant_history(shallow, 10, "shallow")
            # A long-running database has planner statistics; this fresh one has none until
            # autovacuum gets to it (a minute or more), and without them PostgreSQL plans the
            # partner_txn_id lookup as a scan of all the partner's entries (ix_entry_partner_id_id
            # plus a filter), so every earn reads more rows than the one before. Statistics
            # taken before each scenario, with the pre-loaded history and the scenarios
            # before it in the tables, give the plans a database in service has (a
            # scenario changes the tables by more than autovacuum's threshold in less than
            # its nap time: lot_movement, planned on statistics from when a few entries
            # held all its rows, was read whole by every reversal).
            for scenario in scenarios:
                analyze_database(self.server, a.database)
                self.report["scenarios"][scenario] = self.run_scenario(scenario, token, pools)
                self.print_scenario(scenario, self.report["scenarios"][scenario])
        self.stop_gunicorn()
        if floors:
            self.run_floors(floors, token)
        if a.scenario in ("jobs", "all", "goals"):
            self.report["jobs"] = run_jobs(self.server, a.jobs_database, a.job_members,
                                           a.job_batch, a.jobs_code)
        if not a.skip_pgbench and not self.report.get("pgbench"):
            self.report["pgbench"] = self.run_pgbench()
        self.report["ledger_check"] = self.ledger_check()
        self.report["targets"] = targets(self.report)
        self.print_summary()
        if a.json:
            Path(a.json).write_text(json.dumps(self.report, indent=2, default=str) + "\n")
            say(f"figures written to {a.json}")
        failed = (any(s["errors"] for s in self.report["scenarios"].values())
                  or self.report["ledger_check"]["status"] == "failed"
                  or self.report.get("jobs", {}).get("ledger_check", {}).get("status")
                  == "failed")
        return 1 if failed else 0

    def cleanup(self) -> None:
        self.procs.stop_all()

    # -- output

    def print_scenario(self, scenario: str, result: dict[str, Any]) -> None:
        for line in scenario_lines(scenario, result):
            say(line)

    def print_summary(self) -> None:
        for line in summary_lines(self.report):
            say(line)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    p.add_argument("--client-processes", type=int, default=1,
                   help="split the clients over this many processes (1: threads only)")
    p.add_argument("--members", type=int, default=1000,
                   help="members in the earn pool and in the burn/mixed pool")
    p.add_argument("--hot-members", type=int, default=4, help="members in the hot scenario")
    p.add_argument("--burn-preload", type=int, default=100_000,
                   help="points loaded on each burn/mixed member")
    p.add_argument("--hot-preload", type=int, default=50,
                   help="points loaded on each hot member (earn 10 / burn 10 at random)")
    p.add_argument("--hot64-preload", type=int, default=1000,
                   help="points pre-loaded on the hot64 member")
    p.add_argument("--hot-concurrency", type=int, default=64,
                   help="clients in the hot64 scenario (all on one member)")
    p.add_argument("--history-lots", type=int, default=100_000,
                   help="live lots of the deep member in the history scenario")
    p.add_argument("--history-concurrency", type=int, default=1,
                   help="clients in the history scenario (1: latency is the cost alone)")
    p.add_argument("--reconnect-every", type=int, default=0,
                   help="open a new connection after this many requests (0: keep one "
                        "connection per client for the whole scenario)")
    p.add_argument("--earn-body", choices=("spend", "points"), default="spend",
                   help="earn by spend {amount, currency} or by points")
    p.add_argument("--scenario", choices=(*SCENARIOS, *FLOORS, "floors", "jobs", "all",
                                          "goals"), default="all",
                   help="jobs: coalition expire and coalition daily over --job-members "
                        "members in a database of their own (bench/harness/jobs.py); "
                        "floors: Flask with next to no work, alone and with one read "
                        "(bench/harness/floor.py); goals: every scenario, the floors and "
                        "the jobs, pgbench first (the paced rate is half of its tps), "
                        "every goal of the hot path printed as met or not")
    p.add_argument("--job-members", type=int, default=100_000,
                   help="members filled for the jobs scenario")
    p.add_argument("--job-batch", type=int, default=0,
                   help="--batch given to the jobs (0: their default)")
    p.add_argument("--jobs-database", default="coalition_bench_jobs",
                   help="dropped and re-created by the jobs scenario")
    p.add_argument("--jobs-code",
                   help="run the jobs from this checkout of Coalition instead (PYTHONPATH), "
                        "for figures before and after a change in one run")
    p.add_argument("--paced-rate", type=float, default=0.0,
                   help="earns a second in the paced scenario (0: half of pgbench's tps)")
    p.add_argument("--paced-concurrency", type=int, default=32,
                   help="client threads sharing the paced scenario's schedule")
    p.add_argument("--max-requests", type=int, default=2_000_000,
                   help="per scenario, a bound besides the duration")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="gunicorn workers")
    p.add_argument("--worker-class", choices=("gthread", "sync"), default="gthread")
    p.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    p.add_argument("--port", type=int, default=0, help="gunicorn port (0: any free port)")
    p.add_argument("--no-reuse-port", dest="reuse_port", action="store_false",
                   help="one listening socket shared by the workers (gunicorn's default) "
                        "instead of SO_REUSEPORT sockets per worker")
    p.add_argument("--rate-limit-storage", default="memory://",
                   help="where the rate limits are counted: memory:// or a Redis URL")
    p.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server URL (loopback)")
    p.add_argument("--database", default="coalition_bench",
                   help="dropped and re-created on every run")
    p.add_argument("--pgbench-database", default="coalition_pgbench")
    p.add_argument("--pgbench-scale", type=int, default=10)
    p.add_argument("--skip-pgbench", action="store_true")
    p.add_argument("--profile-dir", help="record py-spy profiles of every gunicorn worker here")
    p.add_argument("--profile-scenario", choices=SCENARIOS, default="earn")
    p.add_argument("--workdir", help="logs (default: a new temporary directory)")
    p.add_argument("--json", help="write every figure to this file")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.duration > 3600:
        p.error("--duration must be in (0, 3600]")
    if args.warmup < 0 or args.warmup > 600:
        p.error("--warmup must be in [0, 600]")
    for name in ("concurrency", "client_processes", "workers", "threads", "max_requests",
                 "pgbench_scale", "burn_preload", "hot_preload"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.members < 1 or args.hot_members < 1:
        p.error("--members and --hot-members must be at least 1")
    if args.client_processes > args.concurrency:
        p.error("--client-processes cannot exceed --concurrency")
    return args


def main(argv: list[str] | None = None, bench_class: type[Bench] | None = None,
         parse: Callable[[list[str] | None], argparse.Namespace] | None = None) -> int:
    """Run a benchmark (this one, or another built on :class:`Bench` with its own
    arguments), stopping everything it started however it ends."""
    args = (parse or parse_args)(argv)

    def interrupted(signum: int, _frame: Any) -> None:
        STOP.set()
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    bench = None
    try:
        bench = (bench_class or Bench)(args)
        return bench.run()
    except KeyboardInterrupt:
        STOP.set()
        say("\ninterrupted: stopping everything the benchmark started")
        return 130
    except BenchError as exc:
        STOP.set()
        say(f"\nbenchmark failed: {exc}")
        return 2
    finally:
        if bench is not None:
            bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
