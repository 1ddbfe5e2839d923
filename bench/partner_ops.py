#!/usr/bin/env python3
"""Partner operations benchmark: a batch file against the earn API, and a prepaid
partner's earns against a post-paid one's, in one run.

    .venv/bin/python bench/partner_ops.py --duration 20 --concurrency 16 --rows 100000 \
        [--members 1000] [--workers 2] [--json PATH]

One run, on this machine only (every connection goes to 127.0.0.1), with the ledger
benchmark's harness (``bench/ledger.py``: a fresh ``coalition_bench`` database, gunicorn
``-k gthread``, closed-loop keep-alive clients, CPU from ``/proc``):

1. set-up over the API: the post-paid partner ``bench``, a prepaid partner ``prepaid`` with
   a block of points no run exhausts (``POST /v1/admin/partners/prepaid/funding``), members;
2. ``earn`` on the post-paid partner, the prepaid one, the prepaid one again and the
   post-paid one again (A B B A, so that a drift over the run weighs on both alike), each
   for ``--duration`` seconds: throughput, latency percentiles, CPU per request;
3. a file of ``--rows`` earn rows (``points``, random members of the pool) uploaded with
   ``POST /v1/batches`` to the same server, then booked by ``coalition worker --until-idle``
   (a process of its own, as in production): wall time, rows per second, CPU per row of the
   worker and of PostgreSQL; every row is checked booked;
4. ``pgbench`` (TPC-B-like, same concurrency and duration) as the yardstick, then
   ``coalition ledger check`` (the funding check included).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from harness.client import Client, fetch_token
from harness.cpu import CpuMeter, ms_per_request
from harness.postgres import analyze_database
from harness.processes import BIN, STOP, BenchError, say
from ledger import PARTNER_SCOPES, Bench
from ledger import main as ledger_main
from ledger import parse_args as ledger_args

BATCH_HEADER = ("partner_txn_id,type,member_number,partner_member_ref,points,spend_amount,"
                "spend_currency,occurred_at\n")


class PartnerOpsBench(Bench):
    def setup_prepaid(self, operator: dict[str, str]) -> str:
        token = fetch_token(self.port, operator["client_id"], operator["client_secret"])
        admin = Client(self.port, token)
        try:
            admin.json("POST", "/v1/admin/partners", {
                "code": "prepaid", "name": "Prepaid Stores", "kind": "merchant",
                "currency": "GBP", "earn_rate": "1", "issue_price": "0.01",
                "redeem_rate": "0.008"}, expect=(201,))
            admin.json("POST", "/v1/admin/partners/prepaid/funding", {
                "points": 10**15, "price": "1000000.00", "currency": "GBP"}, expect=(201,))
            issued = admin.json("POST", "/v1/admin/partners/prepaid/clients",
                                {"scopes": PARTNER_SCOPES, "name": "prepaid till"},
                                expect=(201,))
        finally:
            admin.close()
        return fetch_token(self.port, issued["client_id"], issued["client_secret"],
                           " ".join(PARTNER_SCOPES))

    def earn_run(self, label: str, token: str, pools: dict[str, list[str]]) -> dict[str, Any]:
        result = self.run_scenario("earn", token, pools)
        self.print_scenario(f"earn ({label})", result)
        return result

    def batch_run(self, token: str, members: list[str]) -> dict[str, Any]:
        a = self.args
        rng = random.Random(7)
        rows = "".join(f"{self.tag}-f-{i},earn,{rng.choice(members)},,{rng.randint(1, 200)},,,\n"
                       for i in range(a.rows))
        body = (BATCH_HEADER + rows).encode()
        say(f"batch: {a.rows} rows, {len(body) / 1e6:.1f} MB, POST /v1/batches")
        client = Client(self.port, token, timeout=600)
        try:
            began = time.monotonic()
            status, data = client.call("POST", "/v1/batches", body,
                                       headers={**client.headers, "Content-Type": "text/csv",
                                                "Coalition-Batch-Rows": str(a.rows)})
            upload_s = time.monotonic() - began
            if status != 202:
                raise BenchError(f"POST /v1/batches answered {status}: {data[:300]!r}")
            batch = json.loads(data)
        finally:
            client.close()
        say(f"  uploaded and checked in {upload_s:.1f}s; booking with coalition worker")
        log = self.workdir / "worker.log"
        process = self.procs.start([str(BIN / "coalition"), "worker", "--until-idle"],
                                   env=self.env, log=log)
        meter = CpuMeter(process.pid, (a.database,)).start()
        began = time.monotonic()
        while process.poll() is None:
            if STOP.wait(0.2):
                raise KeyboardInterrupt
            if time.monotonic() - began > a.batch_timeout:
                raise BenchError(f"the batch was not booked within {a.batch_timeout}s")
        booking_s = time.monotonic() - began
        cpu = meter.stop()
        if process.returncode != 0:
            raise BenchError(f"coalition worker exited {process.returncode}; log: {log}")
        client = Client(self.port, token)
        try:
            done = client.json("GET", f"/v1/batches/{batch['id']}", None, expect=(200,))
        finally:
            client.close()
        if (done["status"], done["booked"]) != ("done", a.rows):
            self.note(f"batch: {done}")
        result = {
            "rows": a.rows, "bytes": len(body), "upload_s": upload_s, "booking_s": booking_s,
            "rows_per_s": a.rows / booking_s, "counts": done, "cpu": cpu,
            "worker_ms_per_row": ms_per_request(float(cpu["server_pct"]), booking_s, a.rows),
            "postgres_ms_per_row": ms_per_request(float(cpu["postgres_bench_pct"]), booking_s,
                                                  a.rows),
        }
        say(f"  booked {done['booked']} rows in {booking_s:.1f}s: "
            f"{result['rows_per_s']:.0f} rows/s; CPU per row: worker "
            f"{result['worker_ms_per_row']:.2f} ms, postgres "
            f"{result['postgres_ms_per_row']:.2f} ms")
        return result

    def run(self) -> int:
        a = self.args
        self.report["run"] = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "duration_s": a.duration, "concurrency": a.concurrency,
                              "rows": a.rows, "members": a.members, "workers": a.workers,
                              "threads": a.threads,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.report["background"] = self.background_load()
        operator = self.prepare_database()
        self.start_gunicorn()
        postpaid = self.setup_partner(operator)
        prepaid = self.setup_prepaid(operator)
        pools = self.enrol(postpaid, {"earn": a.members})
        analyze_database(self.server, a.database)
        runs = self.report["scenarios"]
        # A B B A: a drift over the run (the machine's other load, the tables growing)
        # weighs on both models alike
        runs["earn postpaid"] = self.earn_run("post-paid", postpaid, pools)
        runs["earn prepaid"] = self.earn_run("prepaid", prepaid, pools)
        runs["earn prepaid again"] = self.earn_run("prepaid again", prepaid, pools)
        runs["earn postpaid again"] = self.earn_run("post-paid again", postpaid, pools)
        if a.rows:
            self.report["batch"] = self.batch_run(postpaid, pools["earn"])
        self.stop_gunicorn()
        if not a.skip_pgbench:
            self.report["pgbench"] = self.run_pgbench()
        self.report["ledger_check"] = self.ledger_check()
        self.summary()
        if a.json:
            Path(a.json).write_text(json.dumps(self.report, indent=2, default=str) + "\n")
            say(f"figures written to {a.json}")
        failed = (any(s["errors"] for s in runs.values())
                  or self.report["ledger_check"]["status"] == "failed")
        return 1 if failed else 0

    def summary(self) -> None:
        runs = self.report["scenarios"]
        rps = {name: run["ops"]["earn"]["ok_rps"] for name, run in runs.items()}
        post = (rps["earn postpaid"] + rps["earn postpaid again"]) / 2
        ratio = post / ((rps["earn prepaid"] + rps["earn prepaid again"]) / 2)
        self.report["prepaid_ratio"] = ratio
        batch = self.report.get("batch")
        api_cpu = {name: run["cpu"].get("server_ms_per_request", float("nan"))
                   + run["cpu"].get("postgres_bench_ms_per_request", float("nan"))
                   for name, run in runs.items()}
        if batch:
            self.report["batch_vs_api"] = {
                "api_rows_per_s": post, "batch_rows_per_s": batch["rows_per_s"],
                "api_cpu_ms_per_row": api_cpu["earn postpaid"],
                "batch_cpu_ms_per_row": batch["worker_ms_per_row"]
                + batch["postgres_ms_per_row"]}
        pgbench = self.report.get("pgbench") or {}
        say("")
        say("summary")
        for name, run in runs.items():
            earn = run["ops"]["earn"]
            say(f"  {name:<22} {earn['ok_rps']:8.0f} req/s  p50 {earn['p50_ms']:6.1f} ms  "
                f"p99 {earn['p99_ms']:6.1f} ms  CPU/req {api_cpu[name]:.2f} ms "
                f"(server+postgres)")
        say(f"  post-paid / prepaid earn throughput: {ratio:.2f} (target <= 1.2)")
        if batch:
            say(f"  batch: {batch['rows_per_s']:.0f} rows/s vs earn API {post:.0f} req/s; CPU "
                f"per row {self.report['batch_vs_api']['batch_cpu_ms_per_row']:.2f} ms vs "
                f"{api_cpu['earn postpaid']:.2f} ms per API earn")
        if pgbench:
            say(f"  pgbench TPC-B: {pgbench['tps']:.0f} tps")
        say(f"  ledger check: {self.report['ledger_check']['status']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--rows", type=int, default=100_000,
                   help="rows in the batch file (0: no batch, the earn runs only)")
    p.add_argument("--batch-timeout", type=float, default=3600.0)
    ours, rest = p.parse_known_args(argv)
    args = ledger_args(rest)
    args.rows, args.batch_timeout = ours.rows, ours.batch_timeout
    return args


def main(argv: list[str] | None = None) -> int:
    return ledger_main(argv, PartnerOpsBench, parse_args)


if __name__ == "__main__":
    sys.exit(main())
