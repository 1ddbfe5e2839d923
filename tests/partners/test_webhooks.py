"""Webhooks: endpoints, the outbox written with the booking, signed deliveries to a real
local receiver, retries with backoff, replays, and a worker killed with SIGKILL mid-way.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from coalition.db import db, read
from coalition.outbox import backoff
from partners import worker
from partners.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from tests.coalition.test_serving import BIN, clean_env, started
from tests.conftest import TEST_SECRET, snapshot
from tests.factories.partner_api import assert_error, burn, earn, enrol, publish

pytestmark = pytest.mark.slow


class Receiver:
    """A real HTTP receiver on a free loopback port that verifies every signature as the
    README tells partners to, and records what arrived."""

    def __init__(self, secret: str = "", status: int = 200, delay: float = 0.0,
                 location: str | None = None) -> None:
        self.location = location
        self.secret = secret
        self.status = status
        self.delay = delay
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        #: set when a request has come in (before its delay)
        self.arriving = threading.Event()
        #: ends the delays early (:meth:`release`)
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arriving.set()
                if receiver.delay:
                    receiver.released.wait(receiver.delay)
                with receiver.lock:
                    receiver.received.append({
                        "body": body, "event_id": self.headers["Coalition-Event-Id"],
                        "signature": self.headers["Coalition-Signature"],
                        "content_type": self.headers["Content-Type"],
                        "valid": verify(receiver.secret, self.headers["Coalition-Signature"],
                                        body),
                    })
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        # a shutdown is seen within one poll: the default half second was what every
        # test with a receiver waited for at its end
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        """Answer the requests held in their delay now, and the next ones at once."""
        self.released.set()

    def ids(self) -> list[str]:
        with self.lock:
            return [r["event_id"] for r in self.received]


def _readme_verify() -> Callable[..., bool]:
    """The receiver's check exactly as the README shows partners."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Partner operations: webhooks"):]
    code = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert code is not None, "the README shows how a receiver verifies a signature"
    scope: dict[str, Any] = {}
    exec(compile(code.group(1), "README.md", "exec"), scope)  # noqa: S102 - our own README
    return scope["verify"]  # type: ignore[no-any-return]


verify = _readme_verify()


@pytest.fixture
def acme(client, operator_headers, make_partner):
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    return headers


