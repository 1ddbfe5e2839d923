"""Reconciliation of partners' files against a run, resolving breaks, closing, the CLI,
and what partners may read.

Every test books on the test's clock (tests/settlement/conftest.py): the period is [S, E)
with S = T0 and E = S + 10 s, booked through the partner API.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from coalition.db import read
from coalition.ledger.check import check_ledger
from coalition.models import Partner
from partners import webhooks
from partners.funding import configure, funding
from partners.models import WebhookEvent
from tests.conftest import post_short, snapshot
from tests.factories.partner_api import (
    assert_error,
    bad_check_digit,
    earn,
    enrol,
    post_ok,
    publish,
)
from tests.factories.settlement import (
    CSV_HEADER,
    T0,
    csv_rows,
    iso,
    partner_reader,
    resolve,
    run_ok,
    upload,
)

S = T0
E = S + timedelta(seconds=10)
AT = iso(S + timedelta(seconds=1))  # an occurred_at inside the period


@dataclass
class Period:
    """acme (GBP) and beta (EUR); ann and bob; a draft run of [S, E).

    acme's journal in the period: e1 earn ann 100, e2 earn bob 50, b1 burn ann 30,
    c1 capture of a hold on bob (20 of 25), e3 earn ann 40 and e3r its reversal of 10.
    Before the period: old1 earn ann 500 at acme. beta: e1 earn bob 7 (same txn id as
    acme's, another partner's) and bb1 burn ann 5 (acme's points, spent at beta).
    """

    run: dict[str, Any]
    acme: dict[str, str]
    beta: dict[str, str]
    ann: str
    bob: str
    ids: dict[str, int]

    @property
    def id(self) -> int:
        return self.run["id"]

    def full_file(self) -> list[tuple[Any, ...]]:
        """acme's own record, agreeing with the journal."""
        return [("e1", "earn", self.ann, 100, AT), ("e2", "earn", self.bob, 50, AT),
                ("b1", "burn", self.ann, 30, AT), ("c1", "hold_capture", self.bob, 20, AT),
                ("e3", "earn", self.ann, 40, AT), ("e3r", "earn_reversal", self.ann, 10, AT)]

    def file_without(self, *txns: str, **changes: tuple[Any, ...]) -> str:
        rows = [changes.get(r[0], r) for r in self.full_file() if r[0] not in txns]
        return csv_rows(*rows)


@pytest.fixture
def period(app, client, make_partner, clock, operator_headers) -> Period:
    clock.set(S - timedelta(hours=1))
    _, acme = make_partner("acme", valid_from=S - timedelta(days=1))
    _, beta = make_partner("beta", currency="EUR", valid_from=S - timedelta(days=1))
    ann, bob = enrol(client, acme, "ann"), enrol(client, acme, "bob")
    ids: dict[str, int] = {}

    def book(path: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        result = post_ok(client, path, headers, body)
        prefix = "beta:" if headers is beta else ""
        ids[prefix + body["partner_txn_id"]] = result["id"]
        return result

    book("/v1/earn", acme, {"member_number": ann, "partner_txn_id": "old1", "points": 500})
    clock.set(S)
    book("/v1/earn", acme, {"member_number": ann, "partner_txn_id": "e1", "points": 100})
    book("/v1/earn", acme, {"member_number": bob, "partner_txn_id": "e2", "points": 50})
    book("/v1/burn", acme, {"member_number": ann, "partner_txn_id": "b1", "points": 30})
    held = book("/v1/holds", acme, {"member_number": bob, "partner_txn_id": "h1",
                                    "points": 25})
    book(f"/v1/holds/{held['id']}/capture", acme, {"partner_txn_id": "c1", "points": 20})
    e3 = book("/v1/earn", acme, {"member_number": ann, "partner_txn_id": "e3", "points": 40})
    book(f"/v1/transactions/{e3['id']}/reversals", acme, {"partner_txn_id": "e3r",
                                                          "points": 10})
    book("/v1/earn", beta, {"member_number": bob, "partner_txn_id": "e1", "points": 7})
    book("/v1/burn", beta, {"member_number": ann, "partner_txn_id": "bb1", "points": 5})
    clock.set(E + timedelta(minutes=1))  # what finance books now lands after the period
    run = run_ok(client, operator_headers, S, E)
    return Period(run, acme, beta, ann, bob, ids)


def reconciled(client, headers, period: Period, content: str | bytes,
               partner: str = "acme") -> dict[str, Any]:
    response = upload(client, headers, period.id, partner, content)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def breaks_by_txn(report: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {b["partner_txn_id"]: b for b in report["breaks"]}


def entry(app, entry_id: int) -> dict[str, Any]:
    from sqlalchemy import select

    from coalition.db import read
    from coalition.ledger.models import Entry

    with read() as session:
        e = session.scalars(select(Entry).where(Entry.id == entry_id)).one()
        return {"kind": e.kind, "points": e.points, "reference_id": e.reference_id,
                "occurred_at": e.occurred_at, "booked_at": e.booked_at,
                "partner_txn_id": e.partner_txn_id, "member_id": e.member_id}


# --------------------------------------------------------------------------- classes


def test_a_file_that_agrees_is_all_matched(client, operator_headers, period) -> None:
    report = reconciled(client, operator_headers, period, csv_rows(*period.full_file()))
    assert report["summary"] == {"matched": 6, "adjusted": 0, "points_mismatch": 0,
                                 "missing_in_ledger": 0,
                                 "missing_in_file": 0, "duplicated_in_file": 0, "malformed": 0}
    assert report["breaks"] == [] and report["rows"] == 6
    assert report["partner"] == "acme" and report["run"] == period.id
    # beta's own e1 is beta's: acme's file is matched against acme's journal only
    beta = reconciled(client, operator_headers, period,
                      csv_rows(("e1", "earn", period.bob, 7, AT),
                               ("bb1", "burn", period.ann, 5, AT)), partner="beta")
    assert beta["summary"]["matched"] == 2 and beta["breaks"] == []


def test_every_class_of_break(client, operator_headers, period) -> None:
    content = csv_rows(
        ("e1", "earn", period.ann, 100, AT),          # 2 matched
        ("e2", "earn", period.bob, 60, AT),           # 3 points mismatch
        ("x1", "earn", period.ann, 70, AT),           # 4 missing in the ledger
        ("old1", "earn", period.ann, 500, AT),        # 5 booked in another period
        ("e1", "earn", period.ann, 100, AT),          # 6 duplicated in the file
        ("c1", "hold_capture", period.bob, 20, AT),   # 7 matched
        ("e3", "burn", period.ann, 40, AT),           # 8 type differs: a mismatch too
        ("e3r", "earn_reversal", period.bob, 10, AT),  # 9 member differs
        ("bad", "earn", period.ann, "x", AT),         # 10 malformed
    )  # b1 is not in the file
    report = reconciled(client, operator_headers, period, content)
    assert report["summary"] == {"matched": 2, "adjusted": 0, "points_mismatch": 3,
                                 "missing_in_ledger": 2,
                                 "missing_in_file": 1, "duplicated_in_file": 1, "malformed": 1}
    assert report["rows"] == 9
    found = sorted((b["kind"], b["partner_txn_id"], b["line"]) for b in report["breaks"])
    assert found == sorted([
        ("points_mismatch", "e2", 3), ("missing_in_ledger", "x1", 4),
        ("missing_in_ledger", "old1", 5), ("duplicated_in_file", "e1", 6),
        ("points_mismatch", "e3", 8), ("points_mismatch", "e3r", 9),
        ("malformed", "bad", 10), ("missing_in_file", "b1", None)])
    assert all(b["status"] == "open" and b["resolved_by"] is None for b in report["breaks"])
    by_line = {b["line"]: b for b in report["breaks"]}
    assert by_line[3]["details"]["fields"] == ["points"]
    assert by_line[3]["details"]["ledger"]["points"] == 50
    assert by_line[3]["details"]["file"]["points"] == 60
    assert by_line[8]["details"]["fields"] == ["type"]
    assert by_line[9]["details"]["fields"] == ["member_number"]
    assert "booked_in_another_period" not in by_line[4]["details"]
    elsewhere = by_line[5]["details"]["booked_in_another_period"]
    assert elsewhere["entry_id"] == period.ids["old1"]
    assert datetime.fromisoformat(elsewhere["booked_at"]) < S
    assert by_line[6]["details"]["first_line"] == 2
    missing = next(b for b in report["breaks"] if b["kind"] == "missing_in_file")
    assert missing["details"]["ledger"]["entry_id"] == period.ids["b1"]
    assert missing["details"]["ledger"]["points"] == 30
    # the run counts them, and they are listed by status
    run = client.get(f"/v1/settlement/runs/{period.id}", headers=operator_headers).get_json()
    assert run["open_breaks"] == 8
    listed = client.get(f"/v1/settlement/runs/{period.id}/breaks?status=open",
                        headers=operator_headers).get_json()
    assert sorted(b["id"] for b in listed) == sorted(b["id"] for b in report["breaks"])
    assert client.get(f"/v1/settlement/runs/{period.id}/breaks?status=accepted",
                      headers=operator_headers).get_json() == []


def test_malformed_rows_are_reported_by_line(client, operator_headers, period) -> None:
    ann = period.ann
    bad = [  # (row, a fragment of its error)
        f"p1,earn,{ann},abc,{AT}", "points",
        f"p2,earn,{ann},0,{AT}", "points",
        f"p3,earn,{ann},-5,{AT}", "points",
        f"p4,earn,{ann},1.5,{AT}", "points",
        f"p5,earn,{ann},\u00b2,{AT}", "points",          # a superscript two
        f"p6,earn,{ann},\u0661\u0662,{AT}", "points",    # Arabic-Indic digits
        f"p7,earn,{ann},{'9' * 5000},{AT}", "points",    # more digits than int() reads
        f"p8,earn,{ann},{2**53},{AT}", "points",
        f"d1,earn,{ann},5,2001-02-30T00:00:00Z", "occurred_at",
        f"d2,earn,{ann},5,yesterday", "occurred_at",
        f"d3,earn,{ann},5,0001-01-01T00:00:00+01:00", "occurred_at",  # before year 1 in UTC
        f"d4,earn,{ann},5,9999-12-31T23:59:59-01:00", "occurred_at",  # after 9999 in UTC
        f"d5,earn,{ann},5,", "occurred_at",
        f"n1,earn,{ann},5,2001-03-01T09:00:01", "UTC offset",  # naive
        f"t1,refund,{ann},5,{AT}", "type",
        f"t2,EARN,{ann},5,{AT}", "type",
        f"m1,earn,{bad_check_digit(ann)},5,{AT}", "member_number",
        f"m2,earn,123,5,{AT}", "member_number",
        f"m3,earn,{ann[:-1]}\u0661,5,{AT}", "member_number",
        f",earn,{ann},5,{AT}", "partner_txn_id",
        f"{'x' * 65},earn,{ann},5,{AT}", "partner_txn_id",
        f"a\x00b,earn,{ann},5,{AT}", "partner_txn_id",      # a NUL (PostgreSQL stores none)
        f"caf\u00e9,earn,{ann},5,{AT}", "partner_txn_id",   # not an id the API takes
        f"a b,earn,{ann},5,{AT}", "partner_txn_id",
        f"f1,earn,{ann},5", "Expected 5 fields, found 4",
        f"f2,earn,{ann},5,{AT},extra", "Expected 5 fields, found 6",
        f'q1,"ea"rn,{ann},5,{AT}', "expected after",     # a quote inside a quoted field
        "x" * 200_000, "field limit",                     # a huge line
    ]
    rows, expected = bad[0::2], bad[1::2]
    good = f"e1,earn,{ann},100,{AT}"
    # the good row first, a blank line (lines count as in the file), then one bad row per line
    content = CSV_HEADER + good + "\n\n" + "".join(r + "\n" for r in rows)
    report = reconciled(client, operator_headers, period, content)
    malformed = {b["line"]: b for b in report["breaks"] if b["kind"] == "malformed"}
    assert sorted(malformed) == list(range(4, 4 + len(rows)))
    for n, fragment in enumerate(expected):
        errors = " ".join(malformed[4 + n]["details"]["errors"])
        assert fragment in errors, (rows[n][:80], errors)
    # the row's id is reported when it is one
    assert malformed[4]["partner_txn_id"] == "p1"
    assert all(b["partner_txn_id"] is None for b in malformed.values()
               if "partner_txn_id" in " ".join(b["details"]["errors"]))
    assert report["summary"]["matched"] == 1
    assert report["summary"]["malformed"] == len(rows)
    assert report["rows"] == 1 + len(rows)


def test_an_unterminated_quote_is_reported_where_it_starts(client, operator_headers,
                                                           period) -> None:
    ann = period.ann
    content = (CSV_HEADER + f"e1,earn,{ann},100,{AT}\n" + f'e2,"earn,{ann},50,{AT}\n'
               + f"b1,burn,{ann},30,{AT}\n")
    report = reconciled(client, operator_headers, period, content)
    malformed = [b for b in report["breaks"] if b["kind"] == "malformed"]
    assert [b["line"] for b in malformed] == [3]  # not the line where the file ran out


@pytest.mark.parametrize("variant", ["crlf", "bom", "reordered", "quoted", "header_only"])
def test_files_that_are_fine(client, operator_headers, period, variant) -> None:
    rows = period.full_file()
    if variant == "crlf":
        content = csv_rows(*rows).replace("\n", "\r\n")
    elif variant == "bom":
        content = "\ufeff" + csv_rows(*rows)
    elif variant == "reordered":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([" Points", "OCCURRED_AT", "type", "member_number", "partner_txn_id"])
        writer.writerows([(r[3], r[4], r[1], r[2], r[0]) for r in rows])
        content = out.getvalue()
    elif variant == "quoted":
        out = io.StringIO()
        csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(
            [CSV_HEADER.strip().split(","), *rows])
        content = out.getvalue()
    else:
        content = CSV_HEADER
    report = reconciled(client, operator_headers, period, content)
    if variant == "header_only":
        assert report["summary"]["missing_in_file"] == 6 and report["rows"] == 0
    else:
        assert report["summary"]["matched"] == 6 and report["breaks"] == []


HEADER = CSV_HEADER.encode()


@pytest.mark.parametrize(("name", "content", "content_type", "status", "error"), [
    ("empty", b"", "text/csv", 422, "invalid_request"),
    ("blank", b"\n\n", "text/csv", 422, "invalid_request"),
    ("no header", b"e1,earn,123456789012,5,2001-03-01\n", "text/csv", 422, "invalid_request"),
    ("missing column", b"partner_txn_id,type,member_number,points\n", "text/csv", 422,
     "invalid_request"),
    ("extra column", HEADER.strip() + b",note\n", "text/csv", 422, "invalid_request"),
    ("repeated column",
     b"partner_txn_id,type,member_number,points,points\n", "text/csv", 422, "invalid_request"),
    ("quoting error in the header", b'"partner_txn_id,type\n', "text/csv", 422,
     "invalid_request"),
    ("not UTF-8", HEADER + "e1,earn,caf\u00e9,5,2001-03-01\n".encode("latin-1"), "text/csv",
     422, "invalid_request"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x01", "text/csv", 422,
     "invalid_request"),
    ("UTF-16", CSV_HEADER.encode("utf-16"), "text/csv", 422, "invalid_request"),
    ("JSON", b'{"rows": []}', "application/json", 415, "unsupported_media_type"),
    ("plain text", HEADER, "text/plain", 415, "unsupported_media_type"),
    ("form", b"a=b", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("too large", HEADER + b"x" * (1024 * 1024 + 1), "text/csv", 413, "payload_too_large"),
])
def test_unreadable_files_are_refused_cleanly(app, client, operator_headers, period,
                                              name, content, content_type, status, error):
    before = snapshot(app)
    response = upload(client, operator_headers, period.id, "acme", content, content_type)
    assert_error(response, status, error)
    assert snapshot(app) == before


def test_garbage_never_makes_a_500(client, operator_headers, period) -> None:
    import random

    rng = random.Random(20010301)
    for n in range(40):
        size = rng.choice([1, 10, 200, 5000])
        if n % 2:
            body = HEADER + bytes(rng.randrange(256) for _ in range(size))
        else:  # text that looks almost right
            alphabet = "e1,burn\"\n\r 0123456789-:TZ+.\u00b2\u0661\x00"
            body = HEADER + "".join(rng.choice(alphabet) for _ in range(size)).encode()
        response = upload(client, operator_headers, period.id, "acme", body)
        assert response.status_code in (201, 422), (body[:100], response.get_data(as_text=True))
        if response.status_code == 422:
            assert_error(response, 422, "invalid_request")


def test_unknown_run_or_partner(client, operator_headers, period) -> None:
    content = csv_rows(*period.full_file())
    assert_error(upload(client, operator_headers, period.id + 1, "acme", content), 404,
                 "not_found")
    assert_error(upload(client, operator_headers, period.id, "nobody", content), 404,
                 "not_found")


# --------------------------------------------------------------------------- resolution


def test_accept_records_reason_and_user(app, client, operator, operator_headers,
                                        period) -> None:
    report = reconciled(client, operator_headers, period,
                        period.file_without(e2=("e2", "earn", period.bob, 60, AT),
                                            e1=("e1", "earn", period.ann, 90, AT)))
    found = breaks_by_txn(report)
    done = resolve(client, operator_headers, period.id, found["e2"]["id"], "accept",
                   "the till double-counted a coupon", user="alice@finance")
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert (body["status"], body["resolved_by"], body["reason"]) == (
        "accepted", "alice@finance", "the till double-counted a coupon")
    assert body["resolved_at"] and body["adjustment_entry_id"] is None
    # without a user, the calling client is the one who resolved it
    other = resolve(client, operator_headers, period.id, found["e1"]["id"], "accept").get_json()
    assert other["resolved_by"] == operator["client_id"]
    # a break is resolved once
    before = snapshot(app)
    again = resolve(client, operator_headers, period.id, found["e2"]["id"], "adjust")
    assert_error(again, 409, "break_resolved")
    assert_error(resolve(client, operator_headers, period.id, found["e2"]["id"], "accept"),
                 409, "break_resolved")
    assert snapshot(app) == before


@pytest.mark.parametrize(("body", "fields"), [
    ({"action": "accept"}, {"reason"}),
    ({"action": "accept", "reason": "ok"}, {"reason"}),
    ({"action": "ignore", "reason": "because"}, {"action"}),
    ({"action": "accept", "reason": "because", "user": ""}, {"user"}),
    ({"action": "accept", "reason": "because", "extra": 1}, {"extra"}),
])
def test_a_resolution_needs_an_action_and_a_reason(app, client, operator_headers, period,
                                                   body, fields) -> None:
    report = reconciled(client, operator_headers, period, period.file_without("b1"))
    before = snapshot(app)
    response = client.post(f"/v1/settlement/runs/{period.id}/breaks/{report['breaks'][0]['id']}",
                           headers=operator_headers, json=body)
    assert_error(response, 422, "invalid_request", fields)
    assert snapshot(app) == before


def test_unknown_breaks(client, operator_headers, period) -> None:
    report = reconciled(client, operator_headers, period, period.file_without("b1"))
    break_id = report["breaks"][0]["id"]
    assert_error(resolve(client, operator_headers, period.id, break_id + 100, "accept"), 404,
                 "not_found")
    assert_error(resolve(client, operator_headers, period.id + 1, break_id, "accept"), 404,
                 "not_found")


def _adjusted(app, client, operator_headers, period, break_: dict[str, Any]
              ) -> dict[str, Any]:
    response = resolve(client, operator_headers, period.id, break_["id"], "adjust",
                       "booked the difference", user="bea@finance")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "adjusted" and body["resolved_by"] == "bea@finance"
    assert body["adjustment_entry_id"] is not None
    return entry(app, body["adjustment_entry_id"])


@pytest.mark.parametrize(("txn", "file_points", "kind", "points"), [
    ("e2", 60, "earn", 10),            # the partner says it earned more: earn the rest
    ("e2", 45, "earn_reversal", 5),    # less: take it back
    ("b1", 35, "burn", 5),             # a burn: burn the rest
    ("b1", 25, "burn_reversal", 5),    # or give it back
    ("c1", 26, "burn", 6),             # a capture's difference is a burn
    ("c1", 15, "burn_reversal", 5),
])
def test_adjust_a_points_mismatch(app, client, operator_headers, period, clock, txn,
                                  file_points, kind, points) -> None:
    original = next(r for r in period.full_file() if r[0] == txn)
    changed = (txn, original[1], original[2], file_points, AT)
    report = reconciled(client, operator_headers, period, period.file_without(**{txn: changed}))
    (brk,) = report["breaks"]
    assert brk["kind"] == "points_mismatch"
    booked = _adjusted(app, client, operator_headers, period, brk)
    assert (booked["kind"], booked["points"]) == (kind, points)
    assert booked["booked_at"] == clock.now  # in the open period, after this one
    if kind.endswith("_reversal"):
        assert booked["reference_id"] == period.ids[txn]
    else:
        assert booked["occurred_at"] == datetime.fromisoformat(AT)
    # the run itself is not changed by its adjustments: they land in the next period
    run = client.get(f"/v1/settlement/runs/{period.id}", headers=operator_headers).get_json()
    assert run["digest"] == period.run["digest"] and run["open_breaks"] == 0


def test_adjusting_a_missing_earn_books_it_late_in_the_next_period(
        app, client, operator_headers, period, clock) -> None:
    occurred = S + timedelta(seconds=5)
    report = reconciled(client, operator_headers, period, csv_rows(
        *period.full_file(), ("x1", "earn", period.ann, 70, iso(occurred))))
    (brk,) = report["breaks"]
    assert brk["kind"] == "missing_in_ledger"
    booked = _adjusted(app, client, operator_headers, period, brk)
    assert (booked["kind"], booked["points"], booked["occurred_at"]) == ("earn", 70, occurred)
    assert booked["booked_at"] >= E
    closed = client.post(f"/v1/settlement/runs/{period.id}/close", headers=operator_headers)
    assert closed.status_code == 200 and closed.get_json()["digest"] == period.run["digest"]
    # the next period carries it, flagged with the partner's occurred_at
    end = clock.set(clock.now.replace(microsecond=0) + timedelta(seconds=1))  # once ended
    following = run_ok(client, operator_headers, E, end)
    acme = next(s for s in following["statements"] if s["partner"] == "acme")
    assert acme["issued_points"] == 70
    assert acme["late_entries"]["count"] == 1
    late = acme["late_entries"]["entries"][0]
    assert late["partner_txn_id"] == f"adj-{brk['id']}-x1"
    assert datetime.fromisoformat(late["occurred_at"]) == occurred


@pytest.mark.parametrize(("txn", "kind", "points"), [("b1", "burn_reversal", 30),
                                                     ("e1", "earn_reversal", 100)])
def test_adjusting_a_record_missing_in_the_file_reverses_it(
        app, client, operator_headers, period, txn, kind, points) -> None:
    report = reconciled(client, operator_headers, period, period.file_without(txn))
    (brk,) = report["breaks"]
    assert brk["kind"] == "missing_in_file"
    booked = _adjusted(app, client, operator_headers, period, brk)
    assert (booked["kind"], booked["points"], booked["reference_id"]) == (
        kind, points, period.ids[txn])


def test_what_cannot_be_adjusted_must_be_accepted(app, client, operator_headers,
                                                  period) -> None:
    content = csv_rows(
        *period.full_file(),
        ("old1", "earn", period.ann, 500, AT),              # booked in another period
        ("e1", "earn", period.ann, 100, AT),                # duplicated
        ("r9", "earn_reversal", period.ann, 5, AT),         # a reversal missing in the ledger
        ("bad", "earn", period.ann, "x", AT),               # malformed
    ).replace(f"e3,earn,{period.ann}", f"e3,burn,{period.ann}")  # type differs
    report = reconciled(client, operator_headers, period, content)
    assert len(report["breaks"]) == 5
    before = snapshot(app)
    for brk in report["breaks"]:
        response = resolve(client, operator_headers, period.id, brk["id"], "adjust")
        assert_error(response, 422, "invalid_request")
    assert snapshot(app) == before
    for brk in report["breaks"]:
        assert resolve(client, operator_headers, period.id, brk["id"], "accept").status_code \
            == 200


def test_an_adjustment_the_ledger_refuses_leaves_the_break_open(
        app, client, operator_headers, period) -> None:
    # bob has 50 − 25 + 5 = 30 points: a burn of 200 more cannot be booked
    report = reconciled(client, operator_headers, period, period.file_without(
        c1=("c1", "hold_capture", period.bob, 220, AT)))
    (brk,) = report["breaks"]
    before = snapshot(app)
    assert_error(resolve(client, operator_headers, period.id, brk["id"], "adjust"), 409,
                 "insufficient_points")
    assert snapshot(app) == before
    assert resolve(client, operator_headers, period.id, brk["id"], "accept").status_code == 200


# --------------------------------------------------------------------------- resolved once


LEDGER_TABLES = ("entry", "posting", "lot", "lot_movement", "wallet", "member", "hold")


def ledger_of(state: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {t: rows for t, rows in state.items() if t in LEDGER_TABLES}


def test_an_adjusted_missing_earn_is_resolved_once(app, client, operator_headers, period,
                                                   clock) -> None:
    # the partner's file has a 250-point earn the ledger never booked
    content = csv_rows(*period.full_file(), ("x1", "earn", period.ann, 250, AT))
    (brk,) = reconciled(client, operator_headers, period, content)["breaks"]
    assert brk["kind"] == "missing_in_ledger"
    booked = _adjusted(app, client, operator_headers, period, brk)
    assert (booked["kind"], booked["points"]) == ("earn", 250)
    adjustment_id = resolve_listed(client, operator_headers, period, brk["id"])[
        "adjustment_entry_id"]
    after_adjusting = snapshot(app)

    # the same file again: x1 is shown adjusted by that entry, not as a new break
    again = reconciled(client, operator_headers, period, content)
    assert again["summary"]["adjusted"] == 1 and again["summary"]["missing_in_ledger"] == 0
    assert again["summary"]["matched"] == 6
    (row,) = again["breaks"]
    assert (row["kind"], row["partner_txn_id"], row["status"]) == (
        "missing_in_ledger", "x1", "adjusted")
    assert row["adjustment_entry_id"] == adjustment_id
    assert row["resolved_by"] == "bea@finance"
    assert row["details"]["adjusted_by"] == {"entry_id": adjustment_id, "break_id": brk["id"],
                                             "points": 250}
    run = client.get(f"/v1/settlement/runs/{period.id}", headers=operator_headers).get_json()
    assert run["open_breaks"] == 0
    # and it cannot be adjusted (or accepted) again: the ledger keeps one 250-point earn
    before = snapshot(app)
    assert ledger_of(before) == ledger_of(after_adjusting)
    assert_error(resolve(client, operator_headers, period.id, row["id"], "adjust"), 409,
                 "break_resolved")
    assert_error(resolve(client, operator_headers, period.id, row["id"], "accept"), 409,
                 "break_resolved")
    assert snapshot(app) == before

    # the next period: the partner's file is right (x1 was the last period's), and the
    # adjustment booked in this period is matched to it, not missing in the file
    assert client.post(f"/v1/settlement/runs/{period.id}/close",
                       headers=operator_headers).status_code == 200
    end = clock.set(clock.now.replace(microsecond=0) + timedelta(seconds=1))  # once ended
    following = run_ok(client, operator_headers, E, end)
    nxt = upload(client, operator_headers, following["id"], "acme", CSV_HEADER)
    assert nxt.status_code == 201, nxt.get_json()
    report = nxt.get_json()
    assert report["breaks"] == []
    assert report["summary"]["matched"] == 1 and report["summary"]["missing_in_file"] == 0


def test_a_deleted_draft_keeps_its_adjustments_corrected(app, client, operator_headers,
                                                         period) -> None:
    content = csv_rows(*period.full_file(), ("x1", "earn", period.ann, 250, AT))
    (brk,) = reconciled(client, operator_headers, period, content)["breaks"]
    booked = _adjusted(app, client, operator_headers, period, brk)
    deleted = client.delete(f"/v1/settlement/runs/{period.id}", headers=operator_headers)
    assert deleted.status_code == 204, deleted.get_data(as_text=True)
    # the correcting entry stays in the journal, and so does its link: a new run of the
    # period shows x1 as adjusted, and it cannot be corrected a second time
    again = run_ok(client, operator_headers, S, E)
    report = upload(client, operator_headers, again["id"], "acme", content).get_json()
    (row,) = report["breaks"]
    assert (row["status"], row["partner_txn_id"], row["resolved_by"]) == (
        "adjusted", "x1", "bea@finance")
    assert row["details"]["adjusted_by"] == {"entry_id": row["adjustment_entry_id"],
                                             "break_id": None, "points": 250}
    assert entry(app, row["adjustment_entry_id"]) == booked
    before = snapshot(app)
    assert_error(resolve(client, operator_headers, again["id"], row["id"], "adjust"), 409,
                 "break_resolved")
    assert snapshot(app) == before


def resolve_listed(client, headers, period: Period, break_id: int) -> dict[str, Any]:
    listed = client.get(f"/v1/settlement/runs/{period.id}/breaks", headers=headers).get_json()
    return next(b for b in listed if b["id"] == break_id)


def test_an_adjusted_points_difference_is_shown_adjusted_on_the_next_upload(
        app, client, operator_headers, period) -> None:
    content = period.file_without(e2=("e2", "earn", period.bob, 60, AT))
    (brk,) = reconciled(client, operator_headers, period, content)["breaks"]
    booked = _adjusted(app, client, operator_headers, period, brk)
    assert (booked["kind"], booked["points"]) == ("earn", 10)
    again = reconciled(client, operator_headers, period, content)
    (row,) = again["breaks"]
    assert (row["kind"], row["status"], row["partner_txn_id"]) == (
        "points_mismatch", "adjusted", "e2")
    assert again["summary"]["adjusted"] == 1 and again["summary"]["points_mismatch"] == 0
    # the partner changes its mind again: a new break, which says what corrected it before
    # and cannot be corrected a second time (accept it, and settle it with the partner)
    third = reconciled(client, operator_headers, period,
                       period.file_without(e2=("e2", "earn", period.bob, 70, AT)))
    (changed,) = third["breaks"]
    assert (changed["kind"], changed["status"]) == ("points_mismatch", "open")
    assert changed["details"]["adjusted_by"]["points"] == 10
    before = snapshot(app)
    assert_error(resolve(client, operator_headers, period.id, changed["id"], "adjust"), 422,
                 "invalid_request")
    assert snapshot(app) == before


def test_a_reversed_record_missing_in_the_file_is_shown_adjusted(
        app, client, operator_headers, period) -> None:
    content = period.file_without("b1")
    (brk,) = reconciled(client, operator_headers, period, content)["breaks"]
    booked = _adjusted(app, client, operator_headers, period, brk)
    assert (booked["kind"], booked["points"]) == ("burn_reversal", 30)
    again = reconciled(client, operator_headers, period, content)
    (row,) = again["breaks"]
    assert (row["kind"], row["status"], row["partner_txn_id"]) == (
        "missing_in_file", "adjusted", "b1")
    assert again["summary"]["missing_in_file"] == 0 and again["summary"]["adjusted"] == 1


def test_every_resolution_is_audited_with_its_entry(app, client, operator_headers,
                                                    period) -> None:
    from sqlalchemy import select

    from coalition.audit.models import AuditEvent
    from coalition.db import read

    report = reconciled(client, operator_headers, period, period.file_without(
        "b1", e2=("e2", "earn", period.bob, 60, AT)))
    found = breaks_by_txn(report)
    adjusted = resolve(client, operator_headers, period.id, found["e2"]["id"], "adjust",
                       user="bea@finance").get_json()
    accepted = resolve(client, operator_headers, period.id, found["b1"]["id"], "accept",
                       user="bea@finance").get_json()
    with read() as session:
        events = session.execute(select(AuditEvent.action, AuditEvent.target,
                                        AuditEvent.details)
                                 .where(AuditEvent.action.like("settlement.break_%"))
                                 .order_by(AuditEvent.id)).all()
    assert [(a, subject, d["adjustment_entry_id"]) for a, subject, d in events] == [
        ("settlement.break_adjusted", f"break:{adjusted['id']}",
         adjusted["adjustment_entry_id"]),
        ("settlement.break_accepted", f"break:{accepted['id']}", None)]


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["accept", "adjust"])
def test_accept_and_adjust_at_the_same_moment_one_wins(app, client, operator_headers, period,
                                                       first) -> None:
    """Both resolutions wait on the break's row lock, queued in a known order; the first
    resolves it, the second answers 409 break_resolved and books nothing."""
    import threading
    import time as clock_time

    from sqlalchemy import select, text

    from coalition.audit.models import AuditEvent
    from coalition.db import db, read
    from coalition.errors import CoalitionError
    from settlement import reconcile

    (brk,) = reconciled(client, operator_headers, period, period.file_without(
        e2=("e2", "earn", period.bob, 60, AT)))["breaks"]
    before = snapshot(app)
    second = "adjust" if first == "accept" else "accept"
    answers: dict[str, Any] = {}

    def resolver(action: str) -> None:
        with app.app_context():
            try:
                answers[action] = reconcile.resolve(period.id, brk["id"], action,
                                                    f"{action} it", "bea@finance")
            except CoalitionError as exc:
                answers[action] = exc

    def waiting(conn: Any) -> int:
        # a transaction of its own each time: the activity view is a snapshot per transaction
        count = conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one()
        conn.rollback()
        return count

    with app.app_context():
        holder = db.engine.connect()
        watcher = db.engine.connect()
        try:
            holder.execute(text("SELECT id FROM settlement_break WHERE id = :id FOR UPDATE"),
                           {"id": brk["id"]})
            threads = []
            for n, action in enumerate((first, second), start=1):
                thread = threading.Thread(target=resolver, args=(action,), daemon=True)
                thread.start()
                threads.append(thread)
                deadline = clock_time.monotonic() + 10
                while waiting(watcher) < n:  # queued behind the holder, in this order
                    assert clock_time.monotonic() < deadline, f"{action} never waited"
                    clock_time.sleep(0.02)
        finally:
            holder.rollback()
            holder.close()
            watcher.close()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()

    winner, loser = answers[first], answers[second]
    assert isinstance(winner, dict), winner
    assert isinstance(loser, CoalitionError) and loser.code == "break_resolved", loser
    after = snapshot(app)
    with read() as session:
        events = session.execute(select(AuditEvent.action, AuditEvent.details).where(
            AuditEvent.action.like("settlement.break_%"))).all()
    if first == "accept":
        assert (winner["status"], winner["adjustment_entry_id"]) == ("accepted", None)
        assert ledger_of(after) == ledger_of(before)  # the adjust lost and booked nothing
        assert after["settlement_adjustment"] == []
        assert [(a, d["adjustment_entry_id"]) for a, d in events] == [
            ("settlement.break_accepted", None)]
    else:
        assert winner["status"] == "adjusted" and winner["adjustment_entry_id"]
        new = set(after["entry"]) - set(before["entry"])
        assert [row[0] for row in new] == [winner["adjustment_entry_id"]]
        assert len(after["settlement_adjustment"]) == 1
        assert [(a, d["adjustment_entry_id"]) for a, d in events] == [
            ("settlement.break_adjusted", winner["adjustment_entry_id"])]
    listed = resolve_listed(client, operator_headers, period, brk["id"])
    assert listed["status"] == winner["status"]
    assert listed["adjustment_entry_id"] == winner["adjustment_entry_id"]


# --------------------------------------------------------------------------- close


def test_close_waits_for_every_break(app, client, operator_headers, period) -> None:
    report = reconciled(client, operator_headers, period, period.file_without(
        "b1", e2=("e2", "earn", period.bob, 60, AT)))
    assert len(report["breaks"]) == 2
    close = f"/v1/settlement/runs/{period.id}/close"
    before = snapshot(app)
    assert_error(client.post(close, headers=operator_headers), 409, "unresolved_breaks")
    assert snapshot(app) == before
    first, second = report["breaks"]
    assert resolve(client, operator_headers, period.id, first["id"], "adjust").status_code == 200
    assert_error(client.post(close, headers=operator_headers), 409, "unresolved_breaks")
    assert resolve(client, operator_headers, period.id, second["id"], "accept").status_code \
        == 200
    closed = client.post(close, headers=operator_headers)
    assert closed.status_code == 200, closed.get_json()
    assert closed.get_json()["status"] == "closed" and closed.get_json()["open_breaks"] == 0
    # closed: nothing about it changes any more
    before = snapshot(app)
    assert_error(upload(client, operator_headers, period.id, "acme",
                        csv_rows(*period.full_file())), 409, "period_closed")
    assert_error(resolve(client, operator_headers, period.id, first["id"], "accept"), 409,
                 "period_closed")
    assert_error(client.post(close, headers=operator_headers), 409, "period_closed")
    assert snapshot(app) == before


def test_an_upload_cut_short_is_refused_and_supersedes_nothing(app, client, operator_headers,
                                                               period, server_url) -> None:
    """The connection drops before the declared Content-Length arrived: the part that came
    looks like a smaller file, and must not replace the one reconciled before."""
    first = reconciled(client, operator_headers, period, period.file_without("b1"))
    before = snapshot(app)
    whole = csv_rows(*period.full_file()).encode()
    cut = whole[:whole.rindex(b"\n", 0, len(whole) - 1) + 1]  # the last row lost
    status, answer = post_short(
        server_url, f"/v1/settlement/runs/{period.id}/reconciliations/acme",
        {**operator_headers, "Content-Type": "text/csv"}, cut, len(whole))
    assert status == 400, answer
    assert (answer["code"], answer["error"]) == (400, "invalid_request")
    assert "shorter than its Content-Length" in answer["message"]
    assert snapshot(app) == before
    listed = client.get(f"/v1/settlement/runs/{period.id}/breaks",
                        headers=operator_headers).get_json()
    assert [b["id"] for b in listed if b["status"] == "open"] == [
        b["id"] for b in first["breaks"]]


def test_a_second_upload_supersedes_the_first(client, operator_headers, period) -> None:
    first = reconciled(client, operator_headers, period, period.file_without("b1", "e1"))
    assert first["summary"]["missing_in_file"] == 2
    adjusted = resolve(client, operator_headers, period.id, first["breaks"][0]["id"], "accept",
                       user="carl@finance").get_json()
    second = reconciled(client, operator_headers, period, period.file_without("b1"))
    assert second["id"] != first["id"] and second["summary"]["missing_in_file"] == 1
    listed = {b["id"]: b for b in client.get(f"/v1/settlement/runs/{period.id}/breaks",
                                             headers=operator_headers).get_json()}
    # the first upload's open break is settled by the new file; what was resolved stays so
    assert listed[adjusted["id"]]["resolved_by"] == "carl@finance"
    old_open = listed[first["breaks"][1]["id"]]
    assert old_open["status"] == "accepted"
    assert "superseded" in old_open["reason"]
    open_now = [b for b in listed.values() if b["status"] == "open"]
    assert [b["id"] for b in open_now] == [second["breaks"][0]["id"]]
    run = client.get(f"/v1/settlement/runs/{period.id}", headers=operator_headers).get_json()
    assert run["open_breaks"] == 1
    # a clean third file leaves nothing open, and the run can close
    reconciled(client, operator_headers, period, csv_rows(*period.full_file()))
    closed = client.post(f"/v1/settlement/runs/{period.id}/close", headers=operator_headers)
    assert closed.status_code == 200, closed.get_json()


# --------------------------------------------------------------------------- CLI


def test_cli_run_reconcile_close(app, client, operator_headers, period, tmp_path) -> None:
    runner = app.test_cli_runner()
    # the period's run exists (the fixture's): a second over it overlaps
    refused = runner.invoke(args=["settle", "run", "--from", iso(S), "--to", iso(E), "--json"])
    assert refused.exit_code == 1 and "period_overlap" in refused.output
    bad_date = runner.invoke(args=["settle", "run", "--from", "yesterday", "--to", iso(E)])
    assert bad_date.exit_code == 2 and "--from" in bad_date.output

    # the next period from the CLI: nothing booked in it
    made = runner.invoke(args=["settle", "run", "--from", iso(E), "--to",
                               iso(E + timedelta(seconds=30)), "--json"])
    assert made.exit_code == 0, made.output
    doc = json.loads(made.stdout)
    assert doc["status"] == "draft" and doc["period_start"] == iso(E)
    assert {s["partner"] for s in doc["statements"]} == {"acme", "beta"}
    text = runner.invoke(args=["settle", "show", str(doc["id"])])
    assert text.exit_code == 0 and f"run {doc['id']} (draft)" in text.stdout

    file = tmp_path / "acme.csv"
    file.write_text(period.file_without("b1"))
    report = runner.invoke(args=["settle", "reconcile", str(period.id), "acme", str(file),
                                 "--json"])
    assert report.exit_code == 0, report.output
    body = json.loads(report.stdout)
    assert body["summary"]["missing_in_file"] == 1 and body["uploaded_by"] == "cli"
    (brk,) = body["breaks"]
    plain = runner.invoke(args=["settle", "reconcile", str(period.id), "acme", str(file)])
    assert plain.exit_code == 0
    assert "1 missing in the partner's file. 1 break to resolve." in plain.stdout

    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\xff\xfe\x00garbage")
    unreadable = runner.invoke(args=["settle", "reconcile", str(period.id), "acme",
                                     str(garbage)])
    assert unreadable.exit_code == 1 and "invalid_request" in unreadable.output
    missing = runner.invoke(args=["settle", "reconcile", str(period.id), "acme",
                                  str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2

    refused = runner.invoke(args=["settle", "close", str(period.id)])
    assert refused.exit_code == 1 and "unresolved_breaks" in refused.output
    open_breaks = client.get(f"/v1/settlement/runs/{period.id}/breaks?status=open",
                             headers=operator_headers).get_json()
    for b in open_breaks:
        assert resolve(client, operator_headers, period.id, b["id"], "accept").status_code == 200
    closed = runner.invoke(args=["settle", "close", str(period.id)])
    assert closed.exit_code == 0, closed.output
    assert f"run {period.id} (closed)" in closed.stdout
    again = runner.invoke(args=["settle", "close", str(period.id), "--json"])
    assert again.exit_code == 1 and "period_closed" in again.output
    shown = json.loads(runner.invoke(args=["settle", "show", str(period.id), "--json"]).stdout)
    assert shown["status"] == "closed" and shown["closed_by"] == "cli"
    assert shown["digest"] == period.run["digest"]
    assert runner.invoke(args=["settle", "show", "999999"]).exit_code == 1


# --------------------------------------------------------------------------- partners read


def test_partners_read_only_their_own_closed_statements(client, operator_headers,
                                                        period) -> None:
    acme = partner_reader(client, "acme")
    beta = partner_reader(client, "beta")
    base = f"/v1/settlement/runs/{period.id}"
    # a draft is finance's
    assert_error(client.get(f"{base}/statements/acme", headers=acme), 404, "not_found")
    assert client.post(f"{base}/close", headers=operator_headers).status_code == 200

    own = client.get(f"{base}/statements/acme", headers=acme)
    assert own.status_code == 200
    statement = own.get_json()
    # acme: issued 100 + 50 + 40 − 10 = 180 at 0.01; redeemed 30 + 20 = 50 at 0.008
    assert (statement["issued_points"], statement["redeemed_points"]) == (180, 50)
    assert (statement["payable"], statement["receivable"], statement["net"]) == (
        "1.80", "0.40", "-1.40")
    assert statement["status"] == "closed" and statement["run"] == period.id
    assert_error(client.get(f"{base}/statements/beta", headers=acme), 404, "not_found")
    assert_error(client.get(f"{base}/statements/nobody", headers=acme), 404, "not_found")
    assert_error(client.get(f"/v1/settlement/runs/{period.id + 1}/statements/acme",
                            headers=acme), 404, "not_found")
    assert client.get(f"{base}/statements/beta", headers=beta).get_json()["currency"] == "EUR"

    as_csv = client.get(f"{base}/statements/acme", headers={**acme, "Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    table = list(csv.reader(io.StringIO(as_csv.get_data(as_text=True))))
    assert table[0][:6] == ["partner", "currency", "model", "period_start", "period_end",
                            "type"]
    assert {r[2] for r in table[1:]} == {"operator"}
    lines = [r for r in table[1:] if r[5] in ("issued", "redeemed")]
    assert [(r[5], r[6], int(r[7]), r[10]) for r in lines] == [
        ("issued", "coalition", 180, "1.80"), ("redeemed", "coalition", 50, "0.40")]
    assert table[-1][5:] == ["net", "", "", "", "", "-1.40"]

    # everything else about settlement is finance's
    for method, path in [("get", "/v1/settlement/runs"), ("get", base),
                         ("get", f"{base}/matrix"), ("get", f"{base}/payments"),
                         ("get", f"{base}/export"), ("get", f"{base}/breaks"),
                         ("post", f"{base}/close"), ("post", f"{base}/recompute"),
                         ("delete", base)]:
        assert getattr(client, method)(path, headers=acme).status_code == 403, path
    assert upload(client, acme, period.id, "acme", csv_rows(*period.full_file())
                  ).status_code == 403
    created = client.post("/v1/settlement/runs", headers=acme, json={
        "period_start": iso(E), "period_end": iso(E + timedelta(seconds=1))})
    assert created.status_code == 403

    # a partner token without settlement:read reads nothing
    till = partner_reader(client, "acme", scopes=("points:earn",))
    assert_error(client.get(f"{base}/statements/acme", headers=till), 403, "insufficient_scope")


def test_exports_as_json_and_csv(client, operator_headers, period) -> None:
    base = f"/v1/settlement/runs/{period.id}"
    as_json = client.get(f"{base}/export", headers=operator_headers)
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    doc = as_json.get_json()
    assert doc["digest"] == period.run["digest"]
    as_csv = client.get(f"{base}/export", headers={**operator_headers, "Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    assert f"settlement-run-{period.id}.csv" in as_csv.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))
    for s in doc["statements"]:
        lines = [r for r in table if r["section"] == "statement" and r["partner"] == s["partner"]]
        assert [(r["type"], int(r["points"]), r["amount"]) for r in lines] == [
            (ln["type"], ln["points"], ln["amount"]) for ln in s["lines"]]
        (total,) = [r for r in table if r["section"] == "total" and r["partner"] == s["partner"]]
        assert total["amount"] == s["net"]
        assert sum((Decimal(r["amount"]) for r in lines if r["type"] == "redeemed"),
                   Decimal(0)) - sum((Decimal(r["amount"]) for r in lines
                                      if r["type"] == "issued"), Decimal(0)) == Decimal(s["net"])
    # the operator model: each partner settles its own net with the coalition, in its
    # currency (acme's points spent at beta are in beta's statement, not a payment of acme's)
    assert doc["model"] == "operator" and {r["model"] for r in table} == {"operator"}
    nets = {s["partner"]: s["net"] for s in doc["statements"]}
    assert nets == {"acme": "-1.40", "beta": "-0.03"}
    assert doc["payments"] == [
        {"from": "acme", "to": "coalition", "amount": "1.40", "currency": "GBP",
         "model": "operator"},
        {"from": "beta", "to": "coalition", "amount": "0.03", "currency": "EUR",
         "model": "operator"}]
    payments = [r for r in table if r["section"] == "payment"]
    assert [(r["partner"], r["currency"], r["amount"]) for r in payments] == [
        ("acme->coalition", "GBP", "1.40"), ("beta->coalition", "EUR", "0.03")]
    # the coalition's own position and margin, apart from the partners'
    coalition = [(r["type"], r["currency"], r["amount"]) for r in table
                 if r["section"] == "coalition"]
    assert coalition == [("position", "EUR", "0.03"), ("position", "GBP", "1.40"),
                         ("margin", "EUR", "0.03"), ("margin", "GBP", "1.40")]
    # the statement of the finance API, as CSV too
    statement = client.get(f"{base}/statements/acme",
                           headers={**operator_headers, "Accept": "text/csv"})
    assert statement.mimetype == "text/csv"
    assert statement.get_data(as_text=True).splitlines()[-1] == "acme,GBP,operator,,,net,,,,,-1.40"


# --------------------------------------------------------------------------- the parser


def _cell() -> Any:
    from hypothesis import strategies as st

    return st.one_of(
        st.text(max_size=12),
        st.sampled_from(["earn", "burn", "hold_capture", "earn_reversal", "100", "0", "-1",
                         "\u00b2", "9" * 5000, "2001-03-01", "2001-03-01T09:00:00Z",
                         "0001-01-01T00:00:00+01:00", "2001-03-01T09:00:00", '"', '""',
                         "400000000006", "400000000007", "a\x00", "\r", "\n"]))


def test_the_parser_reads_anything_or_refuses_it_cleanly() -> None:
    """Whatever the file, parse() gives records that the ledger could hold, rows it could
    not read by line, or refuses the whole file; never anything else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from coalition.errors import InvalidRequest
    from coalition.ledger.numbers import is_valid
    from coalition.schemas import MAX_POINTS
    from settlement.reconcile import TXN_ID, parse

    rows = st.lists(st.lists(_cell(), min_size=3, max_size=7), max_size=8)
    raw = st.binary(max_size=300)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=rows, raw=raw, as_rows=st.booleans(), header=st.booleans())
    def check(rows: list[list[str]], raw: bytes, as_rows: bool, header: bool) -> None:
        if as_rows:
            body = "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")
        else:
            body = raw
        content = (CSV_HEADER.encode() if header else b"") + body
        try:
            records, malformed = parse(content)
        except InvalidRequest:
            return
        lines = content.count(b"\n") + content.count(b"\r") + 1
        for r in records:
            assert TXN_ID.fullmatch(r.partner_txn_id)
            assert is_valid(r.member_number) and 1 <= r.points <= MAX_POINTS
            assert r.occurred_at.tzinfo is not None and 2 <= r.line <= lines
        for m in malformed:
            assert 2 <= m["line"] <= lines and m["errors"]
            assert m.get("partner_txn_id") is None or TXN_ID.fullmatch(m["partner_txn_id"])
        assert len({r.line for r in records} | {m["line"] for m in malformed}) == len(
            records) + len(malformed)

    check()


# --------------------------------------------------------------------------- funding and webhooks


def _prepaid_with_a_listener(client, period, points: int) -> int:
    """acme prepaid with a block of ``points`` from now, and a webhook endpoint for its
    transactions; acme's id."""
    configure("acme", {"points": points, "price": Decimal("1.00"), "currency": "GBP"})
    with read() as session:
        acme_id = session.scalar(select(Partner.id).where(Partner.code == "acme"))
    webhooks.create_endpoint(acme_id, "http://127.0.0.1:18602/hook",
                             ["transaction.booked", "transaction.reversed"])
    return acme_id


def _events(acme_id: int) -> list[dict[str, Any]]:
    with read() as session:
        return [json.loads(body) for body in session.scalars(
            select(WebhookEvent.body).where(WebhookEvent.partner_id == acme_id)
            .order_by(WebhookEvent.created_at))]


def test_an_adjustment_uses_the_funding_and_tells_the_partners_webhooks(
        app, client, operator_headers, period) -> None:
    """An adjustment is a booking of the partner's points like any other: a missing earn
    uses a prepaid partner's funding and an earn taken back gives it back, each with its
    event, and the ledger check's funding invariant holds."""
    acme_id = _prepaid_with_a_listener(client, period, 1000)
    rows = [r for r in period.full_file() if r[0] not in ("e1", "e2")]
    report = reconciled(client, operator_headers, period, csv_rows(
        *rows, ("e2", "earn", period.bob, 45, AT), ("x1", "earn", period.ann, 70, AT)))
    found = breaks_by_txn(report)
    _adjusted(app, client, operator_headers, period, found["x1"])
    assert funding(acme_id)["available_points"] == 1000 - 70
    _adjusted(app, client, operator_headers, period, found["e2"])  # 5 taken back
    assert funding(acme_id)["available_points"] == 1000 - 70 + 5
    events = _events(acme_id)
    assert [(e["type"], e["data"]["partner_txn_id"], e["data"]["points"]) for e in events] == [
        ("transaction.booked", f"adj-{found['x1']['id']}-x1", 70),
        ("transaction.reversed", f"adj-{found['e2']['id']}-e2", 5)]
    checked = check_ledger()
    assert checked.ok, [(c.name, c.violations) for c in checked.checks if not c.ok]


def test_an_adjustment_the_funding_cannot_cover_leaves_the_break_open(
        app, client, operator_headers, period) -> None:
    _prepaid_with_a_listener(client, period, 50)
    report = reconciled(client, operator_headers, period, csv_rows(
        *period.full_file(), ("x1", "earn", period.ann, 70, AT)))
    (brk,) = report["breaks"]
    before = snapshot(app)
    assert_error(resolve(client, operator_headers, period.id, brk["id"], "adjust"), 409,
                 "insufficient_funding")
    assert snapshot(app) == before


# --------------------------------------------------------------------------- promotions


def test_a_promoted_earn_matches_its_total_or_the_partners_own_points(
        client, make_partner, clock, operator_headers) -> None:
    """acme's × 2 promotion doubles a 25-point earn to 50; acme's till records either the
    50 the member got or the 25 acme issued itself, and for a reversal of 10 either 10 or
    its own part, ⌊25 × 10 / 50⌋ = 5."""
    clock.set(S - timedelta(hours=1))
    _, acme = make_partner("acme", valid_from=S - timedelta(days=1))
    publish(client, operator_headers)
    ann = enrol(client, acme, "ann")
    post_ok(client, "/v1/offers", acme, {
        "name": "Double points", "rule": "multiplier", "multiplier": "2",
        "valid_from": iso(S - timedelta(minutes=1)), "valid_to": iso(S + timedelta(days=1)),
        "opt_in": False, "cap_points": 1000})
    clock.set(S)
    promoted = earn(client, acme, ann, "p1", spend={"amount": "25.40", "currency": "GBP"})
    assert promoted["points"] == 50
    post_ok(client, f"/v1/transactions/{promoted['id']}/reversals", acme,
            {"partner_txn_id": "p1r", "points": 10})
    earn(client, acme, ann, "p2", points=7)  # no promotion: only its points match
    clock.set(E + timedelta(minutes=1))
    run = run_ok(client, operator_headers, S, E)

    def report(p1: int, p1r: int, p2: int = 7) -> dict[str, Any]:
        response = upload(client, operator_headers, run["id"], "acme", csv_rows(
            ("p1", "earn", ann, p1, AT), ("p1r", "earn_reversal", ann, p1r, AT),
            ("p2", "earn", ann, p2, AT)))
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    for total_or_own in ((50, 10), (25, 5), (50, 5), (25, 10)):
        answer = report(*total_or_own)
        assert answer["summary"]["matched"] == 3 and answer["breaks"] == [], total_or_own
    wrong = report(30, 10, 6)
    assert wrong["summary"]["points_mismatch"] == 2
    found = breaks_by_txn(wrong)
    assert found["p1"]["details"]["ledger"]["points"] == 50
    assert found["p1"]["details"]["ledger"]["own_points"] == 25
    assert "own_points" not in found["p2"]["details"]["ledger"]
