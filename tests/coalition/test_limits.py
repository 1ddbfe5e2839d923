"""Limits (coalition.http.limits): rate limits per client and per address (429), request body
size (413), and JSON bodies that are refused before anything looks at them (400) — each
answered in the one error shape, and none of them changing anything."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from coalition.db import db, read
from coalition.http.limits import (
    MAX_DEPTH,
    BodyRefused,
    RateLimited,
    limit_client,
    parse_json,
    window,
)
from coalition.oauth.models import OAuthToken
from config import load_settings
from tests.conftest import TEST_SECRET, basic_auth, make_test_app, post_short, snapshot
from tests.factories.members import active_member, csrf_of
from tests.factories.partner_api import assert_error, enrol, publish

PARTNER = {"code": "zeta", "name": "Zeta", "kind": "merchant", "currency": "GBP",
           "earn_rate": "1", "issue_price": "0.01", "redeem_rate": "0.008"}


@pytest.fixture
def partner(client: FlaskClient, make_partner, operator_headers) -> dict[str, Any]:
    """Partner acme with a member who holds 50 points: ``{headers, member}``."""
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    member = enrol(client, headers, "c1")
    response = client.post("/v1/earn", json={"member_number": member, "partner_txn_id": "e0",
                                             "points": 50}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return {"headers": headers, "member": member}


def earn_body(member: str, points: str = "5", txn: str = "x1") -> str:
    """An earn as raw JSON text, with ``points`` spliced in verbatim."""
    return f'{{"member_number": "{member}", "partner_txn_id": "{txn}", "points": {points}}}'


# --------------------------------------------------------------------------- JSON bodies

#: (case, body with {member} for the member number, the reason named in errors._schema)
REFUSED_BODIES: list[tuple[str, bytes, str]] = [
    ("integer-5000-digits", earn_body("{member}", "9" * 5000).encode(), "out of range"),
    ("integer-101-digits", earn_body("{member}", "9" * 101).encode(), "out of range"),
    ("negative-huge-integer", earn_body("{member}", "-" + "9" * 200).encode(), "out of range"),
    ("1e309", earn_body("{member}", "1e309").encode(), "out of range"),
    ("-1e309", earn_body("{member}", "-1e309").encode(), "out of range"),
    ("long-fraction", earn_body("{member}", "0." + "1" * 200).encode(), "out of range"),
    ("NaN", earn_body("{member}", "NaN").encode(), "NaN is not a JSON value"),
    ("Infinity", earn_body("{member}", "Infinity").encode(), "Infinity is not a JSON value"),
    ("-Infinity", earn_body("{member}", "-Infinity").encode(), "-Infinity is not a JSON value"),
    ("arrays-10000-deep", b"[" * 10_000 + b"]" * 10_000, f"more than {MAX_DEPTH} levels"),
    ("objects-10000-deep", b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
     f"more than {MAX_DEPTH} levels"),
    ("field-value-33-deep", earn_body("{member}", "[" * 33 + "]" * 33).encode(),
     f"more than {MAX_DEPTH} levels"),
    ("unclosed-100000-deep", b"[" * 100_000, "Invalid JSON body."),
    ("duplicate-key", b'{"member_number": "{member}", "partner_txn_id": "x1", '
                      b'"points": 1, "points": 1000}', "'points' appears twice"),
    ("duplicate-key-nested", b'{"member_number": "{member}", "partner_txn_id": "x1", '
                             b'"spend": {"amount": "1.00", "currency": "GBP", '
                             b'"amount": "900.00"}}', "'amount' appears twice"),
    ("invalid-utf8", b'{"member_number": "{member}", "partner_txn_id": "x\xff1", "points": 5}',
     "not UTF-8"),
    ("overlong-utf8", b'{"member_number": "{member}", "partner_txn_id": "\xc0\xaf", '
                      b'"points": 5}', "not UTF-8"),
    ("utf16", '{"points": 5}'.encode("utf-16"), "not UTF-8"),
    ("utf8-bom", b'\xef\xbb\xbf{"member_number": "{member}", "partner_txn_id": "x1", '
                 b'"points": 5}', "Invalid JSON body."),
    ("lone-surrogate", b'{"member_number": "{member}", "partner_txn_id": "\\ud800", '
                       b'"points": 5}', "unpaired surrogate"),
    ("whitespace-only", b"   \n", "Invalid JSON body."),
    ("truncated", b'{"member_number": "{member}", "points": 5', "Invalid JSON body."),
    ("trailing-garbage", earn_body("{member}").encode() + b" {}", "Invalid JSON body."),
    ("single-quotes", b"{'points': 5}", "Invalid JSON body."),
]


@pytest.mark.parametrize(("case", "raw", "reason"), REFUSED_BODIES,
                         ids=[case for case, _, _ in REFUSED_BODIES])
def test_a_json_body_out_of_bounds_is_a_400_and_writes_nothing(app, client, partner, case,
                                                               raw, reason):
    body = raw.replace(b"{member}", partner["member"].encode())
    before = snapshot(app)
    for path in ("/v1/earn", "/v1/burn", "/v1/members"):
        response = client.post(path, data=body, content_type="application/json",
                               headers=partner["headers"])
        answer = assert_error(response, 400, "invalid_request", {"_schema"})
        assert answer["message"] == "The request is not valid."
        [detail] = answer["errors"]["_schema"]
        assert detail.startswith("Invalid JSON body") and reason in detail, detail
    assert snapshot(app) == before


def test_a_nul_character_in_a_json_string_is_a_400_and_writes_nothing(app, client, partner):
    before = snapshot(app)
    response = client.post("/v1/members", data=b'{"partner_member_ref": "c\\u00002"}',
                           content_type="application/json", headers=partner["headers"])
    assert_error(response, 400, "invalid_request")
    assert snapshot(app) == before


def test_bodies_just_inside_the_bounds_are_parsed_and_judged_by_their_fields(
        app, client, partner):
    before = snapshot(app)
    member = partner["member"]
    # 100 digits, 2**64 and a float: JSON the parser takes, that the points field refuses
    for points in ("9" * 100, str(2**64), "1e308", "5.0",
                   "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)):
        response = client.post("/v1/earn", data=earn_body(member, points),
                               content_type="application/json", headers=partner["headers"])
        assert_error(response, 422, "invalid_request", {"points"})
    assert snapshot(app) == before
    # brackets inside strings are not nesting; an escaped backslash before "u0000" is no
    # NUL; a surrogate pair is one character
    for ref, name in (("c2", json.dumps("[{" * 100)), ("c3", r'"a\\u0000"'),
                      ("c4", r'"\ud83d\ude00"')):
        response = client.post("/v1/members", data=f'{{"partner_member_ref": "{ref}", '
                                                   f'"name": {name}}}',
                               content_type="application/json", headers=partner["headers"])
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["name"] == json.loads(name)


def test_an_empty_body_is_every_required_field_missing(app, client, partner):
    before = snapshot(app)
    for headers in ({"Content-Type": "application/json"}, {}):
        response = client.post("/v1/burn", data=b"", headers={**partner["headers"], **headers})
        body = assert_error(response, 422, "invalid_request")
        assert {"partner_txn_id", "points"} <= set(body["errors"])
    assert snapshot(app) == before


@pytest.mark.parametrize("content_type", [
    None, "text/plain", "text/csv", "application/xml", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/json-patch+json",
    "application/octet-stream", "application/jsonx"])
def test_a_body_of_another_media_type_is_a_415_and_writes_nothing(app, client, partner,
                                                                  content_type):
    headers = dict(partner["headers"])
    if content_type:
        headers["Content-Type"] = content_type
    before = snapshot(app)
    response = client.post("/v1/earn", data=earn_body(partner["member"]).encode(),
                           headers=headers)
    assert_error(response, 415, "unsupported_media_type")
    assert snapshot(app) == before


def test_the_body_is_checked_before_the_token(app, client):
    """Transport checks (size, media type, well-formed JSON) come before authentication;
    what the fields say is judged only for an authenticated caller."""
    before = snapshot(app)
    response = client.post("/v1/earn", data=b"[" * 10_000, content_type="application/json")
    assert_error(response, 400, "invalid_request", {"_schema"})
    response = client.post("/v1/earn", json={"points": "five"})
    assert_error(response, 401, "unauthorized")
    assert snapshot(app) == before


def test_operator_and_oauth_endpoints_get_the_same_checks(app, client, operator_headers):
    before = snapshot(app)
    duplicate = json.dumps(PARTNER)[:-1] + ', "code": "other"}'
    response = client.post("/v1/admin/partners", data=duplicate,
                           content_type="application/json", headers=operator_headers)
    assert_error(response, 400, "invalid_request", {"_schema"})
    # the token endpoint takes a form; JSON (valid or not) is no grant it knows
    for body in (b'{"grant_type": "client_credentials"}', b"[" * 10_000):
        response = client.post("/oauth/token", data=body, content_type="application/json")
        assert 400 <= response.status_code < 500
        answer = response.get_json()
        assert answer["code"] == response.status_code and answer["error"]
    assert snapshot(app) == before


def test_hostile_bodies_of_the_largest_size_are_parsed_or_refused_quickly():
    limit = 1024 * 1024
    hostile = [b"[" * limit, b"{" * limit, b'{"a":' * (limit // 5), b"[]," * (limit // 3),
               b'["' + b'\\"' * (limit // 2) + b'"]', b'"' + b"a\\" * (limit // 2),
               b'["' * (limit // 2), b"[" + b"1," * (limit // 2) + b"1]"]
    for body in hostile:
        started = time.perf_counter()
        try:
            parse_json(body)
        except BodyRefused:
            pass
        assert time.perf_counter() - started < 2.0, body[:20]


# --------------------------------------------------------------------------- size


def test_a_json_body_over_the_limit_is_a_413_before_the_token(app, client, partner):
    before = snapshot(app)
    limit = app.config["MAX_CONTENT_LENGTH"]
    big = earn_body(partner["member"]).replace('"points"', f'"pad": "{"x" * limit}", "points"')
    for headers in (partner["headers"], {}):
        response = client.post("/v1/earn", data=big, content_type="application/json",
                               headers=headers)
        body = assert_error(response, 413, "payload_too_large")
        assert body["message"] == f"The request body is larger than {limit} bytes."
    assert snapshot(app) == before


def test_a_csv_upload_over_the_limit_is_a_413(app, client, operator_headers):
    before = snapshot(app)
    limit = app.config["MAX_CONTENT_LENGTH"]
    csv = "partner_txn_id,type,member_number,points,occurred_at\n" + "x" * limit
    response = client.post("/v1/settlement/runs/1/reconciliations/acme", data=csv,
                           content_type="text/csv", headers=operator_headers)
    assert_error(response, 413, "payload_too_large")
    assert snapshot(app) == before


def test_a_token_request_over_the_limit_is_a_413(app, client, operator):
    before = snapshot(app)
    limit = app.config["MAX_CONTENT_LENGTH"]
    form = "grant_type=client_credentials&scope=" + "a" * limit
    for content_type in ("application/x-www-form-urlencoded", "application/json"):
        response = client.post("/oauth/token", data=form, content_type=content_type,
                               headers=basic_auth(operator["client_id"],
                                                  operator["client_secret"]))
        assert_error(response, 413, "payload_too_large")
    assert snapshot(app) == before


def post_chunked(url: str, path: str, chunks: list[bytes],
                 headers: dict[str, str]) -> tuple[int, Any]:
    """POST ``chunks`` with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    address = urlparse(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("POST", path, body=iter(chunks), encode_chunked=True,
                           headers={**headers, "Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_body_is_refused_at_the_limit_never_cut_short(app, live_server, partner,
                                                                operator_headers):
    """Without a Content-Length werkzeug would hand the view the first MAX_CONTENT_LENGTH
    bytes as if they were the whole body: a CSV file cut short would be reconciled."""
    before = snapshot(app)
    limit = app.config["MAX_CONTENT_LENGTH"]
    filler = [b"x" * 65536] * (limit // 65536 + 1)
    json_headers = {**partner["headers"], "Content-Type": "application/json"}
    status, answer = post_chunked(
        live_server.url, "/v1/earn",
        [earn_body(partner["member"])[:-1].encode() + b', "pad": "', *filler, b'"}'],
        json_headers)
    assert (status, answer["code"], answer["error"]) == (413, 413, "payload_too_large")
    status, answer = post_chunked(
        live_server.url, "/v1/settlement/runs/1/reconciliations/acme",
        [b"partner_txn_id,type,member_number,points,occurred_at\n",
         *([b"e1,earn,400000000006,1,2025-01-01\n" * 2048] * (limit // 65536 + 2))],
        {**operator_headers, "Content-Type": "text/csv"})
    assert (status, answer["code"], answer["error"]) == (413, 413, "payload_too_large")
    assert snapshot(app) == before
    # within the limit, a chunked body is read once and handed to the view whole
    status, answer = post_chunked(
        live_server.url, "/v1/earn",
        [chunk.encode() for chunk in earn_body(partner["member"], "7", "chunked")],
        json_headers)
    assert (status, answer["points"], answer["partner_txn_id"]) == (201, 7, "chunked")


# --------------------------------------------------------------------------- rate limits


@pytest.fixture
def limited(app: Flask, database_url: str) -> Iterator[Flask]:
    """An app with rate limiting on (at most 3 requests in any 3 s per client; 2 in any 2 s
    per address on the token endpoints) on the test database. The windows are real: a test
    that needs one to pass sleeps."""
    limited = make_test_app(database_url, RATE_LIMIT_ENABLED=True, RATE_LIMIT=1,
                            RATE_LIMIT_BURST=3, TOKEN_RATE_LIMIT=1, TOKEN_RATE_LIMIT_BURST=2)
    try:
        yield limited
    finally:
        with limited.app_context():
            db.engine.dispose()


def assert_rate_limited(response: Any, window: int) -> int:
    """A 429 whose Retry-After is whole seconds within the ``window``; those seconds."""
    body = assert_error(response, 429, "rate_limited")
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= window, seconds
    assert f"Retry after {seconds} s" in body["message"]
    return seconds


def test_rate_limiting_is_off_in_testing_and_on_elsewhere(tmp_path):
    base = {"COALITION_SECRET_KEY": TEST_SECRET}
    for env, enabled in (("testing", False), ("development", True), ("production", True)):
        settings = load_settings(tmp_path, environ={**base, "COALITION_ENV": env})
        assert settings["RATE_LIMIT_ENABLED"] is enabled
    settings = load_settings(tmp_path, environ={**base, "COALITION_ENV": "testing",
                                                "COALITION_RATE_LIMIT_ENABLED": "true"})
    assert settings["RATE_LIMIT_ENABLED"] is True


def test_a_client_over_its_rate_is_a_429_with_retry_after_and_nothing_is_written(
        app, partner, make_partner, limited):
    client = limited.test_client()
    headers, member = partner["headers"], partner["member"]
    for n in range(3):  # the burst
        response = client.post("/v1/earn", json={"member_number": member,
                                                 "partner_txn_id": f"r{n}", "points": 1},
                               headers=headers)
        assert response.status_code == 201, response.get_json()
    before = snapshot(app)
    response = client.post("/v1/earn", json={"member_number": member, "partner_txn_id": "r3",
                                             "points": 1}, headers=headers)
    retry_after = assert_rate_limited(response, 3)
    # refused before the body is read: an invalid one is refused the same way
    assert_rate_limited(client.post("/v1/earn", json={"points": "x"}, headers=headers), 3)
    assert_rate_limited(client.get("/v1/transactions", headers=headers), 3)
    assert snapshot(app) == before

    # another client has its own window; an anonymous request is still a 401
    _, other = make_partner("bravo")
    assert client.get("/v1/transactions", headers=other).status_code == 200
    assert_error(client.get("/v1/transactions"), 401, "unauthorized")

    # Retry-After is enough: the request is granted then, and was not refused for good
    time.sleep(retry_after)
    response = client.post("/v1/earn", json={"member_number": member, "partner_txn_id": "r3",
                                             "points": 1}, headers=headers)
    assert response.status_code == 201, response.get_json()
    assert response.headers.get("Idempotent-Replayed") is None
    # once a whole window has passed the whole burst is there again, and no more
    time.sleep(3)
    for _ in range(3):
        assert client.get("/v1/transactions", headers=headers).status_code == 200
    assert_rate_limited(client.get("/v1/transactions", headers=headers), 3)


def test_the_token_endpoint_is_limited_per_remote_address(app, limited, operator):
    client = limited.test_client()
    auth = basic_auth(operator["client_id"], operator["client_secret"])
    form = {"grant_type": "client_credentials"}

    def token(address: str, **kwargs: Any) -> Any:
        return client.post("/oauth/token", data=form, environ_base={"REMOTE_ADDR": address},
                           **kwargs)

    assert token("10.0.0.1", headers=auth).status_code == 200
    # failed attempts count too: guessing secrets is what this limit is for
    assert token("10.0.0.1", headers=basic_auth(operator["client_id"], "wrong")
                 ).status_code == 401
    before = snapshot(app)
    retry_after = assert_rate_limited(token("10.0.0.1", headers=auth), 2)
    revoke = client.post("/oauth/revoke", data={"token": "x"}, headers=auth,
                         environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert_rate_limited(revoke, 2)
    assert snapshot(app) == before
    assert token("10.0.0.2", headers=auth).status_code == 200  # another address
    time.sleep(retry_after)
    assert token("10.0.0.1", headers=auth).status_code == 200


def test_member_tokens_are_limited_per_member(limited):
    with limited.test_request_context():
        for member_id in (1, 2):
            for _ in range(3):
                limit_client("member-app", member_id)
        with pytest.raises(RateLimited) as caught:
            limit_client("member-app", 1)
        # the first of the three is a few microseconds old: the window is 3 s
        assert caught.value.headers == {"Retry-After": "3"}
        limit_client("member-app")  # the client itself, apart from its members


def test_the_rule_a_burst_in_any_burst_over_rate_seconds():
    """RATE_LIMIT and RATE_LIMIT_BURST as the library's moving window: BURST requests in
    any BURST/RATE seconds, the window rounded up to a whole second."""
    for rate, burst, seconds in ((200, 400, 2), (10, 100, 10), (1, 3, 3), (2.5, 5, 2),
                                 (0.001, 6, 6000), (3, 4, 2), (200, 100, 1)):
        item = window(rate, burst, "client")
        assert (item.amount, item.get_expiry()) == (burst, seconds), (rate, burst)


def test_the_window_in_memory_holds_under_threads(limited):
    """gthread workers serve requests from several threads: 8 threads asking 50 times each
    for one caller get its 100 requests in all."""
    limits = limited.extensions["coalition.limits"]
    item = window(0.001, 100, "client")
    granted: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        mine = sum(1 for _ in range(50) if limits.wait(item, "hot") == 0.0)
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(granted) == 100


# --------------------------------------------------------------------------- the pages' own calls


def _page_sign_in(browser: FlaskClient, member: Any) -> Any:
    """Sign in on the member page like a browser; the answer of the callback."""
    start = browser.get("/member/signin")
    assert start.status_code == 302, start.get_data(as_text=True)
    authorize = start.headers["Location"]
    form = browser.get(authorize)
    answer = browser.post(authorize, data={"csrf_token": csrf_of(form.get_data(as_text=True)),
                                           "member_number": member.member_number,
                                           "password": member.password})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return browser.get(answer.headers["Location"])


def _bogus_callback(browser: FlaskClient) -> Any:
    """A sign-in started properly and ended with a made-up code."""
    start = browser.get("/member/signin")
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    return browser.get(f"/member/callback?code=made-up&state={state}")


def _browser(app: Flask, address: str) -> FlaskClient:
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser


def _live_member_tokens() -> list[OAuthToken]:
    with read() as session:
        return list(session.scalars(select(OAuthToken).where(
            OAuthToken.member_id.is_not(None), OAuthToken.revoked_at.is_(None))))


def test_bogus_sign_ins_from_one_address_lock_out_only_that_address(app, limited,
                                                                    make_partner):
    """The page's own calls to /oauth/token count against the visitor's address, not one
    limit that the whole site shares."""
    _, headers = make_partner("acme")
    ada = active_member(app.test_client(), headers, ref="ada")
    attacker = _browser(limited, "10.6.6.6")
    answers = [_bogus_callback(attacker) for _ in range(5)]
    assert [a.status_code for a in answers] == [400, 400, 429, 429, 429]
    assert "Too many requests from this address" in answers[-1].get_data(as_text=True)
    assert not _live_member_tokens()

    member = _browser(limited, "10.0.0.2")
    callback = _page_sign_in(member, ada)
    assert (callback.status_code, callback.headers["Location"]) == (302, "/member")
    [token] = _live_member_tokens()
    home = member.get("/member").get_data(as_text=True)
    assert ada.member_number in home

    out = member.post("/member/signout", data={"csrf_token": csrf_of(home)},
                      follow_redirects=True)
    assert "You have signed out." in out.get_data(as_text=True)
    assert not _live_member_tokens()
    with read() as session:
        assert session.get(OAuthToken, token.id).revoked_at is not None


def test_a_sign_out_that_cannot_revoke_says_so_and_keeps_the_member_signed_in(
        app, limited, make_partner):
    _, headers = make_partner("acme")
    ada = active_member(app.test_client(), headers, ref="ada")
    member = _browser(limited, "10.0.0.3")
    assert _page_sign_in(member, ada).status_code == 302
    home = member.get("/member").get_data(as_text=True)
    # the address's last token-endpoint request of the burst
    member.post("/oauth/token", data={"grant_type": "client_credentials"})
    before = snapshot(app)

    out = member.post("/member/signout", data={"csrf_token": csrf_of(home)},
                      follow_redirects=True)
    page = out.get_data(as_text=True)
    assert "You are still signed in: signing out failed (Too many requests" in page
    assert "You have signed out." not in page
    assert ada.member_number in page  # still the member's own page
    assert snapshot(app) == before
    assert len(_live_member_tokens()) == 1

    time.sleep(2)  # the address's window (2 in any 2 s) has passed
    out = member.post("/member/signout", data={"csrf_token": csrf_of(home)},
                      follow_redirects=True)
    assert "You have signed out." in out.get_data(as_text=True)
    assert not _live_member_tokens()


# --------------------------------------------------------------------------- bodies cut short


def test_a_body_shorter_than_its_content_length_is_refused(app, server_url, partner,
                                                           operator):
    """A connection that drops before the declared Content-Length arrived: whatever came is
    not the request the client meant, so it is refused and nothing is done."""
    before = snapshot(app)
    earn = earn_body(partner["member"], "5", "cut").encode()
    form = b"grant_type=client_credentials"
    for path, headers, body in (
        ("/v1/earn", {**partner["headers"], "Content-Type": "application/json"}, earn),
        ("/oauth/token", {**basic_auth(operator["client_id"], operator["client_secret"]),
                          "Content-Type": "application/x-www-form-urlencoded"}, form),
    ):
        status, answer = post_short(server_url, path, headers, body, len(body) + 10)
        assert status == 400, (path, answer)
        assert (answer["code"], answer["error"]) == (400, "invalid_request"), answer
        assert "shorter than its Content-Length" in answer["message"], answer
    assert snapshot(app) == before
