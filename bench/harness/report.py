"""The machine's facts and the printed report: a line per operation as each scenario ends,
then the summary (throughput and latency table, CPU, PostgreSQL work, pgbench, targets,
ledger check, profile, notes)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

HEAD = ["scenario/op", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
        "409 short", "errors"]
WIDTHS = [12, 8, 8, 7, 7, 7, 8, 9, 6]
RULE = "=" * 96
TARGETS = (("ratio", "earn throughput / pgbench tps = {value:.2f}  (target {target}: {met})"),
           ("earn_p99_ms", "earn p99 = {value:.1f} ms  (target {target} ms: {met})"),
           ("balance_ratio",
            "balance reads / pgbench tps = {value:.2f}  (target {target}: {met})"),
           ("history_burn", "burn p50, deep history / 10 lots = {value:.2f}  "
                            "(target {target}: {met})"),
           ("history_balance", "balance p50, deep history / 10 lots = {value:.2f}  "
                               "(target {target}: {met})"),
           ("paced_p99_ms", "earn p99 paced (open loop, from the scheduled send; "
                            "rate: --paced-rate or half of pgbench) = {value:.1f} ms  "
                            "(target {target} ms: {met})"),
           *((f"cost_{name}", f"{name} CPU per call / earn's = {{value:.2f}}  (target "
                              "{target}: {met})")
             for name in ("burn", "authorise", "capture", "void", "earn_reversal",
                          "burn_reversal")),
           ("hot64_rps", "one hot member, earn+burn = {value:.0f}/s  (target {target}, "
                         "no error: {met})"),
           ("hot64_p99_ms", "one hot member, p99 = {value:.1f} ms  (target {target} ms, "
                            "no error: {met})"))


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


def cpu_line(c: dict[str, Any], client: str) -> str:
    """One window's CPU shares: the load generator (named ``client``), gunicorn and each of
    its workers, PostgreSQL (and the benchmark's own database), the rest, the machine."""
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


def row(cells: list[str], widths: list[int] = WIDTHS) -> str:
    """A table row: the first cell left-aligned, the others right-aligned."""
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                     enumerate(zip(cells, widths, strict=True)))


def scenario_lines(scenario: str, result: dict[str, Any]) -> list[str]:
    """A line per operation of a scenario that has just ended."""
    lines = []
    for op, s in result["ops"].items():
        errors = ", ".join(f"{k}: {v}" for k, v in s["errors"].items())
        lines.append(f"  {scenario}/{op}: {s['requests']} in {result['window_s']:.1f}s = "
                     f"{s['rps']:.0f} req/s; p50 {s['p50_ms']:.1f} p95 {s['p95_ms']:.1f} "
                     f"p99 {s['p99_ms']:.1f} max {s['max_ms']:.1f} ms"
                     + (f"; 409 insufficient_points {s['insufficient_points']}"
                        if s["insufficient_points"] else "")
                     + (f"; errors {errors}" if errors else ""))
    return lines


