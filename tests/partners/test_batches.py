"""Batch files: checked whole, booked row by row outside the request with the API's rules,
idempotent per row, resumable after a killed worker, with per-row results by API and CLI.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import signal
import subprocess
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DataError, OperationalError

from coalition import clock
from coalition.db import read
from coalition.ledger.models import Entry
from coalition.schemas import rfc3339
from partners import batches, transactions
from partners.models import BatchRow
from tests.coalition.test_serving import BIN, clean_env, started
from tests.conftest import TEST_SECRET, post_short, snapshot
from tests.factories.partner_api import assert_error, balance, earn, enrol, publish

pytestmark = pytest.mark.slow

HEADER = ("partner_txn_id,type,member_number,partner_member_ref,points,spend_amount,"
          "spend_currency,occurred_at")


@pytest.fixture
def acme(client, operator_headers, make_partner):
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    return headers


def csv_of(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join((header, *rows)) + "\n").encode()


def upload(client, headers, body: bytes, status: int = 202, **extra: str) -> dict[str, Any]:
    response = client.post("/v1/batches", data=body,
                           headers={**headers, "Content-Type": "text/csv", **extra})
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def book_all() -> None:
    while batches.book_some():
        pass


def results(client, headers, batch_id: int) -> list[dict[str, str]]:
    response = client.get(f"/v1/batches/{batch_id}/results", headers=headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def entries() -> int:
    with read() as session:
        return session.execute(select(func.count()).select_from(Entry)).scalar_one()


# --------------------------------------------------------------------------- booking


def test_a_file_is_booked_row_by_row_with_the_apis_rules(client, acme):
    ada = enrol(client, acme, "ada")
    earn(client, acme, ada, "api-1", points=100)
    rows = [
        f"b-1,earn,{ada},,,12.50,GBP,,",                     # 25 points: 12.50 × 2 (silver)
        "b-2,earn,,ada,30,,,,",                              # by the partner's reference
        f"b-3,burn,{ada},,20,,,,",
        "b-4,earn_reversal,,,5,,,,api-1",
        "b-5,burn_reversal,,,,,,,b-3",
        f"b-6,burn,{ada},,99999,,,,",                        # more than she has
        "b-7,earn,1234567890,,5,,,,",                        # a bad check digit
        f"b-1,earn,{ada},,,12.50,GBP,,",                     # the same row again: a replay
        f"b-1,earn,{ada},,7,,,,",                            # the same id, another request
        "b-8,earn_reversal,,,5,,,,nosuch",
        f"b-9,refund,{ada},,5,,,,",
    ]
    assert {row.count(",") for row in rows} == {8}
    body = csv_of(*rows, header=HEADER + ",reference")
    queued = upload(client, acme, body)
    assert (queued["status"], queued["rows"], queued["pending"]) == ("queued", 11, 11)
    assert entries() == 1  # nothing booked in the request
    book_all()
    done = client.get(f"/v1/batches/{queued['id']}", headers=acme).get_json()
    assert (done["status"], done["booked"], done["replayed"], done["refused"],
            done["pending"]) == ("done", 5, 1, 5, 0)
    got = {(r["line"], r["partner_txn_id"]): r for r in results(client, acme, queued["id"])}
    outcome = {line: (r["outcome"], r["error"]) for (line, _), r in got.items()}
    assert outcome == {
        "2": ("booked", ""), "3": ("booked", ""), "4": ("booked", ""), "5": ("booked", ""),
        "6": ("booked", ""), "7": ("refused", "insufficient_points"),
        "8": ("refused", "invalid_request"), "9": ("replayed", ""),
        "10": ("refused", "idempotency_conflict"), "11": ("refused", "not_found"),
        "12": ("refused", "invalid_request"),
    }
    assert got[("9", "b-1")]["transaction_id"] == got[("2", "b-1")]["transaction_id"]
    # 100 + 25 + 30 - 20 - 5 + 20
    assert balance(client, acme, ada)["available"] == 150
    txn = client.get(f"/v1/transactions/{got[('6', 'b-5')]['transaction_id']}",
                     headers=acme).get_json()
    assert (txn["type"], txn["points"], txn["reference"]) == (
        "burn_reversal", 20, int(got[("4", "b-3")]["transaction_id"]))


def test_a_re_upload_or_an_overlapping_file_books_nothing_twice(client, acme):
    ada = enrol(client, acme, "ada")
    first = upload(client, acme, csv_of(f"t-1,earn,{ada},,10,,,", f"t-2,earn,{ada},,20,,,"))
    book_all()
    booked = entries()
    again = upload(client, acme, csv_of(f"t-1,earn,{ada},,10,,,", f"t-2,earn,{ada},,20,,,",
                                        f"t-3,earn,{ada},,30,,,"))
    book_all()
    assert entries() == booked + 1
    counts = client.get(f"/v1/batches/{again['id']}", headers=acme).get_json()
    assert (counts["booked"], counts["replayed"]) == (1, 2)
    assert first["sha256"] != again["sha256"]
    assert balance(client, acme, ada)["available"] == 60


def test_a_row_older_than_the_late_posting_limit_is_refused(client, acme, operator_headers):
    publish(client, operator_headers, late_posting_days=7)
    ada = enrol(client, acme, "ada")
    now = clock.utcnow()
    late, fine = rfc3339(now - timedelta(days=8)), rfc3339(now - timedelta(days=6))
    queued = upload(client, acme, csv_of(f"l-1,earn,{ada},,10,,,{late}",
                                         f"l-2,earn,{ada},,10,,,{fine}"))
    book_all()
    rows = results(client, acme, queued["id"])
    assert [(r["outcome"], r["error"]) for r in rows] == [("refused", "invalid_request"),
                                                          ("booked", "")]
    assert "late-posting" in rows[0]["message"]


def test_a_row_needs_the_scope_its_call_would(client, operator_headers, make_partner):
    publish(client, operator_headers)
    _, earner = make_partner("acme", scopes=("points:earn", "members:write",
                                             "transactions:read"))
    ada = enrol(client, earner, "ada")
    queued = upload(client, earner, csv_of(f"s-1,earn,{ada},,10,,,", f"s-2,burn,{ada},,5,,,"))
    book_all()
    assert [(r["outcome"], r["error"]) for r in results(client, earner, queued["id"])] == [
        ("booked", ""), ("refused", "insufficient_scope")]
    _, reader = make_partner("bravo", scopes=("transactions:read",))
    assert_error(client.post("/v1/batches", data=csv_of(), headers={
        **reader, "Content-Type": "text/csv"}), 403, "insufficient_scope")


# --------------------------------------------------------------------------- refused whole


def _digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


GOOD_ROW = "w-1,earn,,ada,10,,,"


@pytest.mark.parametrize("body, headers, field", [
    ("w-1,earn,,ada,10,,,\n".encode("utf-16"), {}, "file"),
    (csv_of(GOOD_ROW).replace(b"ada", b"\xff\xfe"), {}, "file"),
    (b"", {}, "file"),
    (csv_of(), {}, "file"),
    (csv_of(GOOD_ROW, header=HEADER.replace(",occurred_at", "")), {}, "header"),
    (csv_of(GOOD_ROW + ",x", header=HEADER + ",colour"), {}, "header"),
    (csv_of(GOOD_ROW + ",1", header=HEADER + ",points"), {}, "header"),
    (csv_of(GOOD_ROW, "w-2,earn,,ada,10,,"), {}, "file"),
    (csv_of(GOOD_ROW, 'w-2,earn,,"ada,10,,,'), {}, "file"),
    (csv_of(GOOD_ROW, "w-2,earn,,ada,10,,,"), {"Coalition-Batch-Rows": "3"},
     "Coalition-Batch-Rows"),
    (csv_of(GOOD_ROW), {"Coalition-Batch-Rows": "one"}, "Coalition-Batch-Rows"),
    (csv_of(GOOD_ROW), {"Content-Digest": _digest(csv_of("w-9,earn,,ada,10,,,"))},
     "Content-Digest"),
    (csv_of(GOOD_ROW), {"Content-Digest": "md5=:AAAA:"}, "Content-Digest"),
    (csv_of(GOOD_ROW), {"Content-Digest": "sha-256=:not base64!:"}, "Content-Digest"),
], ids=["utf16", "not-utf8", "empty", "header-only", "missing-column", "unknown-column",
        "twice", "ragged", "open-quote", "count", "count-text", "digest", "digest-algo",
        "digest-b64"])
def test_a_bad_file_is_refused_whole_and_changes_nothing(app, client, acme, body, headers,
                                                         field):
    enrol(client, acme, "ada")
    before = snapshot(app)
    response = client.post("/v1/batches", data=body,
                           headers={**acme, "Content-Type": "text/csv", **headers})
    assert_error(response, 422, "invalid_request", {field})
    book_all()
    assert snapshot(app) == before


def test_a_declared_count_and_digest_that_match_are_accepted(client, acme):
    body = csv_of(GOOD_ROW, "w-2,earn,,ada,10,,,")
    upload(client, acme, body, **{"Coalition-Batch-Rows": "2",
                                  "Content-Digest": _digest(body)})


def test_media_type_and_size(app, client, acme, monkeypatch):
    before = snapshot(app)
    assert_error(client.post("/v1/batches", data=csv_of(GOOD_ROW),
                             headers={**acme, "Content-Type": "text/plain"}),
                 415, "unsupported_media_type")
    monkeypatch.setitem(app.config, "BATCH_MAX_BYTES", 200)
    big = csv_of(*[f"w-{n},earn,,ada,10,,," for n in range(20)])
    assert_error(client.post("/v1/batches", data=big,
                             headers={**acme, "Content-Type": "text/csv"}),
                 413, "payload_too_large")
    assert snapshot(app) == before


def test_a_file_bigger_than_other_bodies_may_be_is_taken(app, client, acme, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 1000)
    big = csv_of(*[f"w-{n},earn,,ada,10,,," for n in range(200)])
    assert len(big) > 1000
    assert upload(client, acme, big)["rows"] == 200


def test_a_body_shorter_than_its_content_length_is_refused(app, client, acme, live_server):
    before = snapshot(app)
    body = csv_of(GOOD_ROW, "w-2,earn,,ada,10,,,")
    status, answer = post_short(live_server.url, "/v1/batches",
                                {**acme, "Content-Type": "text/csv"}, body, len(body) + 50)
    assert status == 400 and answer["error"] == "invalid_request", answer
    assert snapshot(app) == before


# --------------------------------------------------------------------------- resuming


def test_a_worker_killed_while_booking_resumes_and_books_nothing_twice(
        app, client, acme, database_url, tmp_path):
    """3000 rows; the worker is killed with SIGKILL half-way and started again: every row
    is booked exactly once (a row booked before the kill was recorded with its booking,
    so none comes back as a replay) and the balance is the file's sum."""
    ada = enrol(client, acme, "ada")
    n = 3000
    queued = upload(client, acme, csv_of(*[f"k-{i},earn,{ada},,1,,," for i in range(n)]))
    env = clean_env(tmp_path, COALITION_ENV="testing", COALITION_DATABASE_URL=database_url,
                    COALITION_SECRET_KEY=TEST_SECRET, COALITION_LOG_LEVEL="warning",
                    COALITION_WORKER_POLL="0.05")

    def booked() -> int:
        with read() as session:
            return session.execute(select(func.count()).where(
                BatchRow.batch_id == queued["id"], BatchRow.outcome.is_not(None))).scalar_one()

    with started([str(BIN / "coalition"), "worker"], env, tmp_path / "w1.log",
                 tmp_path) as first:
        deadline = time.monotonic() + 120
        while booked() < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    partway = booked()
    assert 300 <= partway < n, (tmp_path / "w1.log").read_text()
    second = subprocess.run([str(BIN / "coalition"), "worker", "--until-idle"], env=env,
                            cwd=tmp_path, capture_output=True, timeout=600)
    assert second.returncode == 0, second.stderr.decode()
    done = client.get(f"/v1/batches/{queued['id']}", headers=acme).get_json()
    assert (done["status"], done["booked"], done["replayed"], done["refused"]) == (
        "done", n, 0, 0)
    assert balance(client, acme, ada)["available"] == n
    assert entries() == n


