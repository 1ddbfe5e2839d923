"""Coalition behind the real nginx, configured by deploy/nginx/coalition.conf, in front of
the real gunicorn configured by deploy/gunicorn.conf.py: TLS ends at nginx, stalled uploads
do not stop earns, and the client address the application uses (rate limits, the access
log) is the client's, never one a client wrote into ``X-Forwarded-For``.

nginx is Debian's (``.ci/run`` installs it); a missing or failing nginx fails these tests.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn.config import KNOWN_SETTINGS

from bench.harness.client import free_port
from bench.harness.nginx import self_signed
from coalition.http.proxy import TrustedProxies
from tests.coalition.test_serving import APP, BIN, clean_env, started
from tests.conftest import TEST_SECRET, basic_auth
from tests.factories.partner_api import enrol, publish

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx" / "coalition.conf"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STALLED = 50


def render(conf: str, replacements: dict[str, str]) -> str:
    """The shipped configuration with this machine's ports and paths: each line replaced
    must be there, so that the test always runs the configuration as shipped."""
    for old, new in replacements.items():
        assert conf.count(old) == 1, f"{old!r} is no longer in {NGINX_CONF}"
        conf = conf.replace(old, new)
    return conf


def control_socket_off() -> list[str]:
    # gunicorn >= 25.1 opens a control socket at one fixed per-user path by default
    return (["--no-control-socket"]
            if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else [])


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path,
             verify: str | None) -> None:
    """Until ``url`` answers 200 (15 s at most); fails with the log if the process ends."""
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n"
                        f"{log.read_text(errors='replace')}", pytrace=False)
        try:
            if requests.get(url, verify=verify or True, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer within 15 s:\n"
                        f"{log.read_text(errors='replace')}", pytrace=False)
        time.sleep(0.1)


@dataclass
class Deployment:
    https: str  # nginx
    plain: str  # nginx, plain HTTP
    direct: str  # gunicorn itself
    cert: Path
    gunicorn_log: Path

    def access_lines(self) -> list[dict[str, Any]]:
        lines = []
        for text in self.gunicorn_log.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                line = json.loads(text)
                if line.get("logger") == "coalition.access":
                    lines.append(line)
        return lines


@pytest.fixture
def deployment(app: Any, database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """gunicorn (deploy/gunicorn.conf.py, but one worker: its 8 threads) behind nginx
    (deploy/nginx/coalition.conf) on free loopback ports, sharing the test database."""
    env = clean_env(tmp_path, COALITION_ENV="testing", COALITION_DATABASE_URL=database_url,
                    COALITION_SECRET_KEY=TEST_SECRET, COALITION_LOG_LEVEL="info",
                    COALITION_LOG_FORMAT="json", COALITION_TRUSTED_PROXIES="127.0.0.1",
                    COALITION_RATE_LIMIT_ENABLED="true", COALITION_TOKEN_RATE_LIMIT="0.001",
                    COALITION_TOKEN_RATE_LIMIT_BURST="2")
    gunicorn_log = tmp_path / "gunicorn.log"
    cert, key = self_signed(tmp_path)
    https, plain = free_port(), free_port()
    with ExitStack() as stack:
        # the shipped settings (one listening socket per worker: a fixed port), one worker
        upstream = f"127.0.0.1:{free_port()}"
        command = [str(BIN / "gunicorn"), "--config", str(GUNICORN_CONF), "--bind", upstream,
                   "--workers", "1", *control_socket_off(), APP]
        server = stack.enter_context(started(command, env, gunicorn_log, cwd=tmp_path))
        direct = f"http://{upstream}"
        wait_for(f"{direct}/healthz", server, gunicorn_log, verify=None)
        site = render(NGINX_CONF.read_text(), {
            "server 127.0.0.1:8000 ": f"server {upstream} ",
            "    listen 80;\n": f"    listen 127.0.0.1:{plain};\n",
            "    listen [::]:80;\n": "",
            "    listen 443 ssl http2;\n": f"    listen 127.0.0.1:{https} ssl http2;\n",
            "    listen [::]:443 ssl http2;\n": "",
            "/etc/ssl/coalition/fullchain.pem": str(cert),
            "/etc/ssl/coalition/privkey.pem": str(key),
        })
        (tmp_path / "coalition.conf").write_text(site)
        temp = tmp_path / "nginx-temp"
        temp.mkdir()
        (tmp_path / "nginx.conf").write_text(f"""
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {tmp_path}/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {tmp_path}/coalition.conf;
}}
""")
        nginx_log = tmp_path / "nginx.out"
        # as root nginx's workers run as nobody, who cannot enter pytest's private folders
        user = ["-g", "daemon off; user root;"]
        nginx = stack.enter_context(started(
            [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e",
             str(tmp_path / "nginx-error.log"), *user], env, nginx_log, cwd=tmp_path))
        base = f"https://127.0.0.1:{https}"
        wait_for(f"{base}/healthz", nginx, tmp_path / "nginx-error.log", verify=str(cert))
        yield Deployment(base, f"http://127.0.0.1:{plain}", direct, cert, gunicorn_log)


@pytest.fixture
def earner(client: Any, make_partner: Any, operator_headers: Any) -> dict[str, Any]:
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    return {"headers": headers, "member": enrol(client, headers, "c1")}


def stall(base: str, headers: dict[str, str], cert: Path, count: int) -> list[socket.socket]:
    """``count`` uploads of an earn that send their headers and half the body, then stall
    (their connections are kept open until the caller closes them)."""
    host, port = base.split("://")[1].split(":")
    body = json.dumps({"member_number": "0", "partner_txn_id": "stalled", "points": 1}).encode()
    head = (f"POST /v1/earn HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "\r\n").encode()
    context = ssl.create_default_context(cafile=str(cert)) if base.startswith("https") else None
    stalled = []
    for _ in range(count):
        conn = socket.create_connection((host, int(port)), timeout=5)
        if context is not None:
            conn = context.wrap_socket(conn, server_hostname=host)
        conn.sendall(head + body[: len(body) // 2])
        stalled.append(conn)
    return stalled


def earn(base: str, earner: dict[str, Any], txn: str, cert: Path | None = None,
         timeout: float = 5.0) -> requests.Response:
    return requests.post(f"{base}/v1/earn", json={"member_number": earner["member"],
                                                   "partner_txn_id": txn, "points": 3},
                         headers=earner["headers"], timeout=timeout,
                         verify=str(cert) if cert else True)


def test_fifty_stalled_uploads_do_not_stop_earns_behind_nginx(deployment, earner, client):
    """Fifty clients that send half an earn and stall, through nginx: earns from others go
    through at once. The same clients straight at gunicorn take every one of its threads,
    and an earn then waits."""
    stalled = stall(deployment.https, earner["headers"], deployment.cert, STALLED)
    try:
        slowest = 0.0
        for n in range(10):
            started_at = time.perf_counter()
            response = earn(deployment.https, earner, f"through-{n}", deployment.cert)
            slowest = max(slowest, time.perf_counter() - started_at)
            assert response.status_code == 201, response.text
        assert slowest < 2.0, slowest
    finally:
        for conn in stalled:
            conn.close()

    # the ten earns, and nothing of the stalled ones
    balance = client.get(f"/v1/members/{earner['member']}", headers=earner["headers"])
    assert balance.get_json()["balance"]["available"] == 30

    # without the proxy: the same stalled clients hold gunicorn's threads (the earn sent
    # meanwhile is served once they let go: its client has given up by then)
    stalled = stall(deployment.direct, earner["headers"], deployment.cert, STALLED)
    try:
        with pytest.raises(requests.Timeout):
            earn(deployment.direct, earner, "direct", timeout=3.0)
    finally:
        for conn in stalled:
            conn.close()


def _https(deployment: Deployment, source: str) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(deployment.cert))
    port = int(deployment.https.rsplit(":", 1)[1])
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10,
                                       source_address=(source, 0))


def _token(conn: http.client.HTTPConnection, operator: dict[str, str],
           forged: str | None) -> int:
    headers = {**basic_auth(operator["client_id"], operator["client_secret"]),
               "Content-Type": "application/x-www-form-urlencoded"}
    if forged:
        headers["X-Forwarded-For"] = forged
    with closing(conn):
        conn.request("POST", "/oauth/token", body="grant_type=client_credentials",
                     headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status


def test_the_client_address_is_the_real_one_behind_nginx_and_never_a_forged_one(
        deployment, operator):
    """The token endpoint allows 2 requests per address here. Through nginx the address is
    the client's own (127.0.0.2 and 127.0.0.3 have a bucket each, not one for nginx's
    127.0.0.1), whatever X-Forwarded-For the client sends; straight at gunicorn from an
    address that is not a trusted proxy, X-Forwarded-For is ignored."""
    statuses = [_token(_https(deployment, "127.0.0.2"), operator, forged)
                for forged in ("203.0.113.1", "203.0.113.2", "203.0.113.3")]
    assert statuses == [200, 200, 429]
    assert _token(_https(deployment, "127.0.0.3"), operator, "127.0.0.2") == 200

    direct_port = int(deployment.direct.rsplit(":", 1)[1])
    statuses = [_token(http.client.HTTPConnection("127.0.0.1", direct_port, timeout=10,
                                                  source_address=("127.0.0.4", 0)),
                       operator, forged)
                for forged in ("198.51.100.1", "198.51.100.2", "198.51.100.3")]
    assert statuses == [200, 200, 429]

    def addresses() -> list[str]:
        return [line["remote_addr"] for line in deployment.access_lines()
                if line["path"] == "/oauth/token"]

    deadline = time.monotonic() + 10
    while len(addresses()) < 7 and time.monotonic() < deadline:
        time.sleep(0.02)  # the last access line is written after the answer
    assert addresses() == ["127.0.0.2"] * 3 + ["127.0.0.3"] + ["127.0.0.4"] * 3


def test_nginx_answers_in_the_one_error_shape(deployment):
    """Its own refusals too: metrics are not served at the edge, a body past nginx's limit
    is a 413 with code payload_too_large, and plain HTTP is redirected to HTTPS."""
    metrics = requests.get(f"{deployment.https}/metrics", verify=str(deployment.cert),
                           timeout=5)
    assert (metrics.status_code, metrics.json()["error"]) == (404, "not_found")
    huge = requests.post(f"{deployment.https}/v1/earn", data=b"x" * (3 * 1024 * 1024),
                         headers={"Content-Type": "application/json"},
                         verify=str(deployment.cert), timeout=10)
    assert (huge.status_code, huge.json()["error"]) == (413, "payload_too_large")
    # within nginx's limit but over the application's: the application's own answer
    big = requests.post(f"{deployment.https}/v1/earn", data=b"x" * (1024 * 1024 + 1),
                        headers={"Content-Type": "application/json"},
                        verify=str(deployment.cert), timeout=10)
    assert (big.status_code, big.json()["error"]) == (413, "payload_too_large")
    assert big.json()["message"] == "The request body is larger than 1048576 bytes."
    moved = requests.get(f"{deployment.plain}/healthz?x=1", allow_redirects=False, timeout=5)
    assert moved.status_code == 308
    assert moved.headers["Location"] == "https://127.0.0.1/healthz?x=1"


# --------------------------------------------------------------------------- the middleware


def _seen(proxies: list[str], remote: str, headers: dict[str, str]) -> tuple[str, str]:
    """(REMOTE_ADDR, wsgi.url_scheme) as the application sees them."""
    seen: dict[str, str] = {}

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(addr=environ.get("REMOTE_ADDR", ""), scheme=environ["wsgi.url_scheme"])
        start_response("204 No Content", [])
        return []

    environ = {"REMOTE_ADDR": remote, "wsgi.url_scheme": "http", "HTTP_HOST": "coalition",
               **{"HTTP_" + name.upper().replace("-", "_"): value
                  for name, value in headers.items()}}
    TrustedProxies(inner, proxies)(environ, lambda *_: None)
    return seen["addr"], seen["scheme"]


FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize(("proxies", "remote", "headers", "expected"), [
    (["10.0.0.5"], "10.0.0.5", FORWARDED, ("203.0.113.9", "https")),
    # only the hop the proxy added counts, not what the client wrote before it
    (["10.0.0.5"], "10.0.0.5", {"X-Forwarded-For": "1.2.3.4, 203.0.113.9"},
     ("203.0.113.9", "http")),
    (["10.0.1.0/24", "fd00::/8"], "10.0.1.77", FORWARDED, ("203.0.113.9", "https")),
    (["10.0.1.0/24", "fd00::/8"], "fd00::1", FORWARDED, ("203.0.113.9", "https")),
    (["10.0.0.5"], "10.0.0.5", {}, ("10.0.0.5", "http")),
    # from anyone else, or with no proxy trusted, the headers are ignored
    (["10.0.0.5"], "10.0.0.6", FORWARDED, ("10.0.0.6", "http")),
    (["10.0.1.0/24"], "10.0.2.1", FORWARDED, ("10.0.2.1", "http")),
    ([], "10.0.0.5", FORWARDED, ("10.0.0.5", "http")),
    (["10.0.0.5"], "", FORWARDED, ("", "http")),  # a Unix socket
])
def test_forwarding_headers_are_believed_from_trusted_proxies_only(proxies, remote, headers,
                                                                   expected):
    assert _seen(proxies, remote, headers) == expected
