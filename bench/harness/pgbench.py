"""pgbench, TPC-B-like, as the yardstick of what this machine's PostgreSQL does with short
write transactions."""

from __future__ import annotations

import contextlib
import re
import resource
import time
from pathlib import Path
from typing import Any

from .cpu import CpuMeter, other_pct
from .postgres import drop_database, pg_env, recreate_database
from .processes import STOP, BenchError, Processes, run_command, say


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_output(output: str) -> tuple[float, float | None]:
    """(tps, average latency in ms or None) from pgbench's report."""
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    latency = re.search(r"latency average = ([\d.]+) ms", output)
    if not tps:
        raise BenchError(f"no tps in pgbench's output:\n{output[-2000:]}")
    return float(tps.group(1)), float(latency.group(1)) if latency else None


def run_pgbench(procs: Processes, pgbench: str, server: dict[str, Any], *, database: str,
                scale: int, concurrency: int, duration: float, log: Path) -> dict[str, Any]:
    """Drop and create ``database``, initialise it at ``scale``, run ``concurrency`` clients
    for ``duration`` seconds under a CPU meter, drop it again."""
    say(f"pgbench: drop and create {database}, pgbench -i -s {scale}")
    recreate_database(server, database)
    env = pg_env(server, database)
    run_command([pgbench, "-i", "-q", "-s", str(scale)], env, timeout=600)
    command = [pgbench, "-b", "tpcb-like", "-c", str(concurrency), "-j", "2",
               "-T", str(max(1, round(duration)))]
    say(f"pgbench: {' '.join(command[1:])}")
    children_before = children_cpu_seconds()
    meter = CpuMeter(None, (database,)).start()
    process = procs.start(command, env=env, log=log)
    try:
        deadline = time.monotonic() + duration + 120
        while process.poll() is None:
            if STOP.is_set():
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise BenchError("pgbench did not finish in time")
            time.sleep(0.2)
    finally:
        procs.stop(process)
    share = meter.stop()
    children_after = children_cpu_seconds()
    output = log.read_text(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"pgbench failed ({process.returncode}):\n{output[-2000:]}")
    tps, latency = parse_output(output)
    client_pct = 100 * (children_after - children_before) / duration
    with contextlib.suppress(Exception):
        drop_database(server, database)
    return {"command": f"pgbench -i -s {scale}; {' '.join(command[1:])}",
            "tps": tps, "latency_avg_ms": latency,
            "cpu": {"client_pct": client_pct, **share,
                    "other_pct": other_pct(share["machine_pct"], client_pct,
                                           share["postgres_pct"])}}
