"""The application server under test: gunicorn, started, awaited and stopped."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gunicorn.config import KNOWN_SETTINGS

from .client import Client, ClientError
from .cpu import pids_where
from .processes import BIN, STOP, BenchError, Processes

APP = "coalition.app:create_app()"
FLOOR_APP = "harness.floor:create_app()"
START_TIMEOUT = 60.0
PROBLEM = re.compile(r"\b(ERROR|CRITICAL|Traceback|WORKER TIMEOUT)\b")


@dataclass
class Gunicorn:
    """gunicorn serving Coalition on 127.0.0.1:``port``, its log in ``log``."""

    procs: Processes
    env: dict[str, str]
    log: Path
    port: int
    workers: int
    worker_class: str
    threads: int
    reuse_port: bool
    process: subprocess.Popen[bytes] | None = None
    #: the WSGI application (Coalition, or the floors of :mod:`harness.floor`)
    app: str = APP

    def command(self) -> list[str]:
        command = [str(BIN / "gunicorn"), "--workers", str(self.workers),
                   "--worker-class", self.worker_class, "--bind", f"127.0.0.1:{self.port}",
                   "--keep-alive", "30", "--timeout", "60", "--graceful-timeout", "5",
                   "--worker-tmp-dir", "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp",
                   "--log-level", "info"]
        if self.worker_class == "gthread":
            command += ["--threads", str(self.threads)]
        if self.reuse_port:
            # a listening socket per worker, the kernel spreading connections over them;
            # with one shared socket, a gthread worker accepts every connection it can, and
            # a few long-lived keep-alive connections can all land on one worker
            command.append("--reuse-port")
        # gunicorn >= 25.1 opens a control socket at a fixed per-user path by default
        if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
            command.append("--no-control-socket")
        if self.app != APP:  # found beside this package
            command += ["--pythonpath", str(Path(__file__).resolve().parents[1])]
        return [*command, self.app]

    def shown(self) -> str:
        """The command line as a shell would take it."""
        return " ".join(self.command()[:-1] + [f"'{self.app}'"])

    def worker_pids(self) -> list[int]:
        master = self.process.pid if self.process else None
        return pids_where(lambda p, c, pp: pp == master)

    def start(self) -> None:
        """Start it and wait until ``/healthz`` answers and every worker is up."""
        self.process = self.procs.start(self.command(), env=self.env, log=self.log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not STOP.is_set():
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.process.returncode}:\n"
                                 f"{self.log.read_text(errors='replace')[-3000:]}")
            client = Client(self.port, timeout=2.0)
            with contextlib.suppress(ClientError):
                status, _ = client.call("GET", "/healthz")
                # every worker must be up, not just the first one
                if status == 200 and len(self.worker_pids()) >= self.workers:
                    client.close()
                    return
            client.close()
            time.sleep(0.1)
        raise BenchError(f"gunicorn did not answer /healthz within {START_TIMEOUT:.0f}s:\n"
                         f"{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> list[str]:
        """Stop it; the error lines of its log."""
        if self.process is None:
            return []
        self.procs.stop(self.process)
        self.process = None
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if PROBLEM.search(line)]
