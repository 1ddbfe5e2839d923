"""What the synchronous standby costs a commit (docs/scaling.md).

Starts a Patroni cluster of its own on 127.0.0.1 (etcd, a primary and its synchronous
standby, fsync on; ports 18140-18161, the project's range), initialises pgbench's TPC-B
tables on the primary, then runs pgbench's TPC-B-like load in rounds that alternate between

* ``sync``: ``synchronous_commit=on`` — each COMMIT waits for the standby (production);
* ``local``: ``synchronous_commit=local`` — the same server, the same data, the commit
  waits for the primary's own disk only: the baseline, measured in the same run;

and prints throughput, latency percentiles (from pgbench's per-transaction log) and the
CPU per transaction of the primary's backends in each round, and the ratio sync ÷ local.
Everything it starts is killed at the end; every wait is bounded.

    .venv/bin/python bench/replication.py [--rounds 2] [--duration 15] [--clients 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.cpu import CpuMeter, ms_per_request  # noqa: E402
from bench.harness.pgbench import parse_output  # noqa: E402
from tests.coalition.pg_cluster import patroni_cluster, pg_bin, workdir  # noqa: E402

PORTS = {"etcd": 18140, "peer": 18141, "pg": (18150, 18151), "rest": (18160, 18161)}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


DATABASE = "coalition_replication_bench"


def run_round(port: int, mode: str, clients: int, duration: int,
              root: Path) -> dict[str, float]:
    logs = root / f"log-{mode}-{time.monotonic_ns()}"
    logs.mkdir()
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres",
           "PGDATABASE": DATABASE, "PGOPTIONS": f"-c synchronous_commit={mode}"}
    meter = CpuMeter(None, (DATABASE,)).start()
    result = subprocess.run(
        [str(pg_bin() / "pgbench"), "-b", "tpcb-like", "-c", str(clients), "-j", "2",
         "-T", str(duration), "-l", "--log-prefix", str(logs / "tx")],
        env=env, capture_output=True, text=True, timeout=duration + 120,
        stdin=subprocess.DEVNULL)
    share = meter.stop()
    if result.returncode != 0:
        raise SystemExit(f"pgbench failed:\n{result.stdout}{result.stderr}")
    tps, _ = parse_output(result.stdout)
    latencies = [int(line.split()[2]) / 1000 for path in logs.iterdir()
                 for line in path.read_text().splitlines() if line.strip()]
    return {"tps": tps, "transactions": len(latencies),
            "p50": _percentile(latencies, 0.50), "p95": _percentile(latencies, 0.95),
            "p99": _percentile(latencies, 0.99),
            # the primary's backends serving the load (not the WAL sender, not the standby)
            "cpu_ms_per_tx": ms_per_request(float(share["postgres_bench_pct"]),  # type: ignore[arg-type]
                                            duration, len(latencies))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()

    with ExitStack() as stack:
        root = stack.enter_context(workdir())
        print("starting etcd and two Patroni nodes (fsync on) ...", flush=True)
        cluster = patroni_cluster(stack, root, PORTS["etcd"], PORTS["peer"], PORTS["pg"],
                                  PORTS["rest"], durable=True)
        primary = cluster.primary()
        assert primary is not None
        psql = [str(pg_bin() / "psql"), "-h", "127.0.0.1", "-p", str(primary.pg_port),
                "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
        subprocess.run([*psql, "-c", f"CREATE DATABASE {DATABASE}"], check=True, timeout=60)
        subprocess.run([str(pg_bin() / "pgbench"), "-i", "-q", "-s", str(args.scale), "-h",
                        "127.0.0.1", "-p", str(primary.pg_port), "-U", "postgres", DATABASE],
                       check=True, timeout=600, capture_output=True)
        standby = subprocess.run(
            [*psql, "-At", "-c", "SELECT application_name || ' ' || sync_state "
             "FROM pg_stat_replication"], check=True, timeout=60, capture_output=True,
            text=True).stdout.strip()
        print(f"primary {primary.name} on {primary.pg_port}; standby: {standby}", flush=True)

        results: dict[str, list[dict[str, float]]] = {"on": [], "local": []}
        for round_ in range(args.rounds):
            for mode in ("on", "local") if round_ % 2 == 0 else ("local", "on"):
                figures = run_round(primary.pg_port, mode, args.clients, args.duration, root)
                results[mode].append(figures)
                print(f"round {round_ + 1} synchronous_commit={mode:5}: "
                      f"{figures['tps']:8.0f} tps  p50 {figures['p50']:6.2f} ms  "
                      f"p95 {figures['p95']:6.2f} ms  p99 {figures['p99']:6.2f} ms  "
                      f"PostgreSQL CPU {figures['cpu_ms_per_tx']:.2f} ms/tx", flush=True)

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print(f"\npgbench -b tpcb-like -c {args.clients} -j 2 -T {args.duration}, scale "
          f"{args.scale}, {args.rounds} round(s) each, medians:")
    print("| commit waits for | tps | p50 ms | p95 ms | p99 ms | PostgreSQL CPU ms/tx |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, label in (("local", "the primary's disk (`local`)"),
                        ("on", "the synchronous standby (`on`)")):
        print(f"| {label} | {median(mode, 'tps'):.0f} | {median(mode, 'p50'):.2f} | "
              f"{median(mode, 'p95'):.2f} | {median(mode, 'p99'):.2f} | "
              f"{median(mode, 'cpu_ms_per_tx'):.2f} |")
    print(f"sync ÷ local throughput: {median('on', 'tps') / median('local', 'tps'):.2f}")


if __name__ == "__main__":
    main()