@pytest.mark.postgres
def test_two_overlapping_files_booked_at_once_book_each_row_once(client, acme):
    ada = enrol(client, acme, "ada")
    bob = enrol(client, acme, "bob")
    rows = [f"o-{i},earn,{ada if i % 2 else bob},,{i},,," for i in range(1, 201)]
    one = upload(client, acme, csv_of(*rows[:150]))
    two = upload(client, acme, csv_of(*rows[50:]))
    failures: list[BaseException] = []
    flask_app = client.application

    def book(batch_id: int) -> None:
        try:
            with flask_app.app_context():
                while batches.book_some(limit=20, batch_id=batch_id):
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=book, args=(b["id"],)) for b in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    a = client.get(f"/v1/batches/{one['id']}", headers=acme).get_json()
    b = client.get(f"/v1/batches/{two['id']}", headers=acme).get_json()
    assert a["refused"] == b["refused"] == 0
    assert a["booked"] + b["booked"] == 200
    assert a["replayed"] + b["replayed"] == 100
    assert entries() == 200
    total = balance(client, acme, ada)["available"] + balance(client, acme, bob)["available"]
    assert total == sum(range(1, 201))


# --------------------------------------------------------------------------- CLI


def test_the_command_line_uploads_with_progress_and_shows_status_and_results(app, client,
                                                                            acme, tmp_path):
    ada = enrol(client, acme, "ada")
    path = tmp_path / "day.csv"
    path.write_bytes(csv_of(*[f"c-{i},earn,{ada},,2,,," for i in range(300)],
                            f"c-x,burn,{ada},,99999,,,"))
    runner = app.test_cli_runner()
    uploaded = runner.invoke(args=["batch", "upload", "acme", str(path), "--rows", "301"])
    assert uploaded.exit_code == 0, uploaded.output
    assert "booking batch" in uploaded.stderr
    assert "300 booked, 0 replayed, 1 refused, 0 pending" in uploaded.stdout
    batch_id = uploaded.stdout.split()[1].rstrip(":")
    status = runner.invoke(args=["batch", "status", batch_id, "--json"])
    assert '"status": "done"' in status.output
    out = tmp_path / "results.csv"
    got = runner.invoke(args=["batch", "results", batch_id, "-o", str(out)])
    assert got.exit_code == 0, got.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == 301 and rows[-1]["error"] == "insufficient_points"
    refused = runner.invoke(args=["batch", "upload", "acme", str(path), "--rows", "3"])
    assert refused.exit_code != 0 and "301 rows" in refused.output
    assert runner.invoke(args=["batch", "status", "987654"]).exit_code != 0


