"""Creating, reading and refusing settlement runs (POST/GET /v1/settlement/runs…).

Bookings are on the test's clock (tests/settlement/conftest.py), in the period
[S, S + 10 s); the runs are made once it has ended.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from coalition.db import utcnow
from tests.conftest import bearer, fetch_token, snapshot
from tests.factories.partner_api import assert_error, enrol, post_ok
from tests.factories.settlement import T0, create_run, iso, run_ok

S = T0
E = S + timedelta(seconds=10)
RUNS = "/v1/settlement/runs"


@pytest.fixture
def booked(app, client, make_partner, clock) -> dict[str, Any]:
    """acme with an earn and a burn in [S, E)."""
    clock.set(S - timedelta(minutes=5))
    _, acme = make_partner("acme", valid_from=S - timedelta(days=1))
    member = enrol(client, acme, "ann")
    clock.set(S + timedelta(seconds=1))
    post_ok(client, "/v1/earn", acme, {"member_number": member, "partner_txn_id": "e1",
                                       "points": 100})
    post_ok(client, "/v1/burn", acme, {"member_number": member, "partner_txn_id": "b1",
                                       "points": 40})
    clock.set(E + timedelta(minutes=1))
    return {"acme": acme, "member": member}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("body", "fields"), [
    ({"period_start": iso(E), "period_end": iso(S)}, {"period_end"}),       # before its start
    ({"period_start": iso(S), "period_end": iso(S)}, {"period_end"}),       # empty
    ({"period_start": iso(S), "period_end": "2999-01-01"}, {"period_end"}),  # not ended yet
    ({"period_start": iso(S)}, {"period_end"}),
    ({"period_end": iso(E)}, {"period_start"}),
    ({}, {"period_start", "period_end"}),
    ({"period_start": iso(S), "period_end": iso(E), "currency": "GBP"}, {"currency"}),
    ({"period_start": "2001-03-01T09:00:00", "period_end": iso(E)}, {"period_start"}),  # naive
    ({"period_start": "last monday", "period_end": iso(E)}, {"period_start"}),
    ({"period_start": "2001-02-30", "period_end": iso(E)}, {"period_start"}),
    ({"period_start": 983437200, "period_end": iso(E)}, {"period_start"}),
    ({"period_start": None, "period_end": iso(E)}, {"period_start"}),
    # offsets that put the moment outside the years a timestamp can hold
    ({"period_start": "0001-01-01T00:00:00+01:00", "period_end": iso(E)}, {"period_start"}),
    ({"period_start": iso(S), "period_end": "9999-12-31T23:59:59-01:00"}, {"period_end"}),
])
def test_a_period_must_be_a_past_half_open_interval(app, client, operator_headers, booked,
                                                    body, fields) -> None:
    before = snapshot(app)
    response = client.post(RUNS, headers=operator_headers, json=body)
    assert_error(response, 422, "invalid_request", fields)
    assert snapshot(app) == before


def test_a_period_that_ends_a_moment_from_now_is_refused(app, client, operator_headers,
                                                         booked) -> None:
    end = utcnow().replace(microsecond=0) + timedelta(seconds=2)
    before = snapshot(app)
    assert_error(create_run(client, operator_headers, S, end), 422, "invalid_request",
                 {"period_end"})
    assert snapshot(app) == before


@pytest.mark.parametrize(("content", "content_type"), [
    (b"period_start=2001-03-01", "application/x-www-form-urlencoded"),
    (b"period_start,period_end\n2001-03-01,2001-03-02\n", "text/csv"),
])
def test_a_run_is_asked_for_in_json(app, client, operator_headers, content,
                                    content_type) -> None:
    before = snapshot(app)
    response = client.post(RUNS, headers={**operator_headers, "Content-Type": content_type},
                           data=content)
    assert_error(response, 415, "unsupported_media_type")
    broken = client.post(RUNS, headers={**operator_headers, "Content-Type": "application/json"},
                         data=b'{"period_start": ')
    assert broken.status_code in (400, 422) and broken.get_json()["error"] == "invalid_request"
    assert snapshot(app) == before


def test_timestamps_are_honoured_to_the_second_and_dates_are_midnight(
        client, operator_headers, booked, clock) -> None:
    clock.set(S.replace(hour=0) + timedelta(days=1))  # after the last period settled here
    # the earn and burn at S + 1 s fall in a period given with fractions of a second
    run = client.post(RUNS, headers=operator_headers, json={
        "period_start": "2001-03-01T10:00:00.999+01:00",
        "period_end": "2001-03-01T09:00:10.5Z"}).get_json()
    assert (run["period_start"], run["period_end"]) == (iso(S), iso(E))
    acme = run["statements"][0]
    assert (acme["issued_points"], acme["redeemed_points"]) == (100, 40)
    whole_days = run_ok(client, operator_headers, S.replace(hour=0) - timedelta(days=2),
                        S.replace(hour=0))
    dates = client.post(RUNS, headers=operator_headers, json={
        "period_start": "2001-03-01", "period_end": "2001-03-02"})
    assert dates.status_code == 409  # [03-01, 03-02) overlaps the first run
    assert whole_days["statements"][0]["issued_points"] == 0


# --------------------------------------------------------------------------- overlaps


@pytest.mark.parametrize(("start", "end"), [
    (S, E),                                                     # the same period
    (S + timedelta(seconds=5), E + timedelta(seconds=5)),       # overlapping its end
    (S - timedelta(seconds=5), S + timedelta(seconds=1)),       # overlapping its start
    (S - timedelta(days=1), E + timedelta(days=1)),             # around it
    (S + timedelta(seconds=1), S + timedelta(seconds=2)),       # inside it
    (E - timedelta(seconds=1), E + timedelta(hours=1)),         # its last second
])
def test_overlapping_periods_are_refused(app, client, operator_headers, booked, clock, start,
                                         end) -> None:
    clock.set(E + timedelta(days=1))  # every period here has ended
    first = run_ok(client, operator_headers, S, E)
    before = snapshot(app)
    body = assert_error(create_run(client, operator_headers, start, end), 409,
                        "period_overlap")
    assert str(first["id"]) in body["message"]
    assert snapshot(app) == before


def test_adjacent_periods_are_fine(client, operator_headers, booked) -> None:
    run_ok(client, operator_headers, S, E)
    run_ok(client, operator_headers, E, E + timedelta(seconds=10))
    run_ok(client, operator_headers, S - timedelta(seconds=10), S)
    listed = client.get(RUNS, headers=operator_headers).get_json()
    assert [(r["period_start"], r["period_end"], r["status"]) for r in listed] == [
        (iso(S - timedelta(seconds=10)), iso(S), "draft"), (iso(S), iso(E), "draft"),
        (iso(E), iso(E + timedelta(seconds=10)), "draft")]


def test_a_discarded_draft_frees_its_period(client, operator_headers, booked) -> None:
    first = run_ok(client, operator_headers, S, E)
    gone = client.delete(f"{RUNS}/{first['id']}", headers=operator_headers)
    assert gone.status_code == 204
    assert_error(client.get(f"{RUNS}/{first['id']}", headers=operator_headers), 404,
                 "not_found")
    again = run_ok(client, operator_headers, S, E)
    assert again["digest"] == first["digest"]


@pytest.mark.postgres
def test_concurrent_creates_of_overlapping_periods_make_one_run(
        app, client, operator_headers, booked, clock, monkeypatch) -> None:
    """Both requests pass the overlap check before either inserts (the computation is
    slowed down to make sure): the database's exclusion constraint keeps one."""
    from settlement import service

    clock.set(S + timedelta(seconds=300))  # every period below has ended
    real = service.compute

    def slow(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        time.sleep(0.3)
        return result

    monkeypatch.setattr(service, "compute", slow)

    def create(start: Any, end: Any, barrier: threading.Barrier, out: list[Any]) -> None:
        with app.app_context():
            own = app.test_client()
            barrier.wait()
            response = own.post(RUNS, headers=operator_headers,
                                json={"period_start": iso(start), "period_end": iso(end)})
            out.append((response.status_code, response.get_json()))

    for round_ in range(3):
        base = S + timedelta(seconds=100 * round_)
        periods = [(base, base + timedelta(seconds=10)),
                   (base + timedelta(seconds=5), base + timedelta(seconds=15))]
        barrier, out = threading.Barrier(2), []
        threads = [threading.Thread(target=create, args=(*p, barrier, out)) for p in periods]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        statuses = sorted(status for status, _ in out)
        assert statuses == [201, 409], out
        refused = next(body for status, body in out if status == 409)
        assert refused["error"] == "period_overlap", refused
    runs = client.get(RUNS, headers=operator_headers).get_json()
    assert len(runs) == 3
    spans = sorted((r["period_start"], r["period_end"]) for r in runs)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


# --------------------------------------------------------------------------- pricing


def test_a_booking_before_a_partners_first_rate_card_is_refused(
        app, client, make_partner, clock, operator_headers, booked) -> None:
    """Settlement prices every entry the ledger accepts: late's and shop's first rate cards
    start at S + 5 s, so an earn at late and a burn at shop before then are refused and
    write nothing, and the period stays priced. An earlier card repairs the partner."""
    from partners.service import add_rate_card

    _, late = make_partner("late", valid_from=S + timedelta(seconds=5))
    _, shop = make_partner("shop", valid_from=S + timedelta(seconds=5))
    clock.set(S + timedelta(seconds=2))
    before = snapshot(app)
    for headers, path, body in (
            (late, "/v1/earn", {"points": 10}),
            (late, "/v1/earn", {"spend": {"amount": "10.00", "currency": "GBP"}}),
            (shop, "/v1/burn", {"points": 5}),
            (shop, "/v1/holds", None)):
        if body is None:  # a hold is not priced; its capture is
            hold = post_ok(client, path, headers, {"member_number": booked["member"],
                                                   "partner_txn_id": "h", "points": 5})
            before = snapshot(app)
            path, body = f"/v1/holds/{hold['id']}/capture", {}
        else:
            body = {"member_number": booked["member"], **body}
        response = client.post(path, headers=headers,
                               json={"partner_txn_id": "early", **body})
        assert_error(response, 409, "no_rate_card")
        assert snapshot(app) == before
    clock.set(E)  # the period has ended
    run = run_ok(client, operator_headers, S, E)
    assert [s["partner"] for s in run["statements"] if s["issued_points"]
            or s["redeemed_points"]] == ["acme"]

    # the operator brings late's start forward; then it can earn
    add_rate_card("late", S, issue_price=Decimal("0.02"))
    earned = post_ok(client, "/v1/earn", late, {"member_number": booked["member"],
                                                "partner_txn_id": "early", "points": 10})
    assert earned["points"] == 10


def test_a_rate_card_added_since_changes_a_draft_when_recomputed(
        client, operator_headers, booked) -> None:
    from partners.service import add_rate_card

    run = run_ok(client, operator_headers, S, E)
    same = client.post(f"{RUNS}/{run['id']}/recompute", headers=operator_headers).get_json()
    assert same["digest"] == run["digest"]
    add_rate_card("acme", S + timedelta(seconds=1), issue_price=Decimal("0.02"))
    repriced = client.post(f"{RUNS}/{run['id']}/recompute", headers=operator_headers)
    assert repriced.status_code == 200
    acme = repriced.get_json()["statements"][0]
    assert acme["payable"] == "2.00" and repriced.get_json()["digest"] != run["digest"]


# --------------------------------------------------------------------------- unknown runs


def test_an_unknown_run_is_404_everywhere(app, client, operator_headers, booked) -> None:
    run = run_ok(client, operator_headers, S, E)
    missing = run["id"] + 1
    before = snapshot(app)
    for method, path, kwargs in [
        ("get", f"{RUNS}/{missing}", {}),
        ("get", f"{RUNS}/{missing}/statements/acme", {}),
        ("get", f"{RUNS}/{missing}/matrix", {}),
        ("get", f"{RUNS}/{missing}/payments", {}),
        ("get", f"{RUNS}/{missing}/export", {}),
        ("get", f"{RUNS}/{missing}/breaks", {}),
        ("post", f"{RUNS}/{missing}/recompute", {}),
        ("post", f"{RUNS}/{missing}/close", {}),
        ("delete", f"{RUNS}/{missing}", {}),
        ("post", f"{RUNS}/{missing}/breaks/1", {"json": {"action": "accept",
                                                         "reason": "because"}}),
        ("post", f"{RUNS}/{missing}/reconciliations/acme",
         {"data": b"partner_txn_id,type,member_number,points,occurred_at\n",
          "content_type": "text/csv"}),
        ("get", f"{RUNS}/{run['id']}/statements/nobody", {}),
    ]:
        response = getattr(client, method)(path, headers=operator_headers, **kwargs)
        assert_error(response, 404, "not_found")
    assert snapshot(app) == before
    # a path that is not a run id at all
    assert client.get(f"{RUNS}/abc", headers=operator_headers).status_code == 404


def test_finance_only(app, client, operator_headers, booked) -> None:
    from coalition.oauth.clients import create_operator_client

    run = run_ok(client, operator_headers, S, E)
    admin = create_operator_client(["admin"], name="admin only")
    admin_headers = bearer(fetch_token(client, admin.client_id, admin.client_secret))
    before = snapshot(app)
    for headers, status in [({}, 401), ({"Authorization": "Bearer nonsense"}, 401),
                            (admin_headers, 403), (booked["acme"], 403)]:
        assert client.get(f"{RUNS}/{run['id']}", headers=headers).status_code == status
        assert client.post(RUNS, headers=headers, json={
            "period_start": iso(E), "period_end": iso(E + timedelta(seconds=1))}
        ).status_code == status
        assert client.post(f"{RUNS}/{run['id']}/close", headers=headers).status_code == status
    assert snapshot(app) == before
