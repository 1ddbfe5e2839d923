"""Fuzzing every operation of the live ``/openapi.json`` with Schemathesis.

The document is fetched from a running server (the ``live_server`` fixture, real HTTP), and
every request goes there too, with real bearer tokens chosen by the operation's declared
security: a partner token with every partner scope, an operator token for the admin and
settlement operations (a statement takes either), a member token from the sign-in flow for
``/v1/me`` (a second member's for ``/v1/me/close``), an operator client's HTTP Basic
credentials for ``/oauth/*`` (or, one time in three, malformed ones: random bytes, not
UTF-8, not base64). The database is seeded (tests/factories/coalition.py) and generated path
parameters, member numbers and partner codes are mostly swapped for real ones,
so that requests reach existing objects, not only 404s.

Every response must be no server error, have a documented status (explicitly, not only
through ``default``; see ``GENERIC_STATUSES``), a documented content type, a body that
matches its documented schema, and the documented headers.

``make test`` runs this on one backend with few examples per operation; ``make fuzz`` runs
many more on both. Environment:

- ``COALITION_FUZZ_EXAMPLES``: examples per operation, valid and invalid drawn together
  (default 20);
- ``COALITION_FUZZ_BACKENDS``: comma-separated backends (default: postgresql when
  ``COALITION_TEST_DATABASE_URL`` is set, since it refuses more than SQLite does, e.g.
  U+0000 in text; else sqlite);
- ``COALITION_FUZZ_SEED``: a Hypothesis seed (default: derandomized, the same examples every
  run); ``random`` for a fresh one;
- ``COALITION_FUZZ_EXTRA_CHECKS=1``: also fail on invalid input that is accepted.

The tests after the fuzzer pin what it found, on both backends.
"""

from __future__ import annotations

import base64
import os
import time
from collections import Counter
from typing import Any

import hypothesis
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import basic_auth
from tests.factories.coalition import Seeded, seed

pytestmark = pytest.mark.slow

