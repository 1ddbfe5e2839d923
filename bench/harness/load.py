"""Load: client threads (and forked client processes), each with one keep-alive connection,
their latencies and outcomes, and the percentiles over them.

Closed loop by default (each client sends its next request when the last is answered). With
``plan["rate"]`` set, open loop: requests are scheduled at that fixed rate over all the
clients, each client takes the next scheduled slot, waits for its time and sends it, and a
latency runs from the scheduled time, not from the send; a server that falls behind shows
as latency, never as fewer requests (no coordinated omission)."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from .client import Client, ClientError
from .cpu import own_cpu_seconds
from .processes import STOP, BenchError, wait_until

#: ``factory(rng, partner_txn_id) -> (operation, path, JSON body)``: one scenario's requests
RequestFactory = Callable[[random.Random, str], tuple[str, str, bytes | None]]

#: what a 2xx answer of each operation carries: a field, and its value when it is fixed
EXPECTED: dict[str, tuple[str, str | None]] = {
    "balance": ("available", None), "authorise": ("status", "open"),
    "void": ("status", "voided"), "capture": ("type", "hold_capture"),
    "floor_json": ("available", None), "floor_read": ("available", None)}

#: outcomes that are answers, not errors: a burn beyond the balance is a business answer
ANSWERS = ("ok", "insufficient_points")


def percentile(ordered: list[int], p: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1] / 1e6


def op_stats(latencies: list[int], outcomes: Counter[str], window: float) -> dict[str, Any]:
    """Throughput, latency percentiles and outcome counts of one operation."""
    ordered = sorted(latencies)
    errors = {o: n for o, n in outcomes.items() if o not in ANSWERS}
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


def ops_stats(latencies: dict[str, list[int]], outcomes: Counter[tuple[str, str]],
              window: float) -> dict[str, dict[str, Any]]:
    """``op_stats`` of each operation, and of them all together (``all``) when there are
    several."""
    ops = sorted(latencies)
    result = {}
    for op in ops:
        result[op] = op_stats(latencies[op],
                              Counter({o: n for (o_op, o), n in outcomes.items() if o_op == op}),
                              window)
    if len(ops) > 1:
        together: Counter[str] = Counter()
        for (_, o), n in outcomes.items():
            together[o] += n
        result["all"] = op_stats([v for op in ops for v in latencies[op]], together, window)
    return result


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


def merge(parts: Iterable[dict[str, Any]], **start: Any) -> dict[str, Any]:
    """The results of several clients (threads or processes) as one; ``start`` sets
    initial values (``last_done``, ``cpu_seconds``, ``stuck_threads``)."""
    merged: dict[str, Any] = {"latencies": {}, "outcomes": Counter(), "last_done": 0,
                              "connects": 0, "bad_bodies": [], "sent": 0, "cpu_seconds": 0.0,
                              "stuck_threads": 0, **start}
    for part in parts:
        if not part:
            continue
        for op, values in part["latencies"].items():
            merged["latencies"].setdefault(op, []).extend(values)
        merged["outcomes"].update(part["outcomes"])
        merged["last_done"] = max(merged["last_done"], part["last_done"])
        for key in ("connects", "sent", "cpu_seconds", "stuck_threads"):
            merged[key] += part.get(key, 0)
        merged["bad_bodies"].extend(part["bad_bodies"])
    return merged


class Slots:
    """The send times of an open-loop run, in this process: ``plan["rate"]`` requests a
    second over all the client processes, process ``p`` of ``P`` taking every P-th slot."""

    def __init__(self, plan: dict[str, Any], proc_index: int) -> None:
        self.start, self.index = plan["t_start"], proc_index
        self.stride = plan.get("processes", 1)
        self.interval = 1e9 / plan["rate"]
        self.lock = threading.Lock()
        self.next = 0

    def take(self) -> int:
        with self.lock:
            slot, self.next = self.next, self.next + 1
        return self.start + int((slot * self.stride + self.index) * self.interval)


def drive_threads(plan: dict[str, Any], proc_index: int, threads: int) -> dict[str, Any]:
    """Run ``threads`` closed-loop clients of one scenario in this process.

    Each thread owns one keep-alive connection and sends one request at a time (from
    ``plan["factory"]``) until the window ends or its count is used up. Requests started
    before ``t_measure`` (warm-up) are not recorded. Returns latencies (ns) per operation,
    outcome counts, and this process's CPU seconds over the measured window.
    """
    factory: RequestFactory = plan["factory"]
    t_start, t_measure, t_end = plan["t_start"], plan["t_measure"], plan["t_end"]
    cap = plan["max_per_thread"]
    recycle = plan["reconnect_every"]
    results: list[dict[str, Any]] = [{} for _ in range(threads)]
    answered = getattr(factory, "answered", None)
    slots = Slots(plan, proc_index) if plan.get("rate") else None

    def worker(index: int) -> None:
        rng = random.Random(f"{plan['tag']}-{plan['scenario']}-{proc_index}-{index}")
        client = Client(plan["port"], plan["token"], timeout=plan["request_timeout"])
        latencies: dict[str, list[int]] = {}
        outcomes: Counter[tuple[str, str]] = Counter()
        checked: set[str] = set()
        bad_bodies: list[str] = []
        last_done = t_measure
        prefix = f"{plan['tag']}-{plan['scenario']}{proc_index}.{index}-"
        delay = t_start - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        sent = 0
        try:
            while sent < cap and not STOP.is_set():
                if slots is not None:
                    began = slots.take()  # the scheduled send time
                    if began >= t_end or wait_until(began):
                        break
                else:
                    began = time.monotonic_ns()
                    if began >= t_end:
                        break
                op, path, body = factory(rng, f"{prefix}{sent}")
                try:
                    status, data = client.call("GET" if body is None else "POST", path,
                                               body)
                except ClientError:
                    status, data = 0, b""
                done = time.monotonic_ns()
                sent += 1
                if answered is not None:
                    answered(op, status, data)
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
                        # a transaction answers with its type; a balance with its points
                        kind = op.split("-")[0]
                        expected = EXPECTED.get(kind, ("type", kind))
                        if not (isinstance(answer, dict) and expected[0] in answer and (
                                expected[1] is None or answer[expected[0]] == expected[1])):
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
    wait_until(t_measure)
    cpu_before = own_cpu_seconds()
    wait_until(t_end)
    cpu_after = own_cpu_seconds()
    deadline = time.monotonic() + plan["request_timeout"] + 10
    for thread in pool:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if slots is not None:
        # paced: the requests scheduled in the window may be sent after it; count their cost
        cpu_after = own_cpu_seconds()
    return merge(results, last_done=t_measure, cpu_seconds=cpu_after - cpu_before,
                 stuck_threads=sum(t.is_alive() for t in pool))


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
    plan = {**plan, "processes": processes}
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
    return merge(parts)
