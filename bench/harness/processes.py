"""Processes a benchmark starts, the stop flag, and the commands it runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 300.0

#: set on Ctrl-C/SIGTERM: every client loop checks it
STOP = threading.Event()


class BenchError(RuntimeError):
    """A step failed; the message says which and why."""


def wait_until(t_ns: int) -> bool:
    """Sleep until the monotonic time ``t_ns`` (ns); whether the run was stopped meanwhile."""
    wait = (t_ns - time.monotonic_ns()) / 1e9
    return wait > 0 and STOP.wait(wait)


def say(message: str = "") -> None:
    print(message, flush=True)


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
