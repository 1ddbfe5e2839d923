"""The bearer-token check runs without a transaction of its own and reads the token afresh
on every request: a revoked token is refused by the very next request on every worker of
a real gunicorn under load."""

from __future__ import annotations

import base64
import http.client
import re
import threading
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event

from coalition.db import db
from coalition.oauth.server import principal_for
from partners.service import create_partner, issue_partner_client
from tests.coalition.test_serving import (
    clean_env,
    gunicorn_command,
    started,
    wait_until_healthy,
)
from tests.conftest import TEST_SECRET, fetch_token

pytestmark = pytest.mark.slow

#: gunicorn's own access line: worker pid, status, path
ACCESS = re.compile(r"^W<?(\d+)>? (\d{3}) (\S+)$", re.M)


def _post_form(base: str, path: str, form: dict[str, str],
               auth: tuple[str, str]) -> tuple[int, bytes]:
    host = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    conn.request("POST", path, urllib.parse.urlencode(form),
                 {"Authorization": f"Basic {basic}",
                  "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_a_revoked_token_is_refused_by_the_next_request_on_every_worker(
        app, client, database_url, tmp_path: Path):
    create_partner(code="acme", name="Acme", kind="merchant", currency="GBP",
                   earn_rate=Decimal("1"), issue_price=Decimal("0.01"),
                   redeem_rate=Decimal("0.008"))
    issued = issue_partner_client("acme", ["members:read", "members:write"])
    token = fetch_token(client, issued.client_id, issued.client_secret)
    enrolled = client.post("/v1/members", json={"partner_member_ref": "c-1"},
                           headers={"Authorization": f"Bearer {token}"})
    assert enrolled.status_code == 201, enrolled.get_json()
    number = enrolled.get_json()["member_number"]

    env = clean_env(tmp_path, COALITION_ENV="testing", COALITION_DATABASE_URL=database_url,
                    COALITION_SECRET_KEY=TEST_SECRET, COALITION_LOG_LEVEL="warning",
                    COALITION_RATE_LIMIT="1000000")
    log = tmp_path / "gunicorn.log"
    command = gunicorn_command("--worker-class", "gthread", "--threads", "4",
                               "--access-logfile", "-",
                               "--access-logformat", "W%(p)s %(s)s %(U)s")
    with started(command, env, log, cwd=tmp_path) as server:
        base = wait_until_healthy(server, log)
        host = urllib.parse.urlsplit(base)
        path = f"/v1/members/{number}/balance"
        stop = threading.Event()
        revoked_at: list[float] = []
        late: list[tuple[float, int]] = []  # (sent at, status) of requests sent after
        failures: list[str] = []

        def load() -> None:
            # a new connection every few requests, so both workers keep getting some
            sent = 0
            conn = None
            while not stop.is_set():
                if conn is None or sent % 5 == 0:
                    if conn is not None:
                        conn.close()
                    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
                began = time.monotonic()
                try:
                    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                    conn = None
                    continue
                sent += 1
                if revoked_at and began > revoked_at[0]:
                    late.append((began, response.status))
                elif response.status not in (200, 401):
                    failures.append(f"{response.status} before the revocation")
            if conn is not None:
                conn.close()

        threads = [threading.Thread(target=load) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until both workers have answered 200s
                served = {pid for pid, status, _ in ACCESS.findall(log.read_text())
                          if status == "200"}
                if len(served) >= 2:
                    break
                time.sleep(0.1)
            assert len(served) >= 2, log.read_text()
            before = len(log.read_text())
            status, body = _post_form(base, "/oauth/revoke", {"token": token},
                                      (issued.client_id, issued.client_secret))
            assert status == 200, body
            revoked_at.append(time.monotonic())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until both workers have refused it a while
                refusing = {pid for pid, status, p in ACCESS.findall(log.read_text()[before:])
                            if p == path and status == "401"}
                if len(late) > 40 and len(refusing) >= 2:
                    break
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
        after = log.read_text()[before:]

    assert not failures, failures[:5]
    assert len(late) > 20, late
    assert {status for _, status in late} == {401}, [s for _, s in late if s != 401][:5]
    # both workers refused the token after the revocation, and none let it through
    refused = {pid for pid, status, p in ACCESS.findall(after) if p == path and status == "401"}
    assert len(refused) >= 2, after[-2000:]


@pytest.mark.postgres
def test_the_token_check_sends_no_begin_and_no_rollback(app, client, tmp_path: Path):
    """On the wire (libpq's trace of the connection the check uses): the token read is one
    statement, without BEGIN or ROLLBACK (which psycopg follows with DEALLOCATE ALL, so
    nothing would ever run prepared)."""
    create_partner(code="acme", name="Acme", kind="merchant", currency="GBP",
                   earn_rate=Decimal("1"), issue_price=Decimal("0.01"),
                   redeem_rate=Decimal("0.008"))
    issued = issue_partner_client("acme", ["members:read"])
    token = fetch_token(client, issued.client_id, issued.client_secret)
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as out:
        def on_checkout(dbapi_connection, record, proxy) -> None:
            dbapi_connection.pgconn.trace(out.fileno())

        def on_checkin(dbapi_connection, record) -> None:
            dbapi_connection.pgconn.untrace()

        event.listen(db.engine, "checkout", on_checkout)
        event.listen(db.engine, "checkin", on_checkin)
        try:
            principals = [principal_for(token) for _ in range(8)]
        finally:
            event.remove(db.engine, "checkout", on_checkout)
            event.remove(db.engine, "checkin", on_checkin)
    assert all(p is not None and p.partner_code == "acme" for p in principals)
    text = trace.read_text()
    assert "oauth_token" in text, text[:2000]
    for command in ("BEGIN", "ROLLBACK", "DEALLOCATE"):
        assert command not in text, text[:2000]
