#!/usr/bin/env python3
"""Slow clients against gunicorn with no proxy in front: how long an earn waits.

    .venv/bin/python bench/slow_clients.py [--server former|conf|nginx] [--stalled 0,1,2,4,8]

A stalled client sends the headers of an earn and half its body, then nothing. For each
count of stalled clients the benchmark opens them, times ``--earns`` earns sent one after
the other by another client (each given up after ``--timeout`` seconds), then lets the
stalled clients go and waits until the server answers again.

``--server former`` is the production command the README gave before the nginx
configuration (``gunicorn -w 4 -b … 'coalition.app:create_app()'``: sync workers, one request
each); ``--server conf`` is ``deploy/gunicorn.conf.py`` (gthread) alone; ``--server nginx``
is the same gunicorn behind nginx as shipped (``deploy/nginx/coalition.conf``, TLS with a
self-signed certificate), the stalled clients and the earns going to nginx.

It drops and re-creates the database ``coalition_slow`` on the local PostgreSQL server;
every connection goes to 127.0.0.1, every wait has a deadline, and gunicorn is stopped at
the end, on error and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

from harness.client import Client, ClientError, fetch_token, free_port
from harness.gunicorn import APP
from harness.nginx import start_nginx
from harness.postgres import database_url, parse_server, recreate_database
from harness.processes import BIN, REPO, BenchError, Processes, clean_env, run_command, say

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"
DATABASE = "coalition_slow"
SCOPES = "points:earn members:write members:read"


def stall(port: int, token: str, count: int,
          tls: ssl.SSLContext | None) -> list[socket.socket]:
    body = json.dumps({"member_number": "0", "partner_txn_id": "stalled", "points": 1}).encode()
    head = (f"POST /v1/earn HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    stalled = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls is not None:
            conn = tls.wrap_socket(conn, server_hostname="127.0.0.1")
        conn.sendall(head + body[: len(body) // 2])
        stalled.append(conn)
    return stalled


def timed_earn(port: int, token: str, member: str, txn: str, timeout: float,
               tls: ssl.SSLContext | None) -> str:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
            if tls is not None else
            http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))
    started = time.perf_counter()
    try:
        conn.request("POST", "/v1/earn", body=json.dumps(
            {"member_number": member, "partner_txn_id": txn, "points": 1}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return f"no answer within {timeout:.0f} s"
    finally:
        conn.close()
    return f"{status} in {time.perf_counter() - started:.3f} s"


def wait_healthy(port: int, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        client = Client(port, timeout=2.0)
        try:
            if client.call("GET", "/healthz")[0] == 200:
                return
        except ClientError:
            pass
        finally:
            client.close()
        time.sleep(0.2)
    raise BenchError(f"gunicorn on port {port} did not answer /healthz within {deadline_s} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("former", "conf", "nginx"), default="former")
    parser.add_argument("--stalled", default="0,1,2,4,8")
    parser.add_argument("--earns", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=40.0)
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    args = parser.parse_args(argv)

    server = parse_server(args.database_server)
    env = clean_env(COALITION_ENV="testing", COALITION_SECRET_KEY="slow-clients-0123456789",
                    COALITION_DATABASE_URL=database_url(server, DATABASE),
                    COALITION_LOG_LEVEL="warning", COALITION_RATE_LIMIT_ENABLED="false")
    recreate_database(server, DATABASE)
    run_command([str(BIN / "coalition"), "db", "upgrade"], env)
    created = run_command([str(BIN / "coalition"), "client", "create", "--operator", "--scope",
                           "admin", "--name", "slow clients", "--json"], env)
    operator = json.loads(created.stdout)

    port = free_port()
    if args.server == "former":
        command = [str(BIN / "gunicorn"), "-w", "4", "-b", f"127.0.0.1:{port}", APP]
    else:
        command = [str(BIN / "gunicorn"), "-c", str(REPO / "deploy" / "gunicorn.conf.py"),
                   "-b", f"127.0.0.1:{port}", APP]
    say(f"server: {' '.join(command[1:])}")
    procs = Processes()
    log = Path(f"/tmp/coalition-slow-clients-{port}.log")
    try:
        procs.start(command, env=env, log=log)
        wait_healthy(port)
        target, tls = port, None
        if args.server == "nginx":
            folder = Path(tempfile.mkdtemp(prefix="coalition-slow-clients-"))
            target, tls = start_nginx(procs, folder, f"127.0.0.1:{port}")
            say(f"nginx: https://127.0.0.1:{target} in front ({folder})")
        admin = Client(port, fetch_token(port, operator["client_id"],
                                         operator["client_secret"]))
        admin.json("PUT", "/v1/admin/program", {
            "pending_days": 0, "expiry": {"policy": "none"},
            "tiers": [{"code": "member", "name": "Member", "threshold": 0, "multiplier": "1"}]})
        admin.json("POST", "/v1/admin/partners", {
            "code": "slow", "name": "Slow Stores", "kind": "merchant", "currency": "GBP",
            "earn_rate": "1", "issue_price": "0.01", "redeem_rate": "0.008"}, expect=(201,))
        issued = admin.json("POST", "/v1/admin/partners/slow/clients",
                            {"scopes": SCOPES.split(), "name": "till"}, expect=(201,))
        admin.close()
        token = fetch_token(port, issued["client_id"], issued["client_secret"], SCOPES)
        partner = Client(port, token)
        member = partner.json("POST", "/v1/members", {"partner_member_ref": "m1"},
                              expect=(200, 201))["member_number"]
        partner.close()

        results: dict[int, list[str]] = {}
        for count in (int(n) for n in args.stalled.split(",")):
            stalled = stall(target, token, count, tls)
            try:
                results[count] = [timed_earn(target, token, member, f"e{count}-{n}",
                                             args.timeout, tls) for n in range(args.earns)]
            finally:
                for conn in stalled:
                    conn.close()
            say(f"{count:>3} stalled: " + "; ".join(results[count]))
            wait_healthy(port)
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 2
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