def register(client, headers, url, events=("transaction.booked", "transaction.reversed")):
    response = client.post("/v1/webhooks", json={"url": url, "events": list(events)},
                           headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def deliver_all(app) -> None:
    """The worker's loop, in this process, until nothing is due."""
    worker.run(app, threading.Event(), until_idle=True)


def count(model) -> int:
    with read() as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def events() -> list[WebhookEvent]:
    with read() as session:
        return list(session.scalars(select(WebhookEvent)))


# --------------------------------------------------------------------------- endpoints


def test_an_endpoint_is_registered_listed_and_deleted(client, acme):
    created = register(client, acme, "https://hooks.example.com/coalition")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["transaction.booked", "transaction.reversed"]
    listed = client.get("/v1/webhooks", headers=acme).get_json()
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert client.delete(f"/v1/webhooks/{created['id']}", headers=acme).status_code == 204
    assert client.get("/v1/webhooks", headers=acme).get_json() == []
    assert_error(client.delete(f"/v1/webhooks/{created['id']}", headers=acme), 404,
                 "not_found")


@pytest.mark.parametrize("body, field", [
    ({"url": "http://hooks.example.com/x", "events": ["transaction.booked"]}, "url"),
    ({"url": "http://10.0.0.1/x", "events": ["transaction.booked"]}, "url"),
    ({"url": "ftp://hooks.example.com/x", "events": ["transaction.booked"]}, "url"),
    ({"url": "https://user:pw@hooks.example.com/x", "events": ["transaction.booked"]}, "url"),
    ({"url": "https:///x", "events": ["transaction.booked"]}, "url"),
    ({"url": "https://10.1.2.3/x", "events": ["transaction.booked"]}, "url"),
    ({"url": "https://169.254.169.254/latest", "events": ["transaction.booked"]}, "url"),
    ({"url": "https://[fd00::1]/x", "events": ["transaction.booked"]}, "url"),
    ({"url": "https://0.0.0.0/x", "events": ["transaction.booked"]}, "url"),
    ({"url": "https://[::1/x", "events": ["transaction.booked"]}, "url"),
    ({"url": "https://hooks.example.com/x", "events": ["transaction.eaten"]}, "events"),
    ({"url": "https://hooks.example.com/x", "events": []}, "events"),
    ({"url": "https://hooks.example.com/x"}, "events"),
    ({"url": "https://hooks.example.com/x", "events": ["transaction.booked"], "x": 1}, "x"),
])
def test_a_bad_endpoint_is_refused_and_changes_nothing(app, client, acme, body, field):
    before = snapshot(app)
    assert_error(client.post("/v1/webhooks", json=body, headers=acme), 422,
                 "invalid_request", {field})
    assert snapshot(app) == before


def test_plain_http_is_allowed_to_this_machine_only(client, acme):
    for url in ("http://127.0.0.1:18201/x", "http://localhost/x", "http://[::1]:8080/x"):
        register(client, acme, url)


# --------------------------------------------------------------------------- the outbox


def test_an_event_is_written_with_its_booking_and_only_then(app, client, acme):
    register(client, acme, "https://hooks.example.com/a")
    member = enrol(client, acme, "m1")
    booked = earn(client, acme, member, "e1", points=50)
    assert (count(WebhookEvent), count(WebhookDelivery)) == (1, 1)
    [event] = events()
    body = json.loads(event.body)
    assert body["type"] == "transaction.booked" and body["id"] == event.id
    assert body["data"]["id"] == booked["id"] and body["data"]["points"] == 50
    # a replay books nothing and reports nothing; a refusal neither
    replay = client.post("/v1/earn", json={"member_number": member, "partner_txn_id": "e1",
                                           "points": 50}, headers=acme)
    assert replay.headers["Idempotent-Replayed"] == "true"
    before = snapshot(app)
    assert_error(client.post("/v1/burn", json={"member_number": member,
                                               "partner_txn_id": "b1", "points": 51},
                             headers=acme), 409, "insufficient_points")
    assert snapshot(app) == before
    reversal = client.post(f"/v1/transactions/{booked['id']}/reversals",
                           json={"partner_txn_id": "r1", "points": 5}, headers=acme)
    assert reversal.status_code == 201
    types = sorted(json.loads(e.body)["type"] for e in events())
    assert types == ["transaction.booked", "transaction.reversed"]


def test_no_endpoint_no_event(client, acme):
    member = enrol(client, acme, "m1")
    earn(client, acme, member, "e1", points=50)
    assert count(WebhookEvent) == 0


def test_only_the_types_an_endpoint_asked_for(client, acme):
    register(client, acme, "https://hooks.example.com/a", events=["transaction.reversed"])
    member = enrol(client, acme, "m1")
    earn(client, acme, member, "e1", points=50)
    burn(client, acme, member, "b1", points=10)
    assert count(WebhookEvent) == 0


# --------------------------------------------------------------------------- delivery


def test_a_delivery_is_signed_and_recorded(app, client, acme):
    with Receiver() as receiver:
        endpoint = register(client, acme, receiver.url)
        receiver.secret = endpoint["secret"]
        member = enrol(client, acme, "m1")
        booked = earn(client, acme, member, "e1", points=50)
        deliver_all(app)
    [got] = receiver.received
    assert got["valid"] and got["content_type"] == "application/json"
    body = json.loads(got["body"])
    assert body["id"] == got["event_id"]
    assert set(body) == {"id", "type", "created_at", "data"}
    assert body["data"]["id"] == booked["id"]
    page = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=acme).get_json()
    [delivery] = page["items"]
    assert delivery["status"] == "delivered" and delivery["event_id"] == got["event_id"]
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    assert delivery["attempts"][0]["response"] == "ok"


def test_a_signature_made_with_another_secret_fails_the_check():
    body = b'{"id":"x"}'
    header = f"t={int(time.time())},v1=" + hmac.new(b"other", b"x", "sha256").hexdigest()
    assert not verify("whsec_right", header, body)