# --------------------------------------------------------------------------- isolation


def test_a_row_naming_another_partners_transaction_is_refused_as_one_naming_none(
        client, acme, make_partner):
    _, bravo = make_partner("bravo")
    ada = enrol(client, bravo, "ada")
    earn(client, bravo, ada, "theirs", points=50)
    queued = upload(client, acme, csv_of("r-1,earn_reversal,,,5,,,,theirs",
                                         "r-2,earn_reversal,,,5,,,,nosuch",
                                         header=HEADER + ",reference"))
    book_all()
    theirs, ghost = results(client, acme, queued["id"])
    assert theirs["outcome"] == ghost["outcome"] == "refused"
    assert theirs["error"] == ghost["error"] == "not_found"
    assert theirs["message"].replace("theirs", "X") == ghost["message"].replace("nosuch", "X")
    assert balance(client, bravo, ada)["available"] == 50


def test_rows_are_split_into_lanes_that_keep_what_depends_on_what_in_order():
    rows = [(n + 2, {"member_number": m, "partner_member_ref": "", "partner_txn_id": t,
                     "reference": r})
            for n, (m, t, r) in enumerate([
                ("A", "1", ""), ("B", "2", ""), ("A", "3", ""), ("", "4", "2"),
                ("C", "1", ""), ("D", "5", ""), ("E", "6", "")])]
    lanes = batches._lanes(rows, 8)
    lane_of = {line: i for i, lane in enumerate(lanes) for line, _ in lane}
    assert lane_of[2] == lane_of[4] == lane_of[6]   # member A, and txn "1" again (as C)
    assert lane_of[5] == lane_of[3]                 # the reversal of "2" beside it
    for lane in lanes:
        assert [line for line, _ in lane] == sorted(line for line, _ in lane)
    assert len(lanes) > 1
    assert batches._lanes(rows, 1) == [rows]


