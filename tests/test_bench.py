"""The benchmark harness's pure parts: percentiles, outcomes, CPU arithmetic, the report;
and the floors' app, served from a test database.

No benchmark runs here: these are the calculations and the formatting a run relies on.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.harness.cpu import (
    ms_per_request,
    other_pct,
    parse_backend_title,
    parse_machine_stat,
    parse_stat,
    shares,
)
from bench.harness.floor import create_app as floor_app
from bench.harness.load import classify, merge, op_stats, ops_stats, percentile
from bench.harness.pgbench import parse_output
from bench.harness.postgres import db_work_per_request
from bench.harness.processes import BenchError
from bench.harness.profile import summarise_profile
from bench.harness.report import cpu_line, row, scenario_lines, summary_lines

MS = 1_000_000  # nanoseconds


# --------------------------------------------------------------------------- percentiles


def test_percentile_is_nearest_rank_in_milliseconds():
    ordered = [i * MS for i in range(1, 101)]
    assert percentile(ordered, 50) == 50.0
    assert percentile(ordered, 95) == 95.0
    assert percentile(ordered, 99) == 99.0
    assert percentile(ordered, 100) == 100.0
    assert percentile(ordered, 0) == 1.0
    assert percentile([7 * MS], 99) == 7.0
    # rank = ceil(p/100 * n): 3 values, p50 -> the 2nd, p99 -> the 3rd
    assert percentile([1 * MS, 2 * MS, 30 * MS], 50) == 2.0
    assert percentile([1 * MS, 2 * MS, 30 * MS], 99) == 30.0


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))


def test_op_stats_counts_business_answers_apart_from_errors():
    latencies = [4 * MS, 1 * MS, 3 * MS, 2 * MS]
    outcomes = Counter({"ok": 2, "insufficient_points": 1, "500": 1})
    stats = op_stats(latencies, outcomes, window=2.0)
    assert stats == {
        "requests": 4, "ok": 2, "insufficient_points": 1, "errors": {"500": 1},
        "rps": 2.0, "ok_rps": 1.0, "p50_ms": 2.0, "p95_ms": 4.0, "p99_ms": 4.0,
        "max_ms": 4.0, "mean_ms": 2.5,
    }


def test_op_stats_of_no_request():
    stats = op_stats([], Counter(), window=1.0)
    assert stats["requests"] == 0 and stats["rps"] == 0.0 and stats["errors"] == {}
    assert math.isnan(stats["max_ms"]) and math.isnan(stats["mean_ms"])


def test_ops_stats_adds_all_only_when_there_are_several_operations():
    outcomes = Counter({("earn", "ok"): 2, ("burn", "ok"): 1,
                        ("burn", "insufficient_points"): 1})
    both = ops_stats({"earn": [1 * MS, 3 * MS], "burn": [2 * MS, 4 * MS]}, outcomes, 1.0)
    assert list(both) == ["burn", "earn", "all"]
    assert both["burn"]["ok"] == 1 and both["burn"]["insufficient_points"] == 1
    assert both["earn"]["ok"] == 2 and both["earn"]["insufficient_points"] == 0
    assert both["all"]["requests"] == 4 and both["all"]["ok"] == 3
    assert both["all"]["p50_ms"] == 2.0 and both["all"]["max_ms"] == 4.0
    one = ops_stats({"earn": [1 * MS]}, Counter({("earn", "ok"): 1}), 1.0)
    assert list(one) == ["earn"]
    assert ops_stats({}, Counter(), 1.0) == {}


@pytest.mark.parametrize(("status", "data", "outcome"), [
    (201, b"{}", "ok"),
    (200, b"", "ok"),
    (0, b"", "connection_error"),
    (409, b'{"error": "insufficient_points"}', "insufficient_points"),
    (409, b'{"error": "conflict"}', "409 conflict"),
    (422, b'{"error": "validation_error", "message": "x"}', "422 validation_error"),
    (500, b"<html>Internal Server Error</html>", "500"),
    (502, b"[1, 2]", "502"),
])
def test_classify(status, data, outcome):
    assert classify(status, data) == outcome


def test_merge_adds_up_clients_and_skips_those_that_never_reported():
    first = {"latencies": {"earn": [1, 2]}, "outcomes": Counter({("earn", "ok"): 2}),
             "last_done": 10, "connects": 1, "bad_bodies": [], "sent": 2}
    second = {"latencies": {"earn": [3], "burn": [4]},
              "outcomes": Counter({("earn", "ok"): 1, ("burn", "500"): 1}),
              "last_done": 7, "connects": 2, "bad_bodies": ["{}"], "sent": 3,
              "cpu_seconds": 0.5, "stuck_threads": 1}
    merged = merge([first, {}, second], last_done=5, cpu_seconds=1.0)
    assert merged == {
        "latencies": {"earn": [1, 2, 3], "burn": [4]},
        "outcomes": Counter({("earn", "ok"): 3, ("burn", "500"): 1}),
        "last_done": 10, "connects": 3, "bad_bodies": ["{}"], "sent": 5,
        "cpu_seconds": 1.5, "stuck_threads": 1,
    }


# --------------------------------------------------------------------------- CPU accounting


def test_parse_stat_reads_comm_ppid_and_cpu_seconds():
    # comm may hold spaces and parentheses; utime and stime are fields 14 and 15
    stat = ("4242 (gunicorn: (worker) x) S 4200 4200 4200 0 -1 4194560 100 0 0 0 "
            "250 150 0 0 20 0 9 0 12345 0 0")
    assert parse_stat(stat, clock_ticks=100) == ("gunicorn: (worker) x", 4200, 4.0)


def test_parse_machine_stat_counts_idle_and_iowait_as_not_busy():
    # user nice system idle iowait irq softirq steal guest guest_nice
    assert parse_machine_stat("cpu  300 10 90 500 100 0 0 0 40 0") == (400, 1000)


@pytest.mark.parametrize(("title", "database"), [
    ("postgres: postgres coalition_bench 127.0.0.1(51234) idle ", "coalition_bench"),
    ("postgres: 15/main: postgres coalition_bench 127.0.0.1(51234) UPDATE ", "coalition_bench"),
    ("postgres: 15/main: checkpointer ", None),
    ("postgres: walwriter ", None),
    ("/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql ", None),
    ("", None),
])
def test_parse_backend_title(title, database):
    assert parse_backend_title(title) == database


def test_shares_are_percent_of_one_core_over_the_window():
    base = {"server": {10: 1.0, 11: 2.0}, "postgres": {20: 5.0, 21: 1.0},
            "postgres_bench": {20: 5.0}}
    # 12 is a worker born inside the window (counts from zero); 21 exited after a sample
    last = {"server": {10: 1.5, 11: 3.0, 12: 0.5}, "postgres": {20: 6.0, 21: 1.5, 22: 0.5},
            "postgres_bench": {20: 6.0, 22: 0.5}}
    result = shares(base, last, wall=2.0, machine_before=(100, 1000),
                    machine_after=(400, 1600), cores=2, server_pid=10)
    assert result == {
        "machine_pct": 100.0,  # 300 busy of 600 jiffies, on 2 cores
        "server_pct": 100.0,  # (0.5 + 1.0 + 0.5) s over 2 s
        "postgres_pct": 100.0,  # (1.0 + 0.5 + 0.5) s over 2 s
        "postgres_bench_pct": 75.0,  # (1.0 + 0.5) s over 2 s
        "workers_pct": [50.0, 25.0],  # the master (10) is not a worker
    }


def test_shares_of_an_empty_window_do_not_divide_by_zero():
    result = shares({}, {"server": {}}, wall=0.0, machine_before=(5, 5),
                    machine_after=(5, 5), cores=4, server_pid=None)
    assert result == {"machine_pct": 0.0, "server_pct": 0.0, "workers_pct": []}


def test_other_pct_is_what_the_measured_processes_leave_never_negative():
    assert other_pct(199.8, 4.2, 53.4, 73.3) == pytest.approx(68.9)
    assert other_pct(50.0, 40.0, 30.0) == 0.0
    assert other_pct(120.0) == 120.0


def test_ms_per_request():
    # 50% of a core for 4 s is 2 000 ms of CPU, over 500 requests
    assert ms_per_request(50.0, 4.0, 500) == 4.0
    assert ms_per_request(50.0, 4.0, 0) == 2000.0


def test_db_work_per_request_divides_counter_deltas_by_requests():
    counters = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
                "tup_updated", "tup_deleted", "blks_read", "blks_hit")
    table = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch")
    before = {"database": dict.fromkeys(counters, 10),
              "tables": {"entry": dict.fromkeys(table, 1), "member": dict.fromkeys(table, 5)}}
    after = {"database": {**dict.fromkeys(counters, 10), "xact_commit": 30, "tup_inserted": 70},
             "tables": {"entry": {**dict.fromkeys(table, 1), "idx_scan": 41},
                        "member": dict.fromkeys(table, 5),
                        "wallet": {**dict.fromkeys(table, None), "seq_scan": 4}}}
    work = db_work_per_request(before, after, 20)
    assert work["requests"] == 20
    assert work["database"]["xact_commit"] == 1.0 and work["database"]["tup_inserted"] == 3.0
    assert work["database"]["blks_hit"] == 0.0
    # tables that did nothing are left out; a table new since "before" counts from zero
    assert work["tables"] == {
        "entry": {"seq_scan": 0.0, "seq_tup_read": 0.0, "idx_scan": 2.0, "idx_tup_fetch": 0.0},
        "wallet": {"seq_scan": 0.2, "seq_tup_read": 0.0, "idx_scan": 0.0, "idx_tup_fetch": 0.0},
    }


def test_parse_pgbench_output():
    output = ("latency average = 15.248 ms\n"
              "initial connection time = 12.345 ms\n"
              "tps = 524.652237 (without initial connection time)\n")
    assert parse_output(output) == (524.652237, 15.248)
    assert parse_output("tps = 10.5 (without initial connection time)") == (10.5, None)
    with pytest.raises(BenchError, match="no tps"):
        parse_output("pgbench: error: connection refused")


def test_summarise_profile_counts_own_and_inclusive_samples(tmp_path: Path):
    raw = tmp_path / "earn-1.txt"
    raw.write_text("process 1;thread 2;main;handle;execute 6\n"
                   "main;handle;dumps 3\n"
                   "main 1\n"
                   "garbage line\n")
    summary = summarise_profile([raw, tmp_path / "missing.txt"])
    assert summary["samples"] == 10
    assert summary["own"] == [("execute", 6, 60.0), ("dumps", 3, 30.0), ("main", 1, 10.0)]
    assert dict((f, n) for f, n, _ in summary["inclusive"]) == {
        "main": 10, "handle": 9, "execute": 6, "dumps": 3}
    assert summarise_profile([]) == {"samples": 0, "own": [], "inclusive": []}


# --------------------------------------------------------------------------- the report


def test_row_aligns_the_first_cell_left_and_the_others_right():
    assert row(["earn/earn", "5", "1.0"], [10, 4, 5]) == "earn/earn      5    1.0"


def test_cpu_line_leaves_out_gunicorn_when_no_worker_was_measured():
    assert cpu_line({"client_pct": 8.1, "postgres_pct": 78.4, "postgres_bench_pct": 36.1,
                     "other_pct": 112.8, "machine_pct": 199.2, "workers_pct": []},
                    "pgbench") == ("pgbench   8.1%  postgres  78.4% (own db  36.1%)  "
                                   "other 112.8%  machine 199.2%")


REPORT: dict = {
    "machine": {"cores": 2, "cpu": "Test CPU"},
    "postgres": {"version": "15.20"},
    "gunicorn": "gunicorn --workers 2 'coalition.app:create_app()'",
    "run": {"concurrency": 8, "client_processes": 1, "warmup_s": 2.0, "duration_s": 5.0,
            "earn_body": "spend"},
    "scenarios": {
        "earn": {
            "window_s": 5.0, "connections": 8,
            "ops": {"earn": {"requests": 500, "rps": 100.0, "p50_ms": 50.0, "p95_ms": 190.25,
                             "p99_ms": 339.5, "max_ms": 460.8, "insufficient_points": 0,
                             "errors": {}}},
            "cpu": {"client_pct": 4.2, "machine_pct": 199.8, "server_pct": 53.4,
                    "postgres_pct": 73.3, "postgres_bench_pct": 26.3,
                    "workers_pct": [44.8, 8.6], "other_pct": 68.9,
                    "client_ms_per_request": 0.42, "server_ms_per_request": 5.38,
                    "postgres_bench_ms_per_request": 2.65},
            "db_per_request": {
                "database": {"xact_commit": 1.5, "xact_rollback": 0.87, "tup_returned": 31.3,
                             "tup_fetched": 21.9, "tup_inserted": 3.48, "tup_updated": 0.87},
                "tables": {"partner": {"seq_scan": 3.29}, "member": {"seq_scan": 0.0}}},
        },
        "hot": {
            "window_s": 5.0, "connections": 9,
            "ops": {"burn": {"requests": 40, "rps": 8.0, "p50_ms": 5.0, "p95_ms": 9.0,
                             "p99_ms": 9.5, "max_ms": 12.0, "insufficient_points": 3,
                             "errors": {"500": 1, "connection_error": 2}},
                    "earn": {"requests": 60, "rps": 12.0, "p50_ms": 4.0, "p95_ms": 8.0,
                             "p99_ms": 8.5, "max_ms": 10.0, "insufficient_points": 0,
                             "errors": {}},
                    "all": {"requests": 100, "rps": 20.0, "p50_ms": 4.5, "p95_ms": 8.5,
                            "p99_ms": 9.0, "max_ms": 12.0, "insufficient_points": 3,
                            "errors": {"500": 1, "connection_error": 2}}},
            "cpu": {"client_pct": 1.0},
            "db_per_request": {
                "database": {"xact_commit": 2.0, "xact_rollback": 0.0, "tup_returned": 10.0,
                             "tup_fetched": 5.0, "tup_inserted": 3.0, "tup_updated": 2.0},
                "tables": {}},
        },
    },
    "pgbench": {"command": "pgbench -i -s 10; -b tpcb-like -c 8 -j 2 -T 5", "tps": 524.65,
                "latency_avg_ms": 15.248,
                "cpu": {"client_pct": 8.1, "machine_pct": 199.2, "server_pct": 0.0,
                        "postgres_pct": 78.4, "postgres_bench_pct": 36.1, "workers_pct": [],
                        "other_pct": 112.8}},
    "targets": {"ratio": {"value": 0.19, "target": ">= 0.5", "met": False},
                "earn_p99_ms": {"value": 339.5, "target": "<= 25.0", "met": False}},
    "ledger_check": {"status": "ok", "exit_code": 0,
                     "output": "ledger check: OK\n  ok    entries_balance      entries=1"},
    "profile": {"scenario": "earn", "samples": 10,
                "own": [("execute (psycopg)", 6, 60.0), ("dumps (json)", 4, 40.0)]},
    "notes": ["the machine was busy"],
}


# printed by the benchmark for REPORT before its harness was split out of it
SCENARIO_LINES = [
    "  earn/earn: 500 in 5.0s = 100 req/s; p50 50.0 p95 190.2 p99 339.5 max 460.8 ms",
    "  hot/burn: 40 in 5.0s = 8 req/s; p50 5.0 p95 9.0 p99 9.5 max 12.0 ms; 409 "
     "insufficient_points 3; errors 500: 1, connection_error: 2",
    "  hot/earn: 60 in 5.0s = 12 req/s; p50 4.0 p95 8.0 p99 8.5 max 10.0 ms",
    "  hot/all: 100 in 5.0s = 20 req/s; p50 4.5 p95 8.5 p99 9.0 max 12.0 ms; 409 "
     "insufficient_points 3; errors 500: 1, connection_error: 2",
]
SUMMARY_LINES = [
    "",
    "=" * 96,
    "Coalition ledger benchmark — 2 cores (Test CPU), PostgreSQL 15.20",
    "server: gunicorn --workers 2 'coalition.app:create_app()'",
    "load: 8 keep-alive clients in 1 process(es), 2s warm-up + 5s per scenario, earn body: spend",
    "",
    "scenario/op   requests     req/s   p50 ms   p95 ms   p99 ms    max ms  409 short  errors",
    "earn/earn          500       100     50.0    190.2    339.5     460.8          0       0",
    "hot/burn            40         8      5.0      9.0      9.5      12.0          3       3",
    "hot/earn            60        12      4.0      8.0      8.5      10.0          0       0",
    "hot/all            100        20      4.5      8.5      9.0      12.0          3       3",
    "",
    "CPU over each measured window, % of one core (machine total = 200%):",
    "  earn    client   4.2%  gunicorn  53.4% (workers 45/9)  postgres  73.3% (own "
     "db  26.3%)  other  68.9%  machine 199.8%  (connections opened: 8)",
    "  hot     client   1.0%  postgres   nan% (own db   nan%)  other   nan%  machine "
     "  nan%  (connections opened: 9)",
    "CPU milliseconds per request (hardly moved by other load on the machine):",
    "  earn    gunicorn 5.38 ms  postgres (own db) 2.65 ms  client 0.42 ms",
    "",
    "PostgreSQL work per request (pg_stat_database / pg_stat_user_tables deltas over "
     "each scenario, approximate):",
    "  earn    commits 1.5  rollbacks 0.9  rows returned 31  fetched 22  inserted "
     "3.5  updated 0.9  seq scans: partner 3.29",
    "  hot     commits 2.0  rollbacks 0.0  rows returned 10  fetched 5  inserted 3.0 "
     " updated 2.0  seq scans: none",
    "",
    "pgbench (pgbench -i -s 10; -b tpcb-like -c 8 -j 2 -T 5): 525 tps, latency avg 15.248 ms",
    "  pgbench pgbench   8.1%  postgres  78.4% (own db  36.1%)  other 112.8%  machine 199.2%",
    "  postgres CPU per transaction (own db): 0.69 ms",
    "earn throughput / pgbench tps = 0.19  (target >= 0.5: NOT met)",
    "earn p99 = 339.5 ms  (target <= 25.0 ms: NOT met)",
    "ledger check: ok",
    "  ledger check: OK",
    "    ok    entries_balance      entries=1",
    "",
    "py-spy, earn scenario, 10 samples (top functions by own time):",
    "   60.0%  execute (psycopg)",
    "   40.0%  dumps (json)",
    "note: the machine was busy",
    "=" * 96,
]


def test_scenario_lines_are_the_report_printed_as_each_scenario_ends():
    lines = [line for scenario, result in REPORT["scenarios"].items()
             for line in scenario_lines(scenario, result)]
    assert lines == SCENARIO_LINES


def test_summary_lines_are_the_report_printed_at_the_end():
    assert summary_lines(REPORT) == SUMMARY_LINES


def test_summary_of_a_run_without_scenarios_or_pgbench():
    report = {**REPORT, "scenarios": {}, "pgbench": None, "targets": {}, "profile": None,
              "notes": [], "ledger_check": {"status": "unavailable", "message": "no command",
                                            "output": "Error: No such command 'ledger'."}}
    lines = summary_lines(report)
    assert lines[lines.index(row(["scenario/op", "requests", "req/s", "p50 ms", "p95 ms",
                                  "p99 ms", "max ms", "409 short", "errors"],
                                 [12, 8, 8, 7, 7, 7, 8, 9, 6])) + 1:] == [
        "ledger check: unavailable — no command",
        "=" * 96,
    ]


# --------------------------------------------------------------------------- open-loop load


def test_slots_space_sends_at_the_rate_and_interleave_the_processes():
    from bench.harness.load import Slots

    plan = {"t_start": 1_000, "rate": 100.0, "processes": 2}
    first, second = Slots(plan, 0), Slots(plan, 1)
    assert [first.take() for _ in range(3)] == [1_000, 1_000 + 20 * MS, 1_000 + 40 * MS]
    assert [second.take() for _ in range(2)] == [1_000 + 10 * MS, 1_000 + 30 * MS]


class _SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.05)
        body = b'{"type": "earn"}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server():
    """A real HTTP server on a free port that answers every POST after 50 ms."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _plan(port: int, rate: float | None) -> dict:
    now = time.monotonic_ns()
    return {"scenario": "earn", "tag": "t", "port": port, "token": "x",
            "factory": lambda rng, txn: ("earn", "/v1/earn", b"{}"),
            "t_start": now, "t_measure": now, "t_end": now + int(0.6e9),
            "request_timeout": 5.0, "max_per_thread": 1000, "reconnect_every": 0,
            "rate": rate}


