#!/usr/bin/env python3
"""Ledger benchmark (issue "ledger", item 8): earn and burn through the real stack.

    .venv/bin/python bench/ledger.py --duration 20 --concurrency 16 \
        [--members 1000] [--hot-members 4] [--workers 2] [--scenario earn|burn|mixed|hot|all] \
        [--json PATH]

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
import base64
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
APP = "coalition.app:create_app()"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"
PARTNER_SCOPES = ["points:earn", "points:burn", "members:write", "members:read"]
SCENARIOS = ("earn", "burn", "mixed", "hot")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 300.0
SETUP_TIMEOUT = 600.0  # enrolment and pre-loading, all together
TARGET_RATIO = 0.5
TARGET_EARN_P99_MS = 25.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: set on Ctrl-C/SIGTERM: every client loop checks it
STOP = threading.Event()


class BenchError(RuntimeError):
    """A step failed; the message says which and why."""


def say(message: str = "") -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- processes


class Processes:
    """Every process the benchmark starts, stopped (whole process group) at the end."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], *, env: dict[str, str],
              log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """``sig`` to the process group, then SIGKILL to whatever is left of it."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # workers left behind by a dead master
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self._running)):
            self.stop(process)


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without COALITION_*/FLASK_*/GUNICORN_*/PG*, plus ``settings``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COALITION_", "FLASK_", "GUNICORN_", "PG"))}
    env.update(settings)
    return env


def run_command(command: list[str], env: dict[str, str], timeout: float = CLI_TIMEOUT,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(command)} did not finish within {timeout:.0f}s") from exc
    if check and result.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed ({result.returncode}):\n"
                         f"{result.stdout}{result.stderr}")
    return result


# --------------------------------------------------------------------------- CPU from /proc


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_table() -> dict[int, tuple[str, int, float]]:
    """Every process: pid -> (comm, ppid, CPU seconds)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (comm, int(fields[1]),
                                  (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def pids_where(predicate: Callable[[int, str, int], bool]) -> list[int]:
    """PIDs whose (pid, comm, ppid) satisfy ``predicate``."""
    return [pid for pid, (comm, ppid, _) in proc_table().items() if predicate(pid, comm, ppid)]


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


def postgres_database(pid: int) -> str | None:
    """The database a PostgreSQL backend serves, from its process title."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return None
    # "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE" (Debian names the cluster)
    parts = title.split()
    if not parts or parts[0] != "postgres:":
        return None
    parts = parts[2:] if len(parts) > 1 and parts[1].endswith(":") else parts[1:]
    return parts[1] if len(parts) > 2 else None


class CpuMeter:
    """CPU used over a window by: gunicorn (master and workers), PostgreSQL (all of it, and
    the backends of the benchmark's own databases), extra processes, and the whole machine.

    A sampler thread reads ``/proc`` every ``interval`` seconds and keeps each process's
    last reading, so a process that exits inside the window (a pgbench connection's backend)
    still counts up to its last sample; one born inside it counts from zero.
    """

    def __init__(self, gunicorn_pid: int | None, databases: tuple[str, ...],
                 interval: float = 0.5) -> None:
        self.gunicorn_pid = gunicorn_pid
        self.databases = set(databases)
        self.interval = interval
        self._db_of: dict[int, str | None] = {}
        self._base: dict[str, dict[int, float]] = {}
        self._last: dict[str, dict[int, float]] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _groups(self) -> dict[str, dict[int, float]]:
        table = proc_table()
        server_pids = {self.gunicorn_pid} if self.gunicorn_pid else set()
        server_pids |= {pid for pid, (_, ppid, _) in table.items() if ppid in server_pids}
        groups: dict[str, dict[int, float]] = {"server": {}, "postgres": {}, "postgres_bench": {}}
        for pid, (comm, _, cpu) in table.items():
            if pid in server_pids:
                groups["server"][pid] = cpu
            elif comm == "postgres":
                groups["postgres"][pid] = cpu
                if pid not in self._db_of:
                    self._db_of[pid] = postgres_database(pid)
                if self._db_of[pid] in self.databases:
                    groups["postgres_bench"][pid] = cpu
        return groups

    def _sample(self) -> None:
        for name, readings in self._groups().items():
            self._last.setdefault(name, {}).update(readings)

    def start(self) -> CpuMeter:
        self._base = self._groups()
        self._last = {name: dict(readings) for name, readings in self._base.items()}
        self._machine = machine_jiffies()
        self._wall = time.monotonic()

        def loop() -> None:
            while not self._done.wait(self.interval):
                with contextlib.suppress(OSError, ValueError):
                    self._sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """Percent of one core over the window (200 = both cores of a 2-core machine)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample()
        wall = max(time.monotonic() - self._wall, 1e-9)
        busy, total = machine_jiffies()
        shares = {"machine_pct": 100 * (os.cpu_count() or 1) * (busy - self._machine[0])
                  / max(total - self._machine[1], 1)}
        for name, readings in self._last.items():
            base = self._base.get(name, {})
            seconds = sum(cpu - base.get(pid, 0.0) for pid, cpu in readings.items())
            shares[f"{name}_pct"] = 100 * seconds / wall
        # each worker apart: a worker holding most connections shows as an imbalance
        workers = self._last.get("server", {})
        shares["workers_pct"] = sorted(
            (100 * (cpu - self._base.get("server", {}).get(pid, 0.0)) / wall
             for pid, cpu in workers.items() if pid != self.gunicorn_pid), reverse=True)
        return shares


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# --------------------------------------------------------------------------- HTTP client


class ClientError(Exception):
    """The connection failed (refused, reset, timed out, bad response)."""


class Client:
    """One persistent HTTP/1.1 connection to the server; reconnects when it is lost."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn: http.client.HTTPConnection | None = None
        self.connects = 0

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.connects += 1
        try:
            self.conn.request(method, path, body=body, headers=headers or self.headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ClientError(f"{type(exc).__name__}: {exc}") from exc
        if response.will_close:
            self.close()
        return response.status, data

    def json(self, method: str, path: str, body: Any = None,
             expect: tuple[int, ...] = (200, 201)) -> Any:
        status, data = self.call(method, path,
                                 None if body is None else json.dumps(body).encode())
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        if status not in expect:
            raise BenchError(f"{method} {path} answered {status}: {parsed}")
        return parsed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def free_port() -> int:
    """A port nothing listens on now (127.0.0.1)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch_token(port: int, client_id: str, secret: str, scope: str | None = None) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = "grant_type=client_credentials" + (f"&scope={scope.replace(' ', '+')}" if scope else "")
    client = Client(port)
    try:
        status, data = client.call("POST", "/oauth/token", form.encode(), {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        })
    finally:
        client.close()
    if status != 200:
        raise BenchError(f"POST /oauth/token answered {status}: {data.decode(errors='replace')}")
    return json.loads(data)["access_token"]


# --------------------------------------------------------------------------- load generator


def percentile(ordered: list[int], p: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1] / 1e6


def op_stats(latencies: list[int], outcomes: Counter[str], window: float) -> dict[str, Any]:
    """Throughput, latency percentiles and outcome counts of one operation."""
    ordered = sorted(latencies)
    errors = {o: n for o, n in outcomes.items() if o not in ("ok", "insufficient_points")}
    return {
        "requests": len(ordered),
        "ok": outcomes.get("ok", 0),
        "insufficient_points": outcomes.get("insufficient_points", 0),
        "errors": errors,
        "rps": len(ordered) / window,
        "ok_rps": outcomes.get("ok", 0) / window,
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] / 1e6 if ordered else float("nan"),
        "mean_ms": sum(ordered) / len(ordered) / 1e6 if ordered else float("nan"),
    }


def classify(status: int, data: bytes) -> str:
    """'ok', 'insufficient_points' (a business answer), or an error key."""
    if 200 <= status < 300:
        return "ok"
    if status == 0:
        return "connection_error"
    try:
        code = json.loads(data).get("error")
    except (ValueError, AttributeError):
        code = None
    if status == 409 and code == "insufficient_points":
        return "insufficient_points"
    return f"{status} {code}" if code else str(status)


def make_request_factory(scenario: str, pools: dict[str, list[str]], tag: str,
                         earn_body: str) -> Callable[[random.Random, str], tuple[str, str, bytes]]:
    """``factory(rng, txn_id) -> (op, path, body)`` for one scenario."""

    def earn(rng: random.Random, member: str, txn: str) -> tuple[str, str, bytes]:
        body: dict[str, Any] = {"member_number": member, "partner_txn_id": txn}
        if earn_body == "spend":
            body["spend"] = {"amount": f"{rng.randint(100, 20000) / 100:.2f}", "currency": "GBP"}
        else:
            body["points"] = rng.randint(1, 50)
        return "earn", "/v1/earn", json.dumps(body).encode()

    def burn(member: str, txn: str, points: int) -> tuple[str, str, bytes]:
        body = {"member_number": member, "partner_txn_id": txn, "points": points}
        return "burn", "/v1/burn", json.dumps(body).encode()

    if scenario == "earn":
        members = pools["earn"]
        return lambda rng, txn: earn(rng, rng.choice(members), txn)
    if scenario == "burn":
        members = pools["burn"]
        return lambda rng, txn: burn(rng.choice(members), txn, 10)
    if scenario == "mixed":
        members = pools["burn"]

        def mixed(rng: random.Random, txn: str) -> tuple[str, str, bytes]:
            member = rng.choice(members)
            return earn(rng, member, txn) if rng.random() < 0.5 else burn(member, txn, 10)

        return mixed
    if scenario == "hot":
        members = pools["hot"]

        def hot(rng: random.Random, txn: str) -> tuple[str, str, bytes]:
            member = rng.choice(members)
            if rng.random() < 0.5:
                body = {"member_number": member, "partner_txn_id": txn, "points": 10}
                return "earn", "/v1/earn", json.dumps(body).encode()
            return burn(member, txn, 10)

        return hot
    raise ValueError(scenario)


def drive_threads(plan: dict[str, Any], proc_index: int, threads: int) -> dict[str, Any]:
    """Run ``threads`` closed-loop clients of one scenario in this process.

    Each thread owns one keep-alive connection and sends one request at a time until the
    window ends or its count is used up. Requests started before ``t_measure`` (warm-up)
    are not recorded. Returns latencies (ns) per operation, outcome counts, and this
    process's CPU seconds over the measured window.
    """
    factory = make_request_factory(plan["scenario"], plan["pools"], plan["tag"],
                                   plan["earn_body"])
    t_start, t_measure, t_end = plan["t_start"], plan["t_measure"], plan["t_end"]
    cap = plan["max_per_thread"]
    recycle = plan["reconnect_every"]
    results: list[dict[str, Any]] = [{} for _ in range(threads)]

    def worker(index: int) -> None:
        rng = random.Random(f"{plan['tag']}-{plan['scenario']}-{proc_index}-{index}")
        client = Client(plan["port"], plan["token"], timeout=plan["request_timeout"])
        latencies: dict[str, list[int]] = {}
        outcomes: Counter[tuple[str, str]] = Counter()
        checked: set[str] = set()
        bad_bodies: list[str] = []
        last_done = t_measure
        prefix = f"{plan['tag']}-{plan['scenario'][0]}{proc_index}.{index}-"
        delay = t_start - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        sent = 0
        try:
            while sent < cap and not STOP.is_set():
                began = time.monotonic_ns()
                if began >= t_end:
                    break
                op, path, body = factory(rng, f"{prefix}{sent}")
                try:
                    status, data = client.call("POST", path, body)
                except ClientError:
                    status, data = 0, b""
                done = time.monotonic_ns()
                sent += 1
                if recycle and sent % recycle == 0:
                    client.close()  # the next request opens a new connection
                if began < t_measure:
                    continue
                outcome = classify(status, data)
                outcomes[(op, outcome)] += 1
                latencies.setdefault(op, []).append(done - began)
                last_done = done
                if outcome == "ok" and op not in checked:
                    # one look per operation and thread at the body: is it the transaction?
                    checked.add(op)
                    with contextlib.suppress(ValueError):
                        answer = json.loads(data)
                        if not (isinstance(answer, dict) and answer.get("type") == op):
                            bad_bodies.append(data[:300].decode(errors="replace"))
        finally:
            client.close()
            results[index] = {"latencies": latencies, "outcomes": outcomes,
                              "last_done": last_done, "connects": client.connects,
                              "bad_bodies": bad_bodies, "sent": sent}

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    # this thread only samples the process's CPU at the window's edges
    cpu_before = cpu_after = None
    wait = (t_measure - time.monotonic_ns()) / 1e9
    if wait > 0:
        STOP.wait(wait)
    cpu_before = own_cpu_seconds()
    wait = (t_end - time.monotonic_ns()) / 1e9
    if wait > 0:
        STOP.wait(wait)
    cpu_after = own_cpu_seconds()
    deadline = time.monotonic() + plan["request_timeout"] + 10
    for thread in pool:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    merged: dict[str, Any] = {"latencies": {}, "outcomes": Counter(), "last_done": t_measure,
                              "connects": 0, "bad_bodies": [], "sent": 0,
                              "cpu_seconds": cpu_after - cpu_before,
                              "stuck_threads": sum(t.is_alive() for t in pool)}
    for result in results:
        if not result:
            continue
        for op, values in result["latencies"].items():
            merged["latencies"].setdefault(op, []).extend(values)
        merged["outcomes"].update(result["outcomes"])
        merged["last_done"] = max(merged["last_done"], result["last_done"])
        merged["connects"] += result["connects"]
        merged["bad_bodies"].extend(result["bad_bodies"])
        merged["sent"] += result["sent"]
    return merged


def _child_main(plan: dict[str, Any], proc_index: int, threads: int, queue: Any) -> None:
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    try:
        queue.put(drive_threads(plan, proc_index, threads))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def drive(plan: dict[str, Any], concurrency: int, processes: int) -> dict[str, Any]:
    """Run ``concurrency`` clients split over ``processes`` (1: threads in this process)."""
    if processes <= 1:
        return drive_threads(plan, 0, concurrency)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    children = [context.Process(target=_child_main, args=(plan, i, n, queue), daemon=True)
                for i, n in enumerate(shares) if n]
    for child in children:
        child.start()
    parts = []
    try:
        deadline = time.monotonic() + (plan["t_end"] - time.monotonic_ns()) / 1e9 \
            + plan["request_timeout"] + 30
        for _ in children:
            parts.append(queue.get(timeout=max(1.0, deadline - time.monotonic())))
    except BaseException:
        for child in children:  # interrupted or failed: their SIGTERM handler stops them
            if child.is_alive():
                child.terminate()
        raise
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise BenchError("client process failed: " + "; ".join(errors))
    merged: dict[str, Any] = {"latencies": {}, "outcomes": Counter(), "last_done": 0,
                              "connects": 0, "bad_bodies": [], "sent": 0, "cpu_seconds": 0.0,
                              "stuck_threads": 0}
    for part in parts:
        for op, values in part["latencies"].items():
            merged["latencies"].setdefault(op, []).extend(values)
        merged["outcomes"].update(part["outcomes"])
        merged["last_done"] = max(merged["last_done"], part["last_done"])
        for key in ("connects", "sent", "cpu_seconds", "stuck_threads"):
            merged[key] += part[key]
        merged["bad_bodies"].extend(part["bad_bodies"])
    return merged


# --------------------------------------------------------------------------- database


def parse_server(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise BenchError(f"--server must be a postgresql+psycopg:// URL, not {url!r}")
    host = parsed.host or ""
    if host not in LOCAL_HOSTS:
        raise BenchError(f"the benchmark only talks to 127.0.0.1; --server names {host!r}")
    return {"url": parsed, "host": "127.0.0.1" if host == "localhost" else host,
            "port": parsed.port or 5432, "user": parsed.username or "postgres",
            "password": parsed.password}


def database_url(server: dict[str, Any], name: str) -> str:
    return server["url"].set(drivername="postgresql+psycopg", host=server["host"],
                             port=server["port"], username=server["user"],
                             database=name).render_as_string(hide_password=False)


def admin_connect(server: dict[str, Any]) -> Any:
    import psycopg

    return psycopg.connect(host=server["host"], port=server["port"], user=server["user"],
                           password=server["password"], dbname="postgres", autocommit=True,
                           connect_timeout=10, application_name="coalition-bench")


def recreate_database(server: dict[str, Any], name: str) -> None:
    from psycopg import sql

    with admin_connect(server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def analyze_database(server: dict[str, Any], name: str) -> None:
    import psycopg

    with psycopg.connect(host=server["host"], port=server["port"], user=server["user"],
                         password=server["password"], dbname=name, autocommit=True,
                         connect_timeout=10, application_name="coalition-bench") as conn:
        conn.execute("ANALYZE")


def drop_database(server: dict[str, Any], name: str) -> None:
    from psycopg import sql

    with admin_connect(server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))


DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
               "tup_updated", "tup_deleted", "blks_read", "blks_hit")
TABLE_COUNTERS = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch")


def db_counters(server: dict[str, Any], database: str) -> dict[str, Any]:
    """PostgreSQL's cumulative statistics of one database (flushed by backends about once a
    second, so deltas over a scenario are approximate)."""
    import psycopg

    with psycopg.connect(host=server["host"], port=server["port"], user=server["user"],
                         password=server["password"], dbname=database, autocommit=True,
                         connect_timeout=10, application_name="coalition-bench") as conn:
        row = conn.execute(f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
        tables = {name: dict(zip(TABLE_COUNTERS, values, strict=True)) for name, *values in
                  conn.execute(f"SELECT relname, {', '.join(TABLE_COUNTERS)} "
                               "FROM pg_stat_user_tables").fetchall()}
    return {"database": dict(zip(DB_COUNTERS, row, strict=True)), "tables": tables}


def db_work_per_request(before: dict[str, Any], after: dict[str, Any],
                        requests: int) -> dict[str, Any]:
    """Counter deltas divided by the requests sent (warm-up included)."""
    n = max(requests, 1)
    database = {k: (after["database"][k] - before["database"][k]) / n for k in DB_COUNTERS}
    tables = {}
    for name, counters in after["tables"].items():
        old = before["tables"].get(name, {})
        delta = {k: ((counters[k] or 0) - (old.get(k) or 0)) / n for k in TABLE_COUNTERS}
        if any(delta.values()):
            tables[name] = delta
    return {"requests": requests, "database": database, "tables": tables}


def server_facts(server: dict[str, Any]) -> dict[str, str]:
    with admin_connect(server) as conn:
        facts = {"version": conn.execute("SHOW server_version").fetchone()[0]}
        for setting in ("max_connections", "shared_buffers", "synchronous_commit", "fsync",
                        "wal_sync_method"):
            facts[setting] = conn.execute(f"SHOW {setting}").fetchone()[0]
    return facts


def pg_env(server: dict[str, Any], database: str) -> dict[str, str]:
    env = clean_env(PGHOST=server["host"], PGPORT=str(server["port"]), PGUSER=server["user"],
                    PGDATABASE=database, PGAPPNAME="coalition-bench")
    if server["password"]:
        env["PGPASSWORD"] = str(server["password"])
    return env


# --------------------------------------------------------------------------- machine


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    return {"cores": os.cpu_count(), "cpu": model, "memory": memory,
            "kernel": platform.release(), "python": platform.python_version()}


# --------------------------------------------------------------------------- py-spy


def summarise_profile(raw_files: list[Path], top: int = 25) -> dict[str, Any]:
    """Own and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in raw_files:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                samples = int(count)
                frames = [f for f in stack.split(";") if f]
                # the first frame may be the process/thread label py-spy adds
                frames = [f for f in frames if not f.startswith(("process ", "thread "))]
                if not frames:
                    continue
                total += samples
                own[frames[-1]] += samples
                for frame in set(frames):
                    inclusive[frame] += samples
    return {"samples": total,
            "own": [(f, n, 100 * n / total) for f, n in own.most_common(top)] if total else [],
            "inclusive": ([(f, n, 100 * n / total) for f, n in inclusive.most_common(top)]
                          if total else [])}


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Processes()
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
        )
        self.gunicorn: subprocess.Popen[bytes] | None = None
        self.port = 0
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

    def gunicorn_command(self) -> list[str]:
        from gunicorn.config import KNOWN_SETTINGS

        a = self.args
        self.port = a.port or free_port()
        command = [str(BIN / "gunicorn"), "--workers", str(a.workers),
                   "--worker-class", a.worker_class, "--bind", f"127.0.0.1:{self.port}",
                   "--keep-alive", "30", "--timeout", "60", "--graceful-timeout", "5",
                   "--worker-tmp-dir", "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp",
                   "--log-level", "info"]
        if a.worker_class == "gthread":
            command += ["--threads", str(a.threads)]
        if a.reuse_port:
            # a listening socket per worker, the kernel spreading connections over them;
            # with one shared socket, a gthread worker accepts every connection it can, and
            # a few long-lived keep-alive connections can all land on one worker
            command.append("--reuse-port")
        # gunicorn >= 25.1 opens a control socket at a fixed per-user path by default
        if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
            command.append("--no-control-socket")
        return [*command, APP]

    def start_gunicorn(self) -> None:
        command = self.gunicorn_command()
        self.report["gunicorn"] = " ".join(command[:-1] + [f"'{APP}'"])
        say(f"server: {self.report['gunicorn']}")
        log = self.workdir / "gunicorn.log"
        self.gunicorn = self.procs.start(command, env=self.env, log=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not STOP.is_set():
            if self.gunicorn.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.gunicorn.returncode}:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
            if self.port:
                client = Client(self.port, timeout=2.0)
                with contextlib.suppress(ClientError):
                    status, _ = client.call("GET", "/healthz")
                    # every worker must be up, not just the first one
                    workers = pids_where(lambda p, c, pp: pp == self.gunicorn.pid)
                    if status == 200 and len(workers) >= self.args.workers:
                        client.close()
                        return
                client.close()
            time.sleep(0.1)
        raise BenchError(f"gunicorn did not answer /healthz within {START_TIMEOUT:.0f}s:\n"
                         f"{log.read_text(errors='replace')[-3000:]}")

    def stop_gunicorn(self) -> None:
        if self.gunicorn is not None:
            self.procs.stop(self.gunicorn)
            log = (self.workdir / "gunicorn.log").read_text(errors="replace")
            problems = [line for line in log.splitlines()
                        if re.search(r"\b(ERROR|CRITICAL|Traceback|WORKER TIMEOUT)\b", line)]
            if problems:
                self.note(f"gunicorn logged {len(problems)} error line(s), e.g. "
                          f"{problems[0][:200]!r} (log: {self.workdir / 'gunicorn.log'})")
            self.gunicorn = None

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

    def run_scenario(self, scenario: str, token: str,
                     pools: dict[str, list[str]]) -> dict[str, Any]:
        a = self.args
        now = time.monotonic_ns()
        t_start = now + int(0.3e9)
        t_measure = t_start + int(a.warmup * 1e9)
        t_end = t_measure + int(a.duration * 1e9)
        plan = {"scenario": scenario, "pools": pools, "tag": self.tag, "port": self.port,
                "token": token, "earn_body": a.earn_body, "t_start": t_start,
                "t_measure": t_measure, "t_end": t_end, "request_timeout": 30.0,
                "max_per_thread": max(1, math.ceil(a.max_requests / a.concurrency)),
                "reconnect_every": a.reconnect_every}
        meter = CpuMeter(self.gunicorn.pid if self.gunicorn else None, (a.database,))
        say(f"scenario {scenario}: {a.concurrency} clients, {a.warmup:g}s warm-up + "
            f"{a.duration:g}s measured")
        sampler_result: dict[str, Any] = {}
        counters_before = db_counters(self.server, a.database)

        def sample() -> None:
            wait = (t_measure - time.monotonic_ns()) / 1e9
            if wait > 0 and STOP.wait(wait):
                return
            meter.start()
            if scenario == a.profile_scenario and a.profile_dir:
                self.start_profilers(scenario, a.duration)
            wait = (t_end - time.monotonic_ns()) / 1e9
            if wait > 0 and STOP.wait(wait):
                return
            sampler_result.update(meter.stop())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        merged = drive(plan, a.concurrency, a.client_processes)
        sampler.join(timeout=10)
        if STOP.is_set():
            raise KeyboardInterrupt
        STOP.wait(1.5)  # let the backends flush their statistics
        db_work = db_work_per_request(counters_before, db_counters(self.server, a.database),
                                      merged["sent"])
        window = max(merged["last_done"] - t_measure, 1) / 1e9
        result: dict[str, Any] = {"window_s": window, "connections": merged["connects"],
                                  "requests": 0, "ops": {}, "db_per_request": db_work}
        ops = sorted(merged["latencies"])
        for op in ops:
            outcomes = Counter({o: n for (o_op, o), n in merged["outcomes"].items()
                                if o_op == op})
            result["ops"][op] = op_stats(merged["latencies"][op], outcomes, window)
        if len(ops) > 1:  # earn and burn together
            everything = [v for op in ops for v in merged["latencies"][op]]
            outcomes = Counter()
            for (_, o), n in merged["outcomes"].items():
                outcomes[o] += n
            result["ops"]["all"] = op_stats(everything, outcomes, window)
        total = result["ops"]["all" if len(ops) > 1 else ops[0]] if ops else None
        result["requests"] = total["requests"] if total else 0
        result["rps"] = total["rps"] if total else 0.0
        result["errors"] = sum(total["errors"].values()) if total else 0
        result["cpu"] = {"client_pct": 100 * merged["cpu_seconds"] / a.duration, **sampler_result}
        if "machine_pct" in result["cpu"]:
            cpu = result["cpu"]
            cpu["other_pct"] = max(0.0, cpu["machine_pct"] - cpu["client_pct"] - cpu["server_pct"]
                                   - cpu["postgres_pct"])
            # CPU milliseconds per request: unlike req/s, barely moved by other load
            for key in ("client", "server", "postgres_bench"):
                cpu[f"{key}_ms_per_request"] = (cpu[f"{key}_pct"] / 100 * a.duration * 1000
                                                / max(result["requests"], 1))
        if merged["bad_bodies"]:
            self.note(f"{scenario}: {len(merged['bad_bodies'])} 2xx answer(s) were not the "
                      f"expected transaction, e.g. {merged['bad_bodies'][0]!r}")
        if merged["stuck_threads"]:
            self.note(f"{scenario}: {merged['stuck_threads']} client thread(s) still waiting "
                      f"for an answer at the end")
        if scenario != "hot":
            short = sum(o["insufficient_points"] for k, o in result["ops"].items() if k != "all")
            if short:
                self.note(f"{scenario}: {short} insufficient_points answers although every "
                          f"member was pre-loaded")
        self.stop_profilers()
        return result

    # -- py-spy

    def start_profilers(self, scenario: str, duration: float) -> None:
        spy = BIN / "py-spy"
        if not spy.exists() or self.gunicorn is None:
            self.note("--profile-dir given but py-spy is not installed in the venv "
                      "(.venv/bin/pip install py-spy)")
            return
        self._profiles: list[tuple[subprocess.Popen[bytes], Path]] = []
        out = Path(self.args.profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        seconds = str(max(1, int(duration) - 1))
        # collapsed stacks (text): flamegraph.pl, speedscope and inferno read them
        for pid in pids_where(lambda p, c, pp: pp == self.gunicorn.pid):
            target = out / f"{scenario}-{pid}.txt"
            command = [str(spy), "record", "-p", str(pid), "-d", seconds, "-r", "200",
                       "--gil", "--function", "-f", "raw", "-o", str(target)]
            process = self.procs.start(command, env=clean_env(),
                                       log=out / f"{scenario}-{pid}.log")
            self._profiles.append((process, target))

    def stop_profilers(self) -> None:
        profiles = getattr(self, "_profiles", [])
        for process, _ in profiles:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            self.procs.stop(process, signal.SIGINT)
        if profiles:
            summary = summarise_profile([target for _, target in profiles])
            self.report["profile"] = {"scenario": self.args.profile_scenario,
                                      "files": [str(t) for _, t in profiles], **summary}
        self._profiles = []

    # -- pgbench and ledger check

    def run_pgbench(self) -> dict[str, Any] | None:
        a = self.args
        pgbench = shutil.which("pgbench")
        if pgbench is None:
            self.note("pgbench is not installed: no database yardstick this run")
            return None
        say(f"pgbench: drop and create {a.pgbench_database}, pgbench -i -s {a.pgbench_scale}")
        recreate_database(self.server, a.pgbench_database)
        env = pg_env(self.server, a.pgbench_database)
        run_command([pgbench, "-i", "-q", "-s", str(a.pgbench_scale)], env, timeout=600)
        command = [pgbench, "-b", "tpcb-like", "-c", str(a.concurrency), "-j", "2",
                   "-T", str(max(1, round(a.duration)))]
        say(f"pgbench: {' '.join(command[1:])}")
        log = self.workdir / "pgbench.log"
        import resource

        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        meter = CpuMeter(None, (a.pgbench_database,)).start()
        process = self.procs.start(command, env=env, log=log)
        try:
            deadline = time.monotonic() + a.duration + 120
            while process.poll() is None:
                if STOP.is_set():
                    raise KeyboardInterrupt
                if time.monotonic() > deadline:
                    raise BenchError("pgbench did not finish in time")
                time.sleep(0.2)
        finally:
            self.procs.stop(process)
        share = meter.stop()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        output = log.read_text(errors="replace")
        if process.returncode != 0:
            raise BenchError(f"pgbench failed ({process.returncode}):\n{output[-2000:]}")
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
        latency = re.search(r"latency average = ([\d.]+) ms", output)
        if not tps:
            raise BenchError(f"no tps in pgbench's output:\n{output[-2000:]}")
        client_pct = 100 * (children_after.ru_utime + children_after.ru_stime
                            - children_before.ru_utime - children_before.ru_stime) / a.duration
        with contextlib.suppress(Exception):
            drop_database(self.server, a.pgbench_database)
        return {"command": f"pgbench -i -s {a.pgbench_scale}; {' '.join(command[1:])}",
                "tps": float(tps.group(1)),
                "latency_avg_ms": float(latency.group(1)) if latency else None,
                "cpu": {"client_pct": client_pct, **share,
                        "other_pct": max(0.0, share["machine_pct"] - client_pct
                                         - share["postgres_pct"])}}

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
        scenarios = list(SCENARIOS) if a.scenario == "all" else [a.scenario]
        self.report["run"] = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "scenarios": scenarios, "duration_s": a.duration, "warmup_s": a.warmup,
            "concurrency": a.concurrency, "client_processes": a.client_processes,
            "members": a.members, "hot_members": a.hot_members, "workers": a.workers,
            "worker_class": a.worker_class, "threads": a.threads, "earn_body": a.earn_body,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "workdir": str(self.workdir),
        }
        self.report["machine"] = machine_facts()
        self.report["postgres"] = server_facts(self.server)
        say(f"machine: {self.report['machine']['cores']} cores, {self.report['machine']['cpu']};"
            f" PostgreSQL {self.report['postgres']['version']}; logs in {self.workdir}")

        self.report["background"] = self.background_load()
        operator = self.prepare_database()
        self.start_gunicorn()
        token = self.setup_partner(operator)
        say(f"partner: 'bench' with a client of scopes {' '.join(PARTNER_SCOPES)}; token fetched")
        if not self.partner_api_present(token):
            self.note("the partner API (POST /v1/members, /v1/earn, /v1/burn) is not served "
                      "by this checkout: no earn/burn figures this run")
            scenarios = []
        if scenarios:
            # the burn pool is always loaded: besides feeding burn and mixed, its entries
            # are the history that the planner statistics below are taken from
            wanted = {"earn": a.members if "earn" in scenarios else 0, "burn": a.members,
                      "hot": a.hot_members if "hot" in scenarios else 0}
            pools = self.enrol(token, {k: v for k, v in wanted.items() if v})
            if pools.get("burn"):
                self.preload(token, pools["burn"], a.burn_preload, "burn")
            if pools.get("hot"):
                self.preload(token, pools["hot"], a.hot_preload, "hot")
            # A long-running database has planner statistics; this fresh one has none until
            # autovacuum gets to it (a minute or more), and without them PostgreSQL plans the
            # partner_txn_id lookup as a scan of all the partner's entries (ix_entry_partner_id_id
            # plus a filter), so every earn reads more rows than the one before. Statistics
            # taken now, with the pre-loaded history in the tables, give the plans a database
            # in service has.
            analyze_database(self.server, a.database)
            for scenario in scenarios:
                self.report["scenarios"][scenario] = self.run_scenario(scenario, token, pools)
                self.print_scenario(scenario, self.report["scenarios"][scenario])
        self.stop_gunicorn()
        if not a.skip_pgbench:
            self.report["pgbench"] = self.run_pgbench()
        self.report["ledger_check"] = self.ledger_check()
        self.summarise()
        self.print_summary()
        if a.json:
            Path(a.json).write_text(json.dumps(self.report, indent=2, default=str) + "\n")
            say(f"figures written to {a.json}")
        failed = (any(s["errors"] for s in self.report["scenarios"].values())
                  or self.report["ledger_check"]["status"] == "failed")
        return 1 if failed else 0

    def cleanup(self) -> None:
        self.procs.stop_all()

    # -- output

    def summarise(self) -> None:
        earn = self.report["scenarios"].get("earn", {}).get("ops", {}).get("earn")
        pgbench = self.report.get("pgbench")
        targets: dict[str, Any] = {}
        if earn and pgbench:
            ratio = earn["ok_rps"] / pgbench["tps"]
            targets["ratio"] = {"value": ratio, "target": f">= {TARGET_RATIO}",
                                "met": ratio >= TARGET_RATIO}
        if earn:
            targets["earn_p99_ms"] = {"value": earn["p99_ms"], "target": f"<= {TARGET_EARN_P99_MS}",
                                      "met": earn["p99_ms"] <= TARGET_EARN_P99_MS}
        self.report["targets"] = targets

    @staticmethod
    def _cpu(c: dict[str, float], client: str) -> str:
        nan = float("nan")
        parts = [f"{client} {c.get('client_pct', nan):5.1f}%"]
        if c.get("workers_pct"):
            each = "/".join(f"{w:.0f}" for w in c.get("workers_pct", []))
            parts.append(f"gunicorn {c['server_pct']:5.1f}% (workers {each})")
        parts += [f"postgres {c.get('postgres_pct', nan):5.1f}% "
                  f"(own db {c.get('postgres_bench_pct', nan):5.1f}%)",
                  f"other {c.get('other_pct', nan):5.1f}%",
                  f"machine {c.get('machine_pct', nan):5.1f}%"]
        return "  ".join(parts)

    @staticmethod
    def _row(cells: list[str], widths: list[int]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                         enumerate(zip(cells, widths, strict=True)))

    HEAD = ["scenario/op", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
            "409 short", "errors"]
    WIDTHS = [12, 8, 8, 7, 7, 7, 8, 9, 6]

    def print_scenario(self, scenario: str, result: dict[str, Any]) -> None:
        for op, s in result["ops"].items():
            errors = ", ".join(f"{k}: {v}" for k, v in s["errors"].items())
            say(f"  {scenario}/{op}: {s['requests']} in {result['window_s']:.1f}s = "
                f"{s['rps']:.0f} req/s; p50 {s['p50_ms']:.1f} p95 {s['p95_ms']:.1f} "
                f"p99 {s['p99_ms']:.1f} max {s['max_ms']:.1f} ms"
                + (f"; 409 insufficient_points {s['insufficient_points']}"
                   if s["insufficient_points"] else "")
                + (f"; errors {errors}" if errors else ""))

    def print_summary(self) -> None:
        say()
        say("=" * 96)
        m, run = self.report["machine"], self.report["run"]
        say(f"Coalition ledger benchmark — {m['cores']} cores ({m['cpu']}), "
            f"PostgreSQL {self.report['postgres']['version']}")
        say(f"server: {self.report.get('gunicorn', '-')}")
        say(f"load: {run['concurrency']} keep-alive clients in "
            f"{run['client_processes']} process(es), "
            f"{run['warmup_s']:g}s warm-up + {run['duration_s']:g}s per scenario, "
            f"earn body: {run['earn_body']}")
        say()
        say(self._row(self.HEAD, self.WIDTHS))
        for scenario, result in self.report["scenarios"].items():
            for op, s in result["ops"].items():
                say(self._row([f"{scenario}/{op}", str(s["requests"]), f"{s['rps']:.0f}",
                               f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}", f"{s['p99_ms']:.1f}",
                               f"{s['max_ms']:.1f}", str(s["insufficient_points"]),
                               str(sum(s["errors"].values()))], self.WIDTHS))
        if self.report["scenarios"]:
            say()
            say("CPU over each measured window, % of one core (machine total = "
                f"{100 * (m['cores'] or 1)}%):")
            for scenario, result in self.report["scenarios"].items():
                c = result["cpu"]
                say(f"  {scenario:<7} {self._cpu(c, 'client')}  "
                    f"(connections opened: {result['connections']})")
            say("CPU milliseconds per request (hardly moved by other load on the machine):")
            for scenario, result in self.report["scenarios"].items():
                c = result["cpu"]
                if "server_ms_per_request" in c:
                    say(f"  {scenario:<7} gunicorn {c['server_ms_per_request']:.2f} ms  "
                        f"postgres (own db) {c['postgres_bench_ms_per_request']:.2f} ms  "
                        f"client {c['client_ms_per_request']:.2f} ms")
            say()
            say("PostgreSQL work per request (pg_stat_database / pg_stat_user_tables deltas "
                "over each scenario, approximate):")
            for scenario, result in self.report["scenarios"].items():
                d = result["db_per_request"]["database"]
                scans = ", ".join(f"{name} {t['seq_scan']:.2f}"
                                  for name, t in result["db_per_request"]["tables"].items()
                                  if t["seq_scan"] >= 0.01)
                say(f"  {scenario:<7} commits {d['xact_commit']:.1f}  rollbacks "
                    f"{d['xact_rollback']:.1f}  rows returned {d['tup_returned']:.0f}  "
                    f"fetched {d['tup_fetched']:.0f}  inserted {d['tup_inserted']:.1f}  "
                    f"updated {d['tup_updated']:.1f}  seq scans: {scans or 'none'}")
        pgbench = self.report.get("pgbench")
        if pgbench:
            say()
            say(f"pgbench ({pgbench['command']}): {pgbench['tps']:.0f} tps, latency avg "
                f"{pgbench['latency_avg_ms']} ms")
            say(f"  pgbench {self._cpu(pgbench['cpu'], 'pgbench')}")
            say(f"  postgres CPU per transaction (own db): "
                f"{pgbench['cpu']['postgres_bench_pct'] * 10 / max(pgbench['tps'], 1e-9):.2f} ms")
        targets = self.report.get("targets", {})
        if "ratio" in targets:
            t = targets["ratio"]
            say(f"earn throughput / pgbench tps = {t['value']:.2f}  (target {t['target']}: "
                f"{'met' if t['met'] else 'NOT met'})")
        if "earn_p99_ms" in targets:
            t = targets["earn_p99_ms"]
            say(f"earn p99 = {t['value']:.1f} ms  (target {t['target']} ms: "
                f"{'met' if t['met'] else 'NOT met'})")
        check = self.report["ledger_check"]
        say(f"ledger check: {check['status']}"
            + (f" — {check['message']}" if check.get("message") else ""))
        if check["status"] != "unavailable" and check.get("output"):
            for line in check["output"].splitlines()[-15:]:
                say(f"  {line}")
        profile = self.report.get("profile")
        if profile and profile["samples"]:
            say()
            say(f"py-spy, {profile['scenario']} scenario, {profile['samples']} samples "
                "(top functions by own time):")
            for frame, _, pct in profile["own"][:15]:
                say(f"  {pct:5.1f}%  {frame}")
        for note in self.report["notes"]:
            say(f"note: {note}")
        say("=" * 96)


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
    p.add_argument("--reconnect-every", type=int, default=0,
                   help="open a new connection after this many requests (0: keep one "
                        "connection per client for the whole scenario)")
    p.add_argument("--earn-body", choices=("spend", "points"), default="spend",
                   help="earn by spend {amount, currency} or by points")
    p.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    p.add_argument("--max-requests", type=int, default=2_000_000,
                   help="per scenario, a bound besides the duration")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="gunicorn workers")
    p.add_argument("--worker-class", choices=("gthread", "sync"), default="gthread")
    p.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    p.add_argument("--port", type=int, default=0, help="gunicorn port (0: any free port)")
    p.add_argument("--no-reuse-port", dest="reuse_port", action="store_false",
                   help="one listening socket shared by the workers (gunicorn's default) "
                        "instead of SO_REUSEPORT sockets per worker")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def interrupted(signum: int, _frame: Any) -> None:
        STOP.set()
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    bench = None
    try:
        bench = Bench(args)
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
