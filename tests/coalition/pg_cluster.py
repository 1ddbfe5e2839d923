"""PostgreSQL servers of a test's own: a primary with a streaming replica, and a Patroni
cluster (etcd, a primary and a synchronous standby), made from the machine's PostgreSQL
binaries in a temporary folder, on ports 18100-18199 of 127.0.0.1.

Everything started here is stopped (SIGKILL to its whole process group) when the
``ExitStack`` it was entered on closes, and its folder is removed. A component that does
not start fails the test, naming the component and showing its log; one not installed
(patroni, etcd) fails it too under ``COALITION_REQUIRE_POSTGRES=1`` (CI), and skips it
elsewhere.
PostgreSQL refuses to run as root, so under root (CI) every server runs as ``postgres``.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import pytest

START_TIMEOUT = 60.0


def pg_bin() -> Path:
    """The newest PostgreSQL server binaries Debian installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.fail("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql)", pytrace=False)
    return found[-1].parent


def _tool(name: str) -> str:
    """A program these servers need; missing, it fails the test under
    ``COALITION_REQUIRE_POSTGRES=1`` (CI) and skips it otherwise, saying why."""
    path = shutil.which(name)
    if path is None:
        message = (f"{name} is not installed (make test installs it as root: apt-get "
                   "install patroni etcd-server)")
        if os.environ.get("COALITION_REQUIRE_POSTGRES", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root for the ``postgres`` user."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _owned(path: Path) -> Path:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


@contextmanager
def fixed_ports() -> Iterator[None]:
    """The servers these tests start listen on fixed ports: one such set of servers at a
    time on the machine, across test runs (two checkouts tested side by side would
    otherwise reach each other's servers). A lock on a file in the system's temporary
    folder, held while the servers run."""
    with (Path(tempfile.gettempdir()) / "coalition-fixed-ports.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


@contextmanager
def workdir() -> Iterator[Path]:
    """A temporary folder the servers (possibly another user) may write in."""
    path = Path(tempfile.mkdtemp(prefix="coalition-cluster-"))
    try:
        path.chmod(0o755)
        yield _owned(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start(stack: ExitStack, command: list[str], log: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``command`` in a process group of its own, its output in ``log``; killed (the
    whole group) when ``stack`` closes."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env=env, **_run_as())
    stack.callback(kill, process)
    return process


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the process and everything it started (its process group)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)


def run(command: list[str], log: Path) -> None:
    """A command (initdb, pg_basebackup) to its end; fails the test if it does."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL, **_run_as())
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}",
                    pytrace=False)


def wait_for(check: Callable[[], Any], what: str, log: Path | None = None,
             timeout: float = START_TIMEOUT) -> Any:
    """``check()``'s first true answer, within ``timeout`` seconds; else fail, showing
    the component's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(Exception):
            answer = check()
            if answer:
                return answer
        time.sleep(0.1)
    shown = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    pytest.fail(f"{what} within {timeout:.0f} s\n{shown}", pytrace=False)


def accepts_connections(port: int) -> bool:
    result = subprocess.run([str(pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(port),
                             "-q", "-t", "1"], timeout=10)
    return result.returncode == 0


def url(port: int, database: str = "postgres") -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"


# ------------------------------------------------------------------ a primary and a replica


@dataclass
class Server:
    port: int
    data: Path
    process: subprocess.Popen[bytes]
    log: Path


def postgres(stack: ExitStack, data: Path, port: int, log: Path,
             *settings: str) -> Server:
    """``postgres`` on an initialised data folder, listening on 127.0.0.1:``port``."""
    command = [str(pg_bin() / "postgres"), "-D", str(data), "-p", str(port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
               "-c", "fsync=off", "-c", "shared_buffers=32MB", "-c", "max_connections=60"]
    for setting in settings:
        command += ["-c", setting]
    process = start(stack, command, log)
    wait_for(lambda: process.poll() is None and accepts_connections(port),
             f"PostgreSQL on port {port} did not start", log)
    return Server(port, data, process, log)


def primary_and_replica(stack: ExitStack, root: Path, primary_port: int,
                        replica_port: int) -> tuple[Server, Server]:
    """A primary (initdb, trust on 127.0.0.1) and a hot standby streaming from it
    (pg_basebackup -R)."""
    primary_data = root / "primary"
    run([str(pg_bin() / "initdb"), "-D", str(primary_data), "-U", "postgres",
         "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"], root / "initdb.log")
    primary = postgres(stack, primary_data, primary_port, root / "primary.log")
    replica_data = root / "replica"
    run([str(pg_bin() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary_port),
         "-U", "postgres", "-D", str(replica_data), "-R", "-X", "stream", "-c", "fast"],
        root / "basebackup.log")
    replica = postgres(stack, replica_data, replica_port, root / "replica.log",
                       "hot_standby=on", "hot_standby_feedback=on")
    return primary, replica


# --------------------------------------------------------------------------- Patroni


@dataclass
class Node:
    name: str
    pg_port: int
    rest_port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def rest(self, path: str) -> tuple[int, Any]:
        try:
            with urlopen(f"http://127.0.0.1:{self.rest_port}{path}", timeout=2) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except HTTPError as exc:
            return exc.code, None

    def is_primary(self) -> bool:
        with suppress(URLError, OSError):
            return self.rest("/primary")[0] == 200
        return False

    def is_sync_standby(self) -> bool:
        with suppress(URLError, OSError):
            return self.rest("/sync")[0] == 200
        return False

    def postmaster_pid(self, data: Path) -> int | None:
        """The node's running postmaster (checked against its command line, so that a
        stale pid file never names another process)."""
        with suppress(OSError, ValueError, IndexError):
            pid = int((data / "postmaster.pid").read_text().split()[0])
            if str(data).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        return None


#: Patroni's timings kept small so a failover takes seconds (loop_wait + 2 × retry_timeout
#: must not exceed ttl)
TTL, LOOP_WAIT, RETRY_TIMEOUT = 8, 1, 3


def _patroni_config(node: Node, root: Path, etcd_port: int, durable: bool) -> str:
    data = root / node.name
    # JSON is YAML: Patroni reads it as it is
    return json.dumps({
        "scope": "coalition", "name": node.name, "namespace": "/coalition-test/",
        "log": {"level": "INFO"},
        "restapi": {"listen": f"127.0.0.1:{node.rest_port}",
                    "connect_address": f"127.0.0.1:{node.rest_port}"},
        "etcd3": {"hosts": [f"127.0.0.1:{etcd_port}"]},
        "bootstrap": {
            "dcs": {
                "ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": 16 * 1024 * 1024,
                # a commit returns only once the standby has it: the one Patroni promotes
                "synchronous_mode": True,
                "postgresql": {"use_pg_rewind": True, "parameters": {
                    "wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on",
                    "max_wal_senders": 5, "max_replication_slots": 5,
                    "synchronous_commit": "on", "max_connections": 60}},
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.pg_port}",
            "connect_address": f"127.0.0.1:{node.pg_port}",
            "data_dir": str(data), "bin_dir": str(pg_bin()),
            "pgpass": str(root / f"{node.name}.pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": "postgres"},
                "replication": {"username": "replicator", "password": "replicator"},
                "rewind": {"username": "postgres", "password": "postgres"}},
            "pg_hba": ["local all all trust", "host all all 127.0.0.1/32 trust",
                       "host replication all 127.0.0.1/32 trust"],
            # tests skip fsync (nothing here outlives the test); a benchmark keeps it
            "parameters": {"unix_socket_directories": str(root),
                           "fsync": "on" if durable else "off",
                           "shared_buffers": "128MB" if durable else "32MB"},
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    })


@dataclass
class Patroni:
    root: Path
    etcd_port: int
    nodes: list[Node]

    def start(self, stack: ExitStack, node: Node) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATRONI")}
        # Patroni runs PostgreSQL in a session of its own: killed after Patroni (the stack
        # unwinds in reverse), so that no Patroni is left to start it again
        stack.callback(self.kill_postgres, node)
        node.process = start(stack, [_tool("patroni"), str(node.config)], node.log, env=env)

    def kill_postgres(self, node: Node) -> None:
        postmaster = node.postmaster_pid(self.root / node.name)
        if postmaster is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(os.getpgid(postmaster), signal.SIGKILL)
        with suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGKILL)

    def primary(self) -> Node | None:
        leaders = [node for node in self.nodes if node.is_primary()]
        return leaders[0] if len(leaders) == 1 else None

    def kill_node(self, node: Node) -> None:
        """The machine is lost: Patroni and its PostgreSQL die at once (SIGKILL), with no
        chance to hand over or release the leader key."""
        assert node.process is not None
        with suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        self.kill_postgres(node)
        node.process.wait(timeout=15)

    @property
    def url_hosts(self) -> str:
        """The libpq multi-host part of a URL: every node, the primary found by trying."""
        return "&".join(f"host=127.0.0.1:{node.pg_port}" for node in self.nodes)

    def url(self, database: str) -> str:
        return (f"postgresql+psycopg://postgres@/{database}?{self.url_hosts}"
                "&target_session_attrs=read-write&connect_timeout=2")


def patroni_cluster(stack: ExitStack, root: Path, etcd_port: int, peer_port: int,
                    pg_ports: tuple[int, int], rest_ports: tuple[int, int], *,
                    durable: bool = False) -> Patroni:
    """etcd, then two Patroni nodes: one bootstraps the primary, the other clones it and
    becomes its synchronous standby. Returns once both roles are held. ``durable``: with
    fsync, for a benchmark."""
    etcd_log = root / "etcd.log"
    etcd_data = root / "etcd"
    etcd_data.mkdir(mode=0o700)
    _owned(etcd_data)
    start(stack, [_tool("etcd"), "--name", "etcd0", "--data-dir", str(etcd_data),
                  "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                  "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                  "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                  "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                  "--initial-cluster", f"etcd0=http://127.0.0.1:{peer_port}",
                  "--heartbeat-interval", "100", "--election-timeout", "500"],
          etcd_log, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def etcd_healthy() -> bool:
        with urlopen(f"http://127.0.0.1:{etcd_port}/health", timeout=2) as answer:
            return json.loads(answer.read()).get("health") == "true"

    wait_for(etcd_healthy, "etcd did not start", etcd_log)

    nodes = []
    for index, (pg_port, rest_port) in enumerate(zip(pg_ports, rest_ports, strict=True)):
        name = f"node{index + 1}"
        config = root / f"{name}.yml"
        node = Node(name, pg_port, rest_port, config, root / f"{name}.log")
        config.write_text(_patroni_config(node, root, etcd_port, durable))
        _owned(config)
        nodes.append(node)
    cluster = Patroni(root, etcd_port, nodes)
    first, second = nodes
    cluster.start(stack, first)
    wait_for(first.is_primary, "the first Patroni node did not become primary", first.log)
    cluster.start(stack, second)
    wait_for(second.is_sync_standby,
             "the second Patroni node did not become the synchronous standby", second.log)
    return cluster