def test_paced_latency_runs_from_the_scheduled_send_so_a_slow_server_shows(slow_server):
    from bench.harness.load import drive_threads

    # one client, 50 ms a request: closed loop it sees 50 ms each; paced at 40/s (one every
    # 25 ms) it falls further behind the schedule with every request, and says so
    closed = drive_threads(_plan(slow_server, None), 0, 1)["latencies"]["earn"]
    paced = drive_threads(_plan(slow_server, 40.0), 0, 1)["latencies"]["earn"]
    assert max(paced) > 200 * MS and max(closed) < max(paced)
    assert sorted(paced) == paced  # each waits longer than the one before


def test_paced_load_sends_no_faster_than_the_rate(slow_server):
    from bench.harness.load import drive_threads

    merged = drive_threads(_plan(slow_server, 20.0), 0, 8)  # one every 50 ms, 0.6 s
    assert 10 <= merged["sent"] <= 13
    # 8 clients keep up: no request waits for the one before (falling behind would add
    # 50 ms a request, 0.6 s by the end)
    assert max(merged["latencies"]["earn"]) < 400 * MS


# --------------------------------------------------------------------------- chained scenarios


def test_a_chained_scenario_acts_on_the_answer_to_its_first_call(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    scenarios = importlib.import_module("scenarios")
    factory = scenarios.request_factory("capture", {"burn": ["M1"]}, "points")
    rng = random.Random(1)
    op, path, body = factory(rng, "a")
    assert (op, path) == ("authorise", "/v1/holds")
    assert json.loads(body) == {"member_number": "M1", "partner_txn_id": "a", "points": 10}
    factory.answered(op, 409, b'{"error": "insufficient_points"}')
    assert factory(rng, "b")[:2] == ("authorise", "/v1/holds")  # refused: authorise again
    factory.answered("authorise", 201, b'{"id": 42, "status": "open"}')
    op, path, body = factory(rng, "c")
    assert (op, path, json.loads(body)) == ("capture", "/v1/holds/42/capture",
                                            {"partner_txn_id": "c"})
    factory.answered(op, 201, b'{"id": 7, "type": "hold_capture"}')
    assert factory(rng, "d")[0] == "authorise"  # a capture is not acted on


@pytest.mark.parametrize(("scenario", "first", "second"), [
    ("void", "/v1/holds", "/v1/holds/5/void"),
    ("earn_reversal", "/v1/earn", "/v1/transactions/5/reversals"),
    ("burn_reversal", "/v1/burn", "/v1/transactions/5/reversals"),
])
def test_each_chain_calls_its_paths(monkeypatch, scenario, first, second):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    scenarios = importlib.import_module("scenarios")
    factory = scenarios.request_factory(scenario, {"burn": ["M1"]}, "points")
    rng = random.Random(1)
    op, path, _ = factory(rng, "a")
    assert path == first
    factory.answered(op, 201, b'{"id": 5}')
    assert factory(rng, "b")[1] == second


def test_the_goals_summary_gives_each_cost_ratio_with_its_cpu_and_the_rows_not_measured():
    targets = {
        "paced_p99_ms": {"value": 12.5, "target": "<= 25.0", "met": True,
                         "cpu_ms": {"gunicorn": 1.6, "postgres": 0.65}},
        "cost_capture": {"value": 1.38, "target": "<= 1.5", "met": True,
                         "throughput_ratio": 0.94,
                         "cpu_ms": {"gunicorn": 5.37, "postgres": 2.18}}}
    report = {**REPORT, "targets": targets, "run": {**REPORT["run"], "goals": True}}
    lines = summary_lines(report)
    assert ("earn p99 paced (open loop, from the scheduled send; rate: --paced-rate or half "
            "of pgbench) = 12.5 ms  "
            "(target <= 25.0 ms: met); CPU per request: gunicorn 1.60 ms, postgres 0.65 ms"
            ) in lines
    assert ("capture CPU per call / earn's = 1.38  (target <= 1.5: met); earn/s / its "
            "calls/s = 0.94; CPU per request: gunicorn 5.37 ms, postgres 2.18 ms") in lines
    assert "not measured by this run: coalition expire, members a second" in lines
    assert "not measured by this run: coalition daily, members a second" in lines


def _costed(scenario: str, gunicorn_ms: float, postgres_ms: float, ok_rps: float,
            op: str) -> dict:
    return {"cpu": {"server_ms_per_request": gunicorn_ms,
                    "postgres_bench_ms_per_request": postgres_ms},
            "ops": {op: {"ok_rps": ok_rps, "p99_ms": 10.0, "errors": {}}}}


def test_a_chained_call_costs_twice_its_window_per_request_less_its_first_call(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    ledger = importlib.import_module("ledger")
    report = {"scenarios": {
        "earn": _costed("earn", 4.0, 2.0, 300.0, "earn"),
        "authorise": _costed("authorise", 4.0, 2.0, 300.0, "authorise"),
        # authorise and capture alternate: 7 ms a request, so a capture costs 14 - 6 = 8 ms
        "capture": _costed("capture", 5.0, 2.0, 120.0, "capture"),
        "paced": _costed("paced", 1.0, 0.5, 100.0, "earn")}}
    found = ledger.targets(report)
    assert found["cost_authorise"]["value"] == pytest.approx(1.0)
    assert found["cost_capture"]["value"] == pytest.approx(8 / 6)
    assert found["cost_capture"]["met"]
    # alone, a capture would take 8 ms of the pair's 14: 120/s * 14 / 8 = 210/s
    assert found["cost_capture"]["throughput_ratio"] == pytest.approx(300 / 210)
    assert found["cost_capture"]["cpu_ms"] == {"gunicorn": 5.0, "postgres": 2.0}
    assert found["paced_p99_ms"]["met"]
    assert "cost_void" not in found  # not run: not judged


# --------------------------------------------------------------------------- floors


def test_the_floors_answer_a_constant_and_a_wallet_read(app, client, make_partner,
                                                        monkeypatch):
    _, headers = make_partner("acme")
    number = client.post("/v1/members", json={"partner_member_ref": "c1"},
                         headers=headers).get_json()["member_number"]
    assert client.post("/v1/earn", json={"member_number": number, "partner_txn_id": "t-1",
                                         "points": 7}, headers=headers).status_code == 201
    monkeypatch.setenv("COALITION_DATABASE_URL", app.config["DATABASE_URL"])
    served = floor_app()
    floors = served.test_client()
    try:
        assert floors.get("/healthz").status_code == 200
        assert floors.get("/floor/json").get_json() == {"available": 100, "pending": 0,
                                                        "held": 0}
        # the one member's wallet, whatever the number asked
        assert floors.get("/floor/read/12345").get_json() == {"available": 7, "pending": 0,
                                                              "held": 0}
    finally:
        served.extensions["floor_engine"].dispose()


def test_the_floors_are_reported_against_pgbench():
    earn = REPORT["scenarios"]["earn"]
    cpu = {**earn["cpu"], "server_ms_per_request": 0.5, "postgres_bench_ms_per_request": 0.1}
    report = {**REPORT, "pgbench": {**REPORT["pgbench"], "tps": 1000.0},
              "scenarios": {"floor_json": {**earn, "rps": 1500.0, "cpu": cpu},
                            "floor_read": {**earn, "rps": 900.0, "cpu": cpu}}}
    lines = summary_lines(report)
    assert ("floor: Flask answering a constant body / pgbench tps = 1.50; CPU per request: "
            "gunicorn 0.50 ms, postgres 0.10 ms") in lines
    assert ("floor: Flask and one prepared read / pgbench tps = 0.90; CPU per request: "
            "gunicorn 0.50 ms, postgres 0.10 ms") in lines
