"""The app served the way production serves it: the real gunicorn, a freshly migrated SQLite.

These tests start processes, so every wait is bounded and every process is stopped (its
whole process group, workers included) even when an assertion fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
APP = "coalition.app:create_app()"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")


def clean_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The current environment without any COALITION_*/FLASK_* variable, plus ``settings``.

    A developer's own ``COALITION_DATABASE_URL`` must never reach these processes.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COALITION_", "FLASK_", "GUNICORN_"))}
    env.update(COALITION_INSTANCE_PATH=str(tmp_path), COALITION_LOG_FORMAT="text")
    env.update(settings)
    return env


def gunicorn_command(*extra: str) -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS

    command = [str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "--workers", "2",
               "--timeout", "30", "--graceful-timeout", "5"]
    # gunicorn >= 25.1 opens a control socket at one fixed per-user path by default;
    # two servers at once (parallel test runs) would take it from each other.
    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
        command.append("--no-control-socket")
    return [*command, *extra, APP]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn's graceful shutdown), then SIGKILL to the whole group."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind by a dead master
    process.wait(timeout=STOP_TIMEOUT)


@contextmanager
def started(command: list[str], env: Mapping[str, str], log: Path,
            cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=dict(env), cwd=cwd, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop(process)


def get(url: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    with urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.status, response.headers.get("Content-Type", ""), response.read()


def wait_until_healthy(process: subprocess.Popen[bytes], log: Path) -> str:
    """The server's base URL once ``/healthz`` answers 200."""
    deadline = time.monotonic() + START_TIMEOUT
    base = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
        if base is None:
            found = LISTENING.search(log.read_text(errors="replace"))
            base = found.group(1) if found else None
        if base is not None:
            with suppress(URLError, ConnectionError, TimeoutError):
                status, _, _ = get(f"{base}/healthz", timeout=2.0)
                if status == 200:
                    return base
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer /healthz within {START_TIMEOUT}s:\n{log.read_text()}")


def test_gunicorn_serves_the_app(tmp_path: Path) -> None:
    env = clean_env(tmp_path, COALITION_ENV="development")
    migrate = subprocess.run([str(BIN / "coalition"), "db", "upgrade"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert (tmp_path / "coalition.sqlite3").is_file()

    log = tmp_path / "gunicorn.log"
    with started(gunicorn_command(), env, log, cwd=tmp_path) as server:
        base = wait_until_healthy(server, log)

        status, content_type, body = get(f"{base}/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok", "database": "ok"})

        status, content_type, body = get(f"{base}/docs")
        assert status == 200
        assert content_type.startswith("text/html")
        assert b"<html" in body.lower() and b"/openapi.json" in body

        status, content_type, body = get(f"{base}/openapi.json")
        assert status == 200
        assert content_type.startswith("application/json")
        spec = json.loads(body)
        assert spec["openapi"].startswith("3.")
        assert "/healthz" in spec["paths"] and "/v1/program" in spec["paths"]

        stop(server)
        assert server.returncode == 0, log.read_text()


def test_gunicorn_refuses_production_without_secret_key(tmp_path: Path) -> None:
    env = clean_env(tmp_path, COALITION_ENV="production")
    log = tmp_path / "gunicorn.log"
    with started(gunicorn_command(), env, log, cwd=tmp_path) as server:
        try:
            server.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gunicorn kept running without COALITION_SECRET_KEY:\n"
                        f"{log.read_text()}")
    output = log.read_text(errors="replace")
    assert server.returncode != 0, output
    assert "COALITION_SECRET_KEY" in output, output
