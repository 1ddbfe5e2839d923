"""CPU used over a measured window, read from ``/proc``, and its arithmetic.

Figures are per cent of one core (200 = both cores of a 2-core machine) and CPU
milliseconds per request, which other load on the machine hardly moves.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")

#: pid -> CPU seconds, per group of processes ("server", "postgres", "postgres_bench")
Readings = dict[str, dict[int, float]]


def parse_stat(stat: str, clock_ticks: int = CLK_TCK) -> tuple[str, int, float]:
    """``/proc/PID/stat`` -> (comm, ppid, utime + stime in seconds)."""
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat.rsplit(")", 1)[1].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / clock_ticks


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
        table[int(entry.name)] = parse_stat(stat)
    return table


def pids_where(predicate: Callable[[int, str, int], bool]) -> list[int]:
    """PIDs whose (pid, comm, ppid) satisfy ``predicate``."""
    return [pid for pid, (comm, ppid, _) in proc_table().items() if predicate(pid, comm, ppid)]


def parse_machine_stat(first_line: str) -> tuple[int, int]:
    """The ``cpu`` line of ``/proc/stat`` -> (busy, total) jiffies over all cores."""
    values = [int(v) for v in first_line.split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores."""
    return parse_machine_stat(Path("/proc/stat").read_text().split("\n", 1)[0])


def parse_backend_title(title: str) -> str | None:
    """The database in a PostgreSQL backend's process title, None for other processes."""
    # "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE" (Debian names the cluster)
    parts = title.split()
    if not parts or parts[0] != "postgres:":
        return None
    parts = parts[2:] if len(parts) > 1 and parts[1].endswith(":") else parts[1:]
    return parts[1] if len(parts) > 2 else None


def postgres_database(pid: int) -> str | None:
    """The database a PostgreSQL backend serves, from its process title."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return None
    return parse_backend_title(title)


def shares(base: Readings, last: Readings, wall: float, machine_before: tuple[int, int],
           machine_after: tuple[int, int], cores: int,
           server_pid: int | None) -> dict[str, float | list[float]]:
    """Per cent of one core used over ``wall`` seconds by each group, each gunicorn worker
    (highest first; a worker holding most connections shows as an imbalance) and the
    machine (from its busy and total jiffies at both ends)."""
    wall = max(wall, 1e-9)
    result: dict[str, float | list[float]] = {
        "machine_pct": 100 * cores * (machine_after[0] - machine_before[0])
        / max(machine_after[1] - machine_before[1], 1)}
    for name, readings in last.items():
        before = base.get(name, {})
        seconds = sum(cpu - before.get(pid, 0.0) for pid, cpu in readings.items())
        result[f"{name}_pct"] = 100 * seconds / wall
    server_base = base.get("server", {})
    result["workers_pct"] = sorted(
        (100 * (cpu - server_base.get(pid, 0.0)) / wall
         for pid, cpu in last.get("server", {}).items() if pid != server_pid), reverse=True)
    return result


def other_pct(machine_pct: float, *used_pct: float) -> float:
    """What the machine spent beyond the processes measured (never below zero)."""
    rest = machine_pct
    for pct in used_pct:
        rest -= pct
    return max(0.0, rest)


def ms_per_request(pct: float, seconds: float, requests: int) -> float:
    """CPU milliseconds per request from per cent of a core over ``seconds``."""
    return pct / 100 * seconds * 1000 / max(requests, 1)


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


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
        self._base: Readings = {}
        self._last: Readings = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _groups(self) -> Readings:
        table = proc_table()
        server_pids = {self.gunicorn_pid} if self.gunicorn_pid else set()
        server_pids |= {pid for pid, (_, ppid, _) in table.items() if ppid in server_pids}
        groups: Readings = {"server": {}, "postgres": {}, "postgres_bench": {}}
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

    def stop(self) -> dict[str, float | list[float]]:
        """Per cent of one core over the window (200 = both cores of a 2-core machine)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample()
        return shares(self._base, self._last, time.monotonic() - self._wall, self._machine,
                      machine_jiffies(), os.cpu_count() or 1, self.gunicorn_pid)
