"""The jobs scenario: ``coalition expire`` and ``coalition daily`` over N members, timed
next to a bare ``GROUP BY`` over the same rows in the same run.

A database of its own is filled with set-based SQL in the shapes the services write, as of
``AS_OF`` (2025-06-01) under fixed expiry after 12 months, 7 pending days and a birthday
bonus of 25, for every member ``i`` of ``1..N``:

* lot A: 100 points earned 2024-01-10 (due: it expired 2025-01-10);
* lot B: 50 points earned 2024-12-01 (not due);
* every tenth member (``i % 10 = 0``) a pending lot of 20 points whose pending days ended
  2025-05-27 (to release);
* every tenth member (``i % 10 = 5``) an open hold of 30 points taken from lot A, which
  expired 2025-05-26 (to void: the points go back to lot A, which then expires whole);
* every member born on 1 June (a birthday bonus is due) and in tier ``gold`` (threshold
  1000) with 50 or 70 qualifying points (a downgrade is due).

Then, in this order: the bare ``GROUP BY`` baselines (the least each job must read: the due
lots' points per member; the qualifying points per member), ``coalition expire`` and
``coalition daily`` as an operator runs them (the console script, a process of its own,
wall clock including its start), each run again to show that a rerun books nothing, and
``coalition ledger check``. Members per second, the job's own CPU and PostgreSQL's CPU per
member are reported for each.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

from coalition.program.schemas import ProgramRulesSchema

from .cpu import CpuMeter
from .postgres import connect, database_url, recreate_database
from .processes import BIN, REPO, BenchError, clean_env, say

AS_OF = "2025-06-01"
TARGET_MEMBERS_PER_S = 2000.0
JOB_TIMEOUT = 3600.0

_RULES = {
    "pending_days": 7, "expiry": {"policy": "fixed", "months": 12},
    "bonuses": {"welcome": 0, "birthday": 25},
    "tiers": [{"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
              {"code": "gold", "name": "Gold", "threshold": 1000, "multiplier": "1"}],
}

_FILL = [
    """INSERT INTO partner (id, code, name, kind, currency, status, created_at)
       VALUES (1, 'bench', 'Benchmark Stores', 'merchant', 'GBP', 'active',
               timestamptz '2020-01-01Z')""",
    """INSERT INTO rate_card (partner_id, valid_from, earn_rate, issue_price, redeem_rate,
                              created_at)
       VALUES (1, timestamptz '2020-01-01Z', 1, 0.01, 0.008, timestamptz '2020-01-01Z')""",
    """INSERT INTO member (id, member_number, status, tier, failed_sign_ins, created_at,
                           birth_date)
       SELECT i, lpad(i::text, 16, '0'), 'active', 'gold', 0, timestamptz '2023-01-01Z',
              '1990-06-01'
       FROM generate_series(1, %(n)s) i""",
    # earns: A (id i), B (id n + i), C pending (id 2n + i, every tenth member)
    """INSERT INTO entry (id, kind, booked_at, occurred_at, partner_id, member_id,
                          partner_txn_id, points)
       SELECT i, 'earn', timestamptz '2024-01-10Z',
              timestamptz '2024-01-10Z', 1, i, 'a' || i, 100
       FROM generate_series(1, %(n)s) i
       UNION ALL
       SELECT %(n)s + i, 'earn', timestamptz '2024-12-01Z',
              timestamptz '2024-12-01Z', 1, i, 'b' || i, 50
       FROM generate_series(1, %(n)s) i
       UNION ALL
       SELECT 2 * %(n)s + i, 'earn', timestamptz '2025-05-20Z',
              timestamptz '2025-05-20Z', 1, i, 'c' || i, 20
       FROM generate_series(10, %(n)s, 10) i""",
    # holds (id 3n + i, every tenth member from the fifth)
    """INSERT INTO entry (id, kind, booked_at, occurred_at, partner_id, member_id,
                          partner_txn_id, points)
       SELECT 3 * %(n)s + i, 'hold', timestamptz '2025-05-25Z',
              timestamptz '2025-05-25Z', 1, i, 'h' || i, 30
       FROM generate_series(5, %(n)s, 10) i""",
    """INSERT INTO posting (entry_id, account, partner_id, member_id, points)
       SELECT id, 'partner:issued', 1, NULL, -points FROM entry WHERE kind = 'earn'
       UNION ALL
       SELECT id, CASE WHEN id > 2 * %(n)s THEN 'member:pending' ELSE 'member:available' END,
              NULL, member_id, points FROM entry WHERE kind = 'earn'
       UNION ALL
       SELECT id, 'member:available', NULL, member_id, -points FROM entry WHERE kind = 'hold'
       UNION ALL
       SELECT id, 'member:held', NULL, member_id, points FROM entry WHERE kind = 'hold'""",
    """INSERT INTO lot (id, member_id, origin_partner_id, source, entry_id, points, remaining,
                        state, earned_at, expires_at, pending_until)
       SELECT id, member_id, 1, 'earn', id, points,
              points - CASE WHEN id <= %(n)s AND id %% 10 = 5 THEN 30 ELSE 0 END,
              CASE WHEN id > 2 * %(n)s THEN 'pending' ELSE 'live' END,
              booked_at, booked_at + interval '12 months',
              CASE WHEN id > 2 * %(n)s THEN booked_at + interval '7 days' END
       FROM entry WHERE kind = 'earn'""",
    """INSERT INTO lot_movement (lot_id, entry_id, points, origin_partner_id, entry_kind,
                                 entry_partner_id, entry_booked_at)
       SELECT member_id, id, -30, 1, 'hold', 1, booked_at FROM entry WHERE kind = 'hold'""",
    """INSERT INTO hold (entry_id, member_id, partner_id, points, captured, status, expires_at)
       SELECT id, member_id, 1, 30, 0, 'open', timestamptz '2025-05-26Z'
       FROM entry WHERE kind = 'hold'""",
    """INSERT INTO wallet (member_id, available, pending, held, version, last_activity_at)
       SELECT i, 150 - CASE WHEN i %% 10 = 5 THEN 30 ELSE 0 END,
              CASE WHEN i %% 10 = 0 THEN 20 ELSE 0 END,
              CASE WHEN i %% 10 = 5 THEN 30 ELSE 0 END, 0, timestamptz '2025-05-25Z'
       FROM generate_series(1, %(n)s) i""",
]

#: the least each job reads: the due points per member; the qualifying points per member
BARE = {
    "expire": """SELECT member_id, sum(remaining) FROM lot
                 WHERE state = 'live' AND remaining > 0 AND expires_at <= %(as_of)s
                 GROUP BY member_id""",
    "daily": """SELECT member_id, sum(points) FROM entry
                WHERE kind IN ('earn', 'earn_reversal') AND booked_at > %(since)s
                GROUP BY member_id""",
}


def _stored_rules() -> dict[str, Any]:
    """The rules as the program service stores them (validated, then dumped)."""
    schema = ProgramRulesSchema()
    stored: dict[str, Any] = schema.dump(schema.load(_RULES))
    return stored


def fill(server: dict[str, Any], database: str, members: int, env: dict[str, str]) -> float:
    """Drop, create, migrate and fill ``database``; returns the seconds it took."""
    began = time.perf_counter()
    recreate_database(server, database)
    _coalition(env, "db", "upgrade")
    with connect(server, database) as conn:
        conn.execute("SET synchronous_commit = off")
        with conn.transaction():
            for statement in _FILL:
                conn.execute(statement, {"n": members})
            for table in ("entry", "posting", "lot", "lot_movement", "member", "partner",
                          "hold", "rate_card"):
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                             f"(SELECT coalesce(max(id), 1) FROM {table}))")
            conn.execute(
                "INSERT INTO program_rules (version, rules, published_at, published_by) "
                "VALUES (1, %s, now(), 'bench')", (json.dumps(_stored_rules()),))
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - began


def _coalition(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "coalition"), *argv]
    try:
        result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=JOB_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(command)} did not finish in {JOB_TIMEOUT:.0f}s") from exc
    if result.returncode != 0 and argv[:2] != ("ledger", "check"):
        raise BenchError(f"{' '.join(command)} failed ({result.returncode}):\n"
                         f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def bare(server: dict[str, Any], database: str, name: str, repeat: int = 3) -> dict[str, Any]:
    params = {"as_of": datetime(2025, 6, 1, tzinfo=UTC), "since": datetime(2024, 6, 1, tzinfo=UTC)}
    runs = []
    with connect(server, database) as conn:
        conn.execute(BARE[name], params).fetchall()  # warm the cache, as the job's own reads
        for _ in range(repeat):
            began = time.perf_counter()
            rows = conn.execute(BARE[name], params).fetchall()
            runs.append(time.perf_counter() - began)
    seconds = statistics.median(runs)
    return {"seconds": seconds, "runs": runs, "rows": len(rows),
            "members_per_s": len(rows) / seconds if seconds else float("nan")}


def timed_job(env: dict[str, str], database: str, argv: list[str]) -> dict[str, Any]:
    """Run one job command; its wall clock, its own CPU and PostgreSQL's for its database."""
    meter = CpuMeter(None, (database,)).start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    result = _coalition(env, *argv, "--json")
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = meter.stop()
    job_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    pg_cpu = float(cpu.get("postgres_bench_pct", 0.0)) / 100 * wall  # type: ignore[arg-type]
    return {"command": " ".join(["coalition", *argv]), "wall_s": wall,
            "job_cpu_s": job_cpu, "postgres_cpu_s": pg_cpu,
            "summary": json.loads(result.stdout)}