def _scenario_tables(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    lines = ["", "CPU over each measured window, % of one core (machine total = "
             f"{100 * (m['cores'] or 1)}%):"]
    for scenario, result in report["scenarios"].items():
        lines.append(f"  {scenario:<7} {cpu_line(result['cpu'], 'client')}  "
                     f"(connections opened: {result['connections']})")
    lines.append("CPU milliseconds per request (hardly moved by other load on the machine):")
    for scenario, result in report["scenarios"].items():
        c = result["cpu"]
        if "server_ms_per_request" in c:
            lines.append(f"  {scenario:<7} gunicorn {c['server_ms_per_request']:.2f} ms  "
                         f"postgres (own db) {c['postgres_bench_ms_per_request']:.2f} ms  "
                         f"client {c['client_ms_per_request']:.2f} ms")
    lines += ["", "PostgreSQL work per request (pg_stat_database / pg_stat_user_tables deltas "
              "over each scenario, approximate):"]
    for scenario, result in report["scenarios"].items():
        d = result["db_per_request"]["database"]
        scans = ", ".join(f"{name} {t['seq_scan']:.2f}"
                          for name, t in result["db_per_request"]["tables"].items()
                          if t["seq_scan"] >= 0.01)
        lines.append(f"  {scenario:<7} commits {d['xact_commit']:.1f}  rollbacks "
                     f"{d['xact_rollback']:.1f}  rows returned {d['tup_returned']:.0f}  "
                     f"fetched {d['tup_fetched']:.0f}  inserted {d['tup_inserted']:.1f}  "
                     f"updated {d['tup_updated']:.1f}  seq scans: {scans or 'none'}")
    return lines


def _pgbench_lines(pgbench: dict[str, Any]) -> list[str]:
    return ["",
            f"pgbench ({pgbench['command']}): {pgbench['tps']:.0f} tps, latency avg "
            f"{pgbench['latency_avg_ms']} ms",
            f"  pgbench {cpu_line(pgbench['cpu'], 'pgbench')}",
            f"  postgres CPU per transaction (own db): "
            f"{pgbench['cpu']['postgres_bench_pct'] * 10 / max(pgbench['tps'], 1e-9):.2f} ms"]


FLOOR_NAMES = {"floor_json": "Flask answering a constant body",
               "floor_read": "Flask and one prepared read"}


def _floor_lines(report: dict[str, Any]) -> list[str]:
    """The floors against pgbench: what the earn's ratio could reach at best."""
    lines = []
    tps = (report.get("pgbench") or {}).get("tps")
    for scenario, name in FLOOR_NAMES.items():
        result = report["scenarios"].get(scenario)
        if not result or not tps:
            continue
        cpu = result.get("cpu", {})
        lines.append(f"floor: {name} / pgbench tps = {result['rps'] / tps:.2f}"
                     + (f"; CPU per request: gunicorn {cpu['server_ms_per_request']:.2f} ms, "
                        f"postgres {cpu['postgres_bench_ms_per_request']:.2f} ms"
                        if "server_ms_per_request" in cpu else ""))
    return lines


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The summary printed at the end of a run."""
    m, run = report["machine"], report["run"]
    lines = ["", RULE,
             f"Coalition ledger benchmark — {m['cores']} cores ({m['cpu']}), "
             f"PostgreSQL {report['postgres']['version']}",
             f"server: {report.get('gunicorn', '-')}",
             f"load: {run['concurrency']} keep-alive clients in "
             f"{run['client_processes']} process(es), "
             f"{run['warmup_s']:g}s warm-up + {run['duration_s']:g}s per scenario, "
             f"earn body: {run['earn_body']}",
             "", row(HEAD)]
    for scenario, result in report["scenarios"].items():
        for op, s in result["ops"].items():
            lines.append(row([f"{scenario}/{op}", str(s["requests"]), f"{s['rps']:.0f}",
                              f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}", f"{s['p99_ms']:.1f}",
                              f"{s['max_ms']:.1f}", str(s["insufficient_points"]),
                              str(sum(s["errors"].values()))]))
    if report["scenarios"]:
        lines += _scenario_tables(report)
    if report.get("pgbench"):
        lines += _pgbench_lines(report["pgbench"])
    lines += _floor_lines(report)
    targets = report.get("targets", {})
    for key, text in TARGETS:
        if key in targets:
            t = targets[key]
            lines.append(text.format(value=t["value"], target=t["target"],
                                     met="met" if t["met"] else "NOT met")
                         + (f"; earn/s / its calls/s = {t['throughput_ratio']:.2f}"
                            if "throughput_ratio" in t else "")
                         + (f"; CPU per request: gunicorn {t['cpu_ms']['gunicorn']:.2f} ms, "
                            f"postgres {t['cpu_ms']['postgres']:.2f} ms"
                            if "cpu_ms" in t else ""))
    jobs = report.get("jobs")
    for name in ("expire", "daily"):
        if jobs and name in jobs:
            figure = jobs[name]["run"]
            per_s = figure["members_per_s"]
            lines.append(f"coalition {name}: {per_s:,.0f} members/s over {jobs['members']:,} "
                         f"members (goal >= 2000/s: {'met' if per_s >= 2000 else 'NOT met'}); "
                         f"CPU per member: job {figure['job_cpu_ms_per_member']:.3f} ms, "
                         f"postgres {figure['postgres_cpu_ms_per_member']:.3f} ms")
        elif run.get("goals"):
            lines.append(f"not measured by this run: coalition {name}, members a second")
    check = report["ledger_check"]
    lines.append(f"ledger check: {check['status']}"
                 + (f" — {check['message']}" if check.get("message") else ""))
    if check["status"] != "unavailable" and check.get("output"):
        lines += [f"  {line}" for line in check["output"].splitlines()[-15:]]
    profile = report.get("profile")
    if profile and profile["samples"]:
        lines += ["", f"py-spy, {profile['scenario']} scenario, {profile['samples']} samples "
                  "(top functions by own time):"]
        lines += [f"  {pct:5.1f}%  {frame}" for frame, _, pct in profile["own"][:15]]
    lines += [f"note: {note}" for note in report["notes"]]
    lines.append(RULE)
    return lines