schemathesis = pytest.importorskip("schemathesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("COALITION_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("COALITION_FUZZ_SEED", "")

#: statuses any operation may answer without listing them, each for a reason that is not
#: the operation's own: the error shape is the documented ``default``
GENERIC_STATUSES = {
    405,  # another method on a documented path
    413,  # the body is over the size limit
    415,  # the body is not of the documented media type (negative examples send others)
    429,  # rate limited
}

PARTNER_SCOPES = {"points:earn", "points:burn", "members:read", "members:write",
                  "transactions:read", "settlement:read"}
OPERATOR_SCOPES = {"admin", "settlement:run"}


# --------------------------------------------------------------------------- checks


def status_code_listed(ctx: Any, response: Any, case: Any) -> bool | None:
    """The status is one the operation lists itself, or a generic one; ``default`` covers
    only the error *shape*, not the fact that an operation can answer, e.g., 404."""
    from schemathesis.core.failures import Failure

    status = response.status_code
    listed = {str(code) for code in case.operation.definition.raw.get("responses", {})}
    if str(status) in listed or status in GENERIC_STATUSES:
        return None
    raise Failure(operation=case.operation.label,
                  title="Status code not listed",
                  message=f"{status} is not among {sorted(listed - {'default'})}")


CHECKS = [not_a_server_error, status_code_conformance, status_code_listed,
          content_type_conformance, response_schema_conformance,
          response_headers_conformance]
if os.environ.get("COALITION_FUZZ_EXTRA_CHECKS"):  # exploratory: invalid input accepted
    from schemathesis.specs.openapi.checks import negative_data_rejection

    CHECKS.append(negative_data_rejection)


# --------------------------------------------------------------------------- who calls


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


#: HTTP Basic credentials as a broken or hostile client sends them: random bytes (mostly
#: not UTF-8, often without the colon), not base64 at all, empty, or another scheme; every
#: one is a 401 ``invalid_client``, never a server error
MALFORMED_BASIC = st.one_of(
    st.binary(max_size=48).map(_basic),
    st.sampled_from(["Basic", "Basic ", "Basic !!!", "Basic =", "Basic a", _basic(b":"),
                     _basic(b"no-colon"), _basic(b"\xff\xfe:\xff"), _basic(b"op_x:\xe9"),
                     _basic(b"\xc3:secret"), "Bearer x", "Digest username=x"]),
).map(lambda value: {"Authorization": value})


def uses_basic(operation: Any) -> bool:
    return any("clientBasic" in requirement
               for requirement in operation.definition.raw.get("security") or [])


def principals(operation: Any, seeded: Seeded, basic: dict[str, str]) -> list[dict[str, str]]:
    """The headers to call an operation with, by its declared security (one is drawn per
    example when several fit)."""
    security = operation.definition.raw.get("security")
    if security is None:
        return [{}]
    found: list[dict[str, str]] = []
    for requirement in security:
        if not requirement:  # anonymous allowed
            found.append({})
        if "clientBasic" in requirement:
            found.append(basic)
        scopes = set(requirement.get("oauth2", []))
        if scopes & PARTNER_SCOPES:
            found.append(seeded.acme.headers)
        if scopes & OPERATOR_SCOPES:
            found.append(seeded.operator)
        if "member" in scopes:
            closing = operation.path == "/v1/me/close"
            found.append(seeded.closer_headers if closing else seeded.member_headers)
    return found or [{}]


def real_values(seeded: Seeded) -> dict[str, list[Any]]:
    """Real values for generated parameters and body fields, by name."""
    own = seeded.acme
    return {
        "member_number": seeded.members,
        "to_member_number": seeded.members,
        "absorbed": seeded.members,
        "survivor": seeded.members,
        "transaction_id": own.transaction_ids() + seeded.bravo.transaction_ids()[:3],
        "hold_id": own.hold_ids() + seeded.bravo.hold_ids()[:2],
        "run_id": [seeded.closed_run, seeded.draft_run],
        "break_id": seeded.breaks,
        "partner": ["acme", "bravo", seeded.charity],
        "code": ["acme", "bravo", seeded.charity],
        "csv": [seeded.csv],
    }


def with_real_values(case: Any, values: dict[str, list[Any]], draw: Any) -> Any:
    """Swap each generated value that names an object for a real one, three times in four
    (and a generated CSV file for a real partner file, one time in two)."""
    for location in (case.path_parameters, case.query,
                     case.body if isinstance(case.body, dict) else None):
        if not location:
            continue
        for name in list(location):
            if name in values and draw(st.integers(0, 3)):
                location[name] = draw(st.sampled_from(values[name]))
    if case.media_type == "text/csv" and draw(st.booleans()):
        case.body = draw(st.sampled_from(values["csv"]))
    return case


def accepts(operation: Any) -> list[str | None]:
    """The media types the operation's answers come in, to ask for by ``Accept``."""
    types: set[str] = set()
    for response in operation.definition.raw.get("responses", {}).values():
        types.update((response.get("content") or {}) if isinstance(response, dict) else ())
    return [None, *sorted(types)] if len(types) > 1 else [None]


def strategy_for(operation: Any, values: dict[str, list[Any]],
                 callers: list[dict[str, str]]) -> st.SearchStrategy[Any]:
    modes = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            modes.append(operation.as_strategy(generation_mode=mode))
        except Exception:  # noqa: BLE001 - e.g. nothing to make negative
            continue

    media = accepts(operation)
    who = st.sampled_from(callers)
    if uses_basic(operation):  # the OAuth endpoints: broken credentials one time in three
        who = st.one_of(who, who, MALFORMED_BASIC)

    @st.composite
    def cases(draw: Any) -> tuple[Any, dict[str, str]]:
        case = draw(st.one_of(modes))
        headers = dict(draw(who))
        accept = draw(st.sampled_from(media))
        if accept:
            headers["Accept"] = accept
        return with_real_values(case, values, draw), headers

    return cases()


# --------------------------------------------------------------------------- the test


def destructive(operation: Any) -> bool:
    """Deleting, closing and merging go last, so the others still find the seeded run,
    breaks and members open."""
    return (operation.method.upper() == "DELETE" or operation.path.endswith("/close")
            or operation.path.endswith("/merge"))


def summary(exc: BaseException, lines: int = 40) -> str:
    """The failure report, without the long schema dumps, at most ``lines`` lines."""
    kept, skipping = [], False
    for line in str(exc).strip().splitlines():
        if line.strip() == "Schema:":
            skipping = True
            continue
        if skipping and line.strip() == "Value:":
            skipping = False
        if not skipping and line.strip():
            kept.append(line)
    return "\n".join(kept[:lines])


def fuzz(base_url: str, seeded: Seeded, basic: dict[str, str],
         examples: int) -> tuple[list[str], dict[str, Counter[int]]]:
    """Fuzz every operation; returns the failures and the statuses answered, by operation."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json",
                                           config=schemathesis.Config())
    values = real_values(seeded)
    session = requests.Session()
    failures: list[str] = []
    sent: dict[str, Counter[int]] = {}
    loaded = []
    for result in schema.get_all_operations():
        if type(result).__name__ == "Err":
            failures.append(f"an operation cannot be loaded: {summary(result.err())}")
        else:
            loaded.append(result.ok())
    for operation in sorted(loaded, key=destructive):
        callers = principals(operation, seeded, basic)
        label = operation.label
        sent[label] = Counter()

        @settings(max_examples=examples, deadline=None, database=None,
                  derandomize=not SEED,
                  suppress_health_check=list(HealthCheck),
                  phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink])
        @given(drawn=strategy_for(operation, values, callers))
        def one(drawn: tuple[Any, dict[str, str]]) -> None:
            case, headers = drawn
            response = case.call(base_url=base_url, session=session, headers=headers,
                                 timeout=30)
            sent[label][response.status_code] += 1  # noqa: B023 - called before rebinding
            case.validate_response(response, checks=CHECKS, headers=headers)

        if SEED and SEED != "random":
            one = hypothesis.seed(int(SEED))(one)
        try:
            one()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect them all
            failures.append(f"{label}: {type(exc).__name__}: {summary(exc)}")
    return failures, sent


@pytest.mark.fuzz
def test_every_operation_survives_the_fuzzer(live_server, client, make_partner,
                                             operator, operator_headers):
    seeded = seed(client, make_partner, operator_headers)
    basic = basic_auth(operator["client_id"], operator["client_secret"])
    started = time.monotonic()
    failures, sent = fuzz(live_server.url, seeded, basic, EXAMPLES)
    elapsed = time.monotonic() - started
    assert len(sent) >= 45, f"only {len(sent)} operations in the live document"
    assert all(sent.values()), [label for label, n in sent.items() if not n]
    print(f"\nfuzzed {len(sent)} operations, {sum(map(Counter.total, sent.values()))} "
          f"requests in {elapsed:.1f} s")
    for label, statuses in sent.items():
        print(f"  {label}: {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)


# --------------------------------------------------------------------------- what it found
# Each finding of the fuzzer, pinned on both backends (these are not marked ``fuzz``).


@pytest.fixture
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").get_json()


def test_fuzz_finding_every_reference_of_the_document_resolves(spec):
    """The 401/403 of protected operations named components that existed only because
    /oauth/* happened to ask for them by name."""
    import json
    import re

    refs = set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', json.dumps(spec)))
    assert refs
    for kind, name in refs:
        assert name in spec["components"][kind], f"#/components/{kind}/{name}"


def test_fuzz_finding_400_and_oauth_errors_are_documented(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict):
                assert "400" in operation["responses"], (method, path)
    oauth_error = spec["components"]["schemas"]["OAuthError"]["properties"]
    assert {"error_description", "error_uri", "code", "message", "error"} <= set(oauth_error)
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
        for status in ("400", "401"):
            content = spec["paths"][path]["post"]["responses"][status]["content"]
            assert content["application/json"]["schema"] == {
                "$ref": "#/components/schemas/OAuthError"}, (path, status)


def test_fuzz_finding_either_scope_is_documented_as_alternatives(spec):
    reversal = spec["paths"]["/v1/transactions/{transaction_id}/reversals"]["post"]
    assert reversal["security"] == [{"oauth2": ["points:earn"]}, {"oauth2": ["points:burn"]}]
    statement = spec["paths"]["/v1/settlement/runs/{run_id}/statements/{partner}"]["get"]
    assert statement["security"] == [{"oauth2": ["settlement:run"]},
                                     {"oauth2": ["settlement:read"]}]


@pytest.mark.parametrize("path", [
    "/v1/settlement/runs/{big}", "/v1/settlement/runs/{big}/statements/acme",
    "/v1/settlement/runs/{big}/matrix", "/v1/settlement/runs/{big}/breaks",
    "/v1/settlement/runs/1/breaks/{big}",
])
def test_fuzz_finding_a_run_id_beyond_64_bits_names_nothing(client, operator_headers, path):
    """SQLite's driver cannot bind such an integer (500); now the route refuses it."""
    method = "POST" if "/breaks/" in path else "GET"
    body = {"action": "accept", "reason": "because"} if method == "POST" else None
    response = client.open(path.format(big=2**63), method=method, json=body,
                           headers=operator_headers)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.get_json()["error"] == "not_found"


def test_fuzz_finding_a_nul_character_is_refused_everywhere(app, client, make_partner,
                                                           operator, operator_headers):
    """PostgreSQL text cannot hold U+0000: these were 500s there (and stored on SQLite)."""
    import base64

    from tests.conftest import snapshot

    _, acme = make_partner("acme")
    basic = base64.b64encode(f"{operator['client_id']}\0:x".encode()).decode()
    tried = [
        ("POST", "/v1/members", acme, {"json": {"partner_member_ref": "a\0b"}}, "json"),
        ("POST", "/v1/members", acme, {"json": {"partner_member_ref": "ab", "name": "A\0"}},
         "json"),
        ("GET", "/v1/members?partner_member_ref=a%00", acme, {}, "query"),
        ("GET", "/v1/admin/partners/ac%00me", operator_headers, {}, "path"),
        ("DELETE", "/v1/admin/clients/x%00", operator_headers, {}, "path"),
        ("POST", "/v1/admin/partners", operator_headers, {"json": {
            "code": "zz", "name": "Z\0", "kind": "merchant", "currency": "GBP",
            "earn_rate": "1", "issue_price": "0.01", "redeem_rate": "0.01"}}, "json"),
        ("POST", "/oauth/token", {}, {"data": {"grant_type": "client_credentials",
                                               "client_id": "a\0", "client_secret": "x"}},
         "form"),
        ("POST", "/oauth/token", {"Authorization": f"Basic {basic}"},
         {"data": {"grant_type": "client_credentials"}}, "authorization"),
        ("GET", "/oauth/authorize?client_id=a%00&response_type=code", {}, {}, "query"),
    ]
    before = snapshot(app)
    for method, path, headers, kwargs, place in tried:
        response = client.open(path, method=method, headers=headers, **kwargs)
        assert response.status_code == 400, (path, response.get_data(as_text=True))
        body = response.get_json()
        assert (body["error"], list(body["errors"])) == ("invalid_request", [place]), body
    assert snapshot(app) == before