def test_a_failing_receiver_is_retried_with_backoff_until_the_retry_time_is_spent(
        app, client, acme, clock, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_BACKOFF", 5)
    monkeypatch.setitem(app.config, "WEBHOOK_RETRY_FOR", 120)
    with Receiver(status=503) as receiver:
        endpoint = register(client, acme, receiver.url)
        receiver.secret = endpoint["secret"]
        member = enrol(client, acme, "m1")
        earn(client, acme, member, "e1", points=50)
        for _ in range(200):  # 1 000 s of the clock, far past the retry time
            deliver_all(app)
            [delivery] = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries",
                                    headers=acme).get_json()["items"]
            if delivery["status"] != "pending":
                break
            clock.advance(seconds=5)
    assert delivery["status"] == "failed"
    attempts = delivery["attempts"]
    assert len(attempts) >= 3 and {a["status_code"] for a in attempts} == {503}
    assert len(receiver.received) == len(attempts)
    assert len({r["event_id"] for r in receiver.received}) == 1
    assert all(r["valid"] for r in receiver.received)
    # the waits between attempts grow (exponential, with jitter of at most half)
    times = [a["at"] for a in attempts]
    assert times == sorted(times)


def test_backoff_doubles_up_to_its_cap_with_jitter():
    for attempts, ceiling in ((1, 10), (2, 20), (3, 40), (9, 300), (30, 300)):
        waits = [backoff(attempts, 10, 300) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jittered


def test_an_unreachable_receiver_is_an_attempt_with_an_error(app, client, acme, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_BACKOFF", 60)
    with Receiver() as receiver:
        url = receiver.url
    endpoint = register(client, acme, url)  # nothing listens there any more
    member = enrol(client, acme, "m1")
    earn(client, acme, member, "e1", points=50)
    deliver_all(app)
    [delivery] = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries",
                            headers=acme).get_json()["items"]
    assert delivery["status"] == "pending" and delivery["next_attempt_at"]
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] is None and "refused" in attempt["error"].lower()


def test_a_delivery_is_replayed_with_the_same_event_id(app, client, acme):
    with Receiver() as receiver:
        endpoint = register(client, acme, receiver.url)
        receiver.secret = endpoint["secret"]
        member = enrol(client, acme, "m1")
        earn(client, acme, member, "e1", points=50)
        deliver_all(app)
        [first] = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries",
                             headers=acme).get_json()["items"]
        replayed = client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{first['id']}/replay",
                               headers=acme)
        assert replayed.status_code == 202, replayed.get_json()
        assert replayed.get_json()["replay_of"] == first["id"]
        deliver_all(app)
    assert receiver.ids() == [first["event_id"]] * 2
    assert all(r["valid"] for r in receiver.received)
    items = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries",
                       headers=acme).get_json()["items"]
    assert [d["status"] for d in items] == ["delivered", "delivered"]
    assert_error(client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/987654/replay",
                             headers=acme), 404, "not_found")


def test_a_slow_receiver_never_slows_the_booking_path(app, client, acme, monkeypatch):
    """Deliveries wait on a receiver that holds its answer (up to 30 s); earns meanwhile
    take what they take without it."""
    monkeypatch.setitem(app.config, "WORKER_POLL", 0.02)
    with Receiver(delay=30) as receiver:
        endpoint = register(client, acme, receiver.url)
        receiver.secret = endpoint["secret"]
        member = enrol(client, acme, "m1")
        stop = threading.Event()
        running = threading.Thread(target=worker.run, args=(app, stop))
        earn(client, acme, member, "e0", points=1)
        running.start()
        try:
            assert receiver.arriving.wait(10), "the first delivery never arrived"
            took = []
            for n in range(1, 6):
                began = time.monotonic()
                earn(client, acme, member, f"e{n}", points=1)
                took.append(time.monotonic() - began)
            in_flight_throughout = not receiver.received
        finally:
            receiver.release()
            stop.set()
            running.join(timeout=30)
    assert in_flight_throughout, "the receiver answered while the earns were timed"
    assert max(took) < 1.0, took
    assert len(receiver.received) >= 1


# --------------------------------------------------------------------------- SIGKILL