def test_a_batch_whose_rows_fill_whole_turns_is_finished(app, client, acme):
    """The worker books 2 rows a turn: the turn after the last full one finds no row left
    and marks the batch done."""
    ada = enrol(client, acme, "ada")
    queued = upload(client, acme, csv_of(*[f"f-{i},earn,{ada},,1,,," for i in range(4)]))
    while batches.book_some(limit=2):
        pass
    done = client.get(f"/v1/batches/{queued['id']}", headers=acme).get_json()
    assert (done["status"], done["booked"]) == ("done", 4) and done["finished_at"]


# --------------------------------------------------------------------------- faults


def _failing_earn(monkeypatch, fault: Exception, txn: str = "poison") -> list[str]:
    """Make the earn of row ``txn`` always fail with ``fault``; the calls made, by
    partner_txn_id."""
    calls: list[str] = []
    real = transactions.earn

    def earn_or_fail(partner, data, then):
        calls.append(data["partner_txn_id"])
        if data["partner_txn_id"] == txn:
            raise fault
        return real(partner, data, then)

    monkeypatch.setattr(transactions, "earn", earn_or_fail)
    return calls


def test_a_row_that_always_fails_is_tried_a_few_times_then_refused(app, client, acme,
                                                                   monkeypatch):
    """A database error that is no refusal is tried ROW_ATTEMPTS times with a growing wait,
    then refused as internal_error; the rows around it are booked and the batch finishes."""
    ada = enrol(client, acme, "ada")
    fault = DataError("INSERT INTO entry ...", {}, Exception("value out of range"))
    calls = _failing_earn(monkeypatch, fault)
    waits: list[float] = []
    monkeypatch.setattr(batches, "pause", waits.append)
    queued = upload(client, acme, csv_of(f"ok-1,earn,{ada},,5,,,", f"poison,earn,{ada},,5,,,",
                                         f"ok-2,earn,{ada},,7,,,"))
    book_all()
    assert calls.count("poison") == batches.ROW_ATTEMPTS == 3
    assert waits == [batches.ROW_BACKOFF, batches.ROW_BACKOFF * 2]
    done = client.get(f"/v1/batches/{queued['id']}", headers=acme).get_json()
    assert (done["status"], done["booked"], done["refused"]) == ("done", 2, 1)
    rows = {r["partner_txn_id"]: r for r in results(client, acme, queued["id"])}
    assert rows["poison"]["outcome"] == "refused"
    assert rows["poison"]["error"] == "internal_error"
    assert "value out of range" not in rows["poison"]["message"]  # nothing of the database
    assert balance(client, acme, ada)["available"] == 12