def run_jobs(server: dict[str, Any], database: str, members: int, batch: int,
             code: str | None = None) -> dict[str, Any]:
    """Fill, baselines, both jobs and their reruns, and the ledger check (module doc).
    ``code``: run the jobs from another checkout of Coalition (before/after figures)."""
    env = clean_env(COALITION_ENV="production", COALITION_DATABASE_URL=database_url(
        server, database), COALITION_SECRET_KEY="bench-secret-key-0123456789abcdef",
        COALITION_LOG_LEVEL="warning", COALITION_INSTANCE_PATH=f"/tmp/coalition-jobs-{os.getpid()}")
    say(f"jobs: fill {members:,} members into {database}")
    report: dict[str, Any] = {"members": members, "batch": batch, "as_of": AS_OF,
                              "fill_s": fill(server, database, members, env)}
    say(f"  filled in {report['fill_s']:.1f}s")
    if code:
        env["PYTHONPATH"] = code
        report["code"] = code
    batch_args = ["--batch", str(batch)] if batch else []
    for name, argv in (("expire", ["expire", "--as-of", f"{AS_OF}T00:00:00Z"]),
                       ("daily", ["daily", "--as-of", AS_OF])):
        figures = {"bare": bare(server, database, name)}
        say(f"  bare GROUP BY ({name}): {figures['bare']['seconds'] * 1000:.0f} ms for "
            f"{figures['bare']['rows']:,} members")
        figures["run"] = timed_job(env, database, argv + batch_args)
        figures["rerun"] = timed_job(env, database, argv + batch_args)
        run = figures["run"]
        run["members_per_s"] = members / run["wall_s"]
        run["job_cpu_ms_per_member"] = 1000 * run["job_cpu_s"] / members
        run["postgres_cpu_ms_per_member"] = 1000 * run["postgres_cpu_s"] / members
        # the rerun finds nothing to do: the command's start, the rules and the candidate
        # queries; what the run took beyond it is the members' own cost
        work = run["wall_s"] - figures["rerun"]["wall_s"]
        run["members_per_s_beyond_rerun"] = members / work if work > 0 else float("nan")
        run["job_cpu_ms_per_member_beyond_rerun"] = (
            1000 * (run["job_cpu_s"] - figures["rerun"]["job_cpu_s"]) / members)
        figures["ratio_to_bare"] = run["wall_s"] / figures["bare"]["seconds"]
        report[name] = figures
        for line in job_lines(name, figures):
            say(line)
    env.pop("PYTHONPATH", None)
    check = _coalition(env, "ledger", "check")
    report["ledger_check"] = {"status": "ok" if check.returncode == 0 else "failed",
                              "output": (check.stdout + check.stderr)[-4000:]}
    say(f"  ledger check: {report['ledger_check']['status']}")
    return report