def _worker(env: dict[str, str], log: Path, cwd: Path, *extra: str) -> Any:
    return started([str(BIN / "coalition"), "worker", *extra], env, log, cwd)


def test_a_worker_killed_mid_delivery_loses_no_event(app, client, acme, database_url,
                                                     tmp_path):
    """40 events to a receiver that takes 50 ms each; the worker is killed with SIGKILL
    once some have arrived, then started again: every event arrives, every signature is
    valid, and an event that arrives twice carries the same id."""
    with Receiver(delay=0.05) as receiver:
        endpoint = register(client, acme, receiver.url)
        receiver.secret = endpoint["secret"]
        member = enrol(client, acme, "m1")
        for n in range(40):
            earn(client, acme, member, f"e{n}", points=1)
        sent = {e.id for e in events()}
        assert len(sent) == 40
        env = clean_env(tmp_path, COALITION_ENV="testing", COALITION_DATABASE_URL=database_url,
                        COALITION_SECRET_KEY=TEST_SECRET, COALITION_LOG_LEVEL="warning",
                        COALITION_WEBHOOK_CONCURRENCY="4", COALITION_WORKER_POLL="0.05",
                        COALITION_WEBHOOK_TIMEOUT="1", COALITION_WEBHOOK_BACKOFF="0.1")
        with _worker(env, tmp_path / "worker1.log", tmp_path) as first:
            deadline = time.monotonic() + 30
            while len(receiver.ids()) < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        arrived_before_restart = len(receiver.ids())
        assert 8 <= arrived_before_restart < 40, (tmp_path / "worker1.log").read_text()
        # what was in flight is leased for WEBHOOK_TIMEOUT + 30 s; let the lease lapse
        with db.engine.begin() as conn:
            conn.execute(WebhookDelivery.__table__.update()
                         .where(WebhookDelivery.__table__.c.status == "pending")
                         .values(next_attempt_at=WebhookDelivery.__table__.c.created_at))
        second = subprocess.run([str(BIN / "coalition"), "worker", "--until-idle"],
                                env=env, cwd=tmp_path, capture_output=True, timeout=120)
        assert second.returncode == 0, second.stderr.decode()
    arrived = receiver.ids()
    assert set(arrived) == sent
    assert all(r["valid"] for r in receiver.received)
    for got in receiver.received:  # a duplicate is the same event, byte for byte
        assert json.loads(got["body"])["id"] == got["event_id"]
    with read() as session:
        statuses = session.scalars(select(WebhookDelivery.status)).all()
    assert set(statuses) == {"delivered"}
    assert count(WebhookAttempt) >= 40


def test_closing_a_settlement_run_tells_each_partner_its_statement_is_ready(
        app, client, acme, operator_headers, clock):
    register(client, acme, "https://hooks.example.com/s", events=["statement.ready"])
    member = enrol(client, acme, "m1")
    earn(client, acme, member, "e1", points=50)
    end = clock.advance(seconds=1.1).strftime("%Y-%m-%dT%H:%M:%SZ")
    run = client.post("/v1/settlement/runs", headers=operator_headers,
                      json={"period_start": "2020-01-01", "period_end": end}).get_json()
    assert count(WebhookEvent) == 0  # a draft is not a statement
    closed = client.post(f"/v1/settlement/runs/{run['id']}/close", headers=operator_headers)
    assert closed.status_code == 200, closed.get_json()
    [event] = events()
    body = json.loads(event.body)
    assert body["type"] == "statement.ready"
    assert (body["data"]["run_id"], body["data"]["partner"]) == (run["id"], "acme")


def test_a_redirect_is_a_failed_attempt_never_followed(app, client, acme, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_BACKOFF", 60)
    with Receiver() as target, Receiver(status=302, location="") as redirecting:
        redirecting.location = target.url
        endpoint = register(client, acme, redirecting.url)
        member = enrol(client, acme, "m1")
        earn(client, acme, member, "e1", points=50)
        deliver_all(app)
    assert len(redirecting.received) == 1 and target.received == []
    [delivery] = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries",
                            headers=acme).get_json()["items"]
    assert delivery["status"] == "pending"
    assert [a["status_code"] for a in delivery["attempts"]] == [302]