def test_a_row_that_fails_once_is_booked_on_its_second_try(app, client, acme, monkeypatch):
    ada = enrol(client, acme, "ada")
    real, tries = transactions.earn, []

    def flaky(partner, data, then):
        tries.append(1)
        if len(tries) == 1:
            raise OperationalError("UPDATE wallet ...", {}, Exception("deadlock detected"))
        return real(partner, data, then)

    monkeypatch.setattr(transactions, "earn", flaky)
    monkeypatch.setattr(batches, "pause", lambda _seconds: None)
    queued = upload(client, acme, csv_of(f"once,earn,{ada},,9,,,"))
    book_all()
    done = client.get(f"/v1/batches/{queued['id']}", headers=acme).get_json()
    assert (done["booked"], done["refused"], len(tries)) == (1, 0, 2)


def test_a_lost_connection_leaves_the_row_for_the_next_turn(app, client, acme, monkeypatch):
    """The database going away is not the row's fault: the row keeps no outcome and the
    worker's next turn books it."""
    ada = enrol(client, acme, "ada")
    lost = OperationalError("SELECT ...", {}, Exception("server closed the connection"),
                            connection_invalidated=True)
    monkeypatch.setattr(batches, "pause", lambda _seconds: None)
    with monkeypatch.context() as patched:
        _failing_earn(patched, lost, txn="later")
        queued = upload(client, acme, csv_of(f"later,earn,{ada},,4,,,"))
        with pytest.raises(OperationalError):
            batches.book_some()
        pending = client.get(f"/v1/batches/{queued['id']}", headers=acme).get_json()
        assert (pending["status"], pending["pending"]) == ("booking", 1)
    book_all()
    done = client.get(f"/v1/batches/{queued['id']}", headers=acme).get_json()
    assert (done["status"], done["booked"]) == ("done", 1)