def job_lines(name: str, figures: dict[str, Any]) -> list[str]:
    run, rerun = figures["run"], figures["rerun"]
    met = "met" if run["members_per_s"] >= TARGET_MEMBERS_PER_S else "NOT met"
    summary = {k: v for k, v in run["summary"].items()
               if isinstance(v, int) and v and k != "members"}
    return [
        f"  coalition {name}: {run['wall_s']:.1f}s, {run['members_per_s']:,.0f} members/s "
        f"(target >= {TARGET_MEMBERS_PER_S:,.0f}: {met}); CPU per member: job "
        f"{run['job_cpu_ms_per_member']:.3f} ms, PostgreSQL "
        f"{run['postgres_cpu_ms_per_member']:.3f} ms; {figures['ratio_to_bare']:.0f}x the "
        f"bare GROUP BY",
        f"    booked: {json.dumps(summary)}; failures: {len(run['summary']['failures'])}",
        f"    rerun: {rerun['wall_s']:.1f}s, booked "
        f"{json.dumps({k: v for k, v in rerun['summary'].items() if isinstance(v, int) and v})}"
        f"; beyond the rerun: {run['members_per_s_beyond_rerun']:,.0f} members/s, job CPU "
        f"{run['job_cpu_ms_per_member_beyond_rerun']:.3f} ms per member",
    ]


