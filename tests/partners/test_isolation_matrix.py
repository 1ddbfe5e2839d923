"""The isolation matrix: partner acme, with tokens of every partner scope and of each one
alone, tries every partner endpoint on bravo's transactions, holds, reversals, members'
references and statements, and every operator and member endpoint (settlement runs,
reconciliation, breaks, admin) on real and on made-up objects.

Every attempt is refused without telling whether the object exists: 404 ``not_found`` for
an object that is not acme's (whatever its kind or state), 403 ``insufficient_scope`` only
for what the token may not call at all (by its scopes), and the same status, body and
headers as the same request on an object that does not exist (ids, codes and references
aside). Nothing changes: every table is as it was after each attempt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from coalition.catalog import redemptions
from coalition.clock import utcnow
from coalition.db import read
from coalition.ledger.models import Member
from coalition.oauth.models import PARTNER_SCOPES
from coalition.schemas import rfc3339
from partners.funding import configure
from tests.conftest import bearer, empty_all_tables, fetch_token, snapshot
from tests.factories.coalition import Seeded, partner_maker, seed
from tests.factories.member_records import member_token

pytestmark = pytest.mark.slow

GHOST_ID = 987654321
GHOST_CODE = "nosuch"
GHOST_REF = "no-such-ref"
CSV = "partner_txn_id,type,member_number,points,occurred_at\n"
BATCH = ("partner_txn_id,type,member_number,partner_member_ref,points,spend_amount,"
         "spend_currency,occurred_at\nops-b1,earn,{member},,2,,,\n")

#: the scopes a partner endpoint needs: one of them (``None``: open to any partner token)
NEEDS: dict[tuple[str, str], set[str]] = {
    ("GET", "/v1/members"): {"members:read"},
    ("POST", "/v1/members"): {"members:write"},
    ("GET", "/v1/members/{member_number}"): {"members:read"},
    ("GET", "/v1/members/{member_number}/balance"): {"members:read"},
    ("POST", "/v1/earn"): {"points:earn"},
    ("POST", "/v1/burn"): {"points:burn"},
    ("POST", "/v1/holds"): {"points:burn"},
    ("GET", "/v1/holds/{hold_id}"): {"points:burn"},
    ("POST", "/v1/holds/{hold_id}/capture"): {"points:burn"},
    ("POST", "/v1/holds/{hold_id}/void"): {"points:burn"},
    ("POST", "/v1/transactions/{transaction_id}/reversals"): {"points:earn", "points:burn"},
    ("GET", "/v1/transactions"): {"transactions:read"},
    ("GET", "/v1/transactions/{transaction_id}"): {"transactions:read"},
    ("GET", "/v1/settlement/runs/{run_id}/statements/{partner}"): {"settlement:read"},
    ("POST", "/v1/webhooks"): {"transactions:read"},
    ("GET", "/v1/webhooks"): {"transactions:read"},
    ("DELETE", "/v1/webhooks/{endpoint_id}"): {"transactions:read"},
    ("GET", "/v1/webhooks/{endpoint_id}/deliveries"): {"transactions:read"},
    ("POST", "/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay"):
        {"transactions:read"},
    ("POST", "/v1/batches"): {"points:earn", "points:burn"},
    ("GET", "/v1/batches"): {"points:earn", "points:burn", "transactions:read"},
    ("GET", "/v1/batches/{batch_id}"): {"points:earn", "points:burn", "transactions:read"},
    ("GET", "/v1/batches/{batch_id}/results"): {"points:earn", "points:burn",
                                                "transactions:read"},
    ("GET", "/v1/funding"): {"settlement:read"},
    ("GET", "/v1/claims"): {"transactions:read"},
    ("GET", "/v1/claims/{claim_id}"): {"transactions:read"},
    ("POST", "/v1/claims/{claim_id}/confirm"): {"points:earn"},
    ("POST", "/v1/claims/{claim_id}/refuse"): {"points:earn"},
    ("POST", "/v1/memberships"): {"members:write"},
    ("POST", "/v1/offers"): {"points:earn"},
    ("GET", "/v1/offers"): {"points:earn"},
    ("GET", "/v1/rewards"): {"points:burn"},
    ("POST", "/v1/rewards"): {"points:burn"},
    ("PATCH", "/v1/rewards/{reward_id}"): {"points:burn"},
    ("GET", "/v1/vouchers/{code}"): {"points:burn"},
    ("POST", "/v1/vouchers/{code}/redeem"): {"points:burn"},
}

#: partner endpoints that are not about another partner's objects: enrolling or linking
#: by member number is how a member joins a second partner (test_isolation.py and the
#: tests below cover that references and personal data stay each partner's own)
NOT_OBJECTS = {("POST", "/v1/members"),
               # registering an endpoint makes one of acme's own; the list shows only
               # acme's (a test below)
               ("POST", "/v1/webhooks"), ("GET", "/v1/webhooks"),
               # an upload is acme's own batch (a row naming bravo's transaction is
               # refused as one naming none: test_batches.py); the list shows acme's only
               ("POST", "/v1/batches"), ("GET", "/v1/batches"),
               # a partner's funding names no object: it is always the caller's own
               ("GET", "/v1/funding"),
               # the claims at acme's stores only (test_claims.py)
               ("GET", "/v1/claims"),
               # publishing makes a promotion of acme's own; the list shows only those
               # acme funds a share of (tests/coalition/offers/test_publish_and_earn.py)
               ("POST", "/v1/offers"), ("GET", "/v1/offers"),
               # the catalog is public; ?mine lists acme's own rewards only, and a reward
               # published is acme's own (test_rewards.py)
               ("GET", "/v1/rewards"), ("POST", "/v1/rewards")}

TOKENS = {"all": PARTNER_SCOPES, **{scope: (scope,) for scope in PARTNER_SCOPES}}


@dataclass(frozen=True)
class Attempt:
    method: str
    template: str             # the OpenAPI path it exercises
    path: str                 # on bravo's (or a real) object
    ghost: str                # the same on an object that does not exist
    body: Any = None
    ghost_body: Any = None
    csv: bool = False
    names: tuple[str, ...] = ()  # what differs between the two, for comparing messages

    def label(self) -> str:
        return f"{self.method} {self.path} {self.body if self.body is not None else ''}"


@dataclass(frozen=True)
class Operations:
    """Partner operations objects: bravo's, and acme's own where a path names both."""

    bravo_endpoint: int
    bravo_delivery: int
    acme_endpoint: int
    bravo_batch: int
    bravo_claim: int
    bravo_reward: int
    bravo_voucher: str


def attempts(s: Seeded, ops: Operations) -> list[Attempt]:
    b = s.bravo
    tried: list[Attempt] = []

    def add(method: str, template: str, path: str, ghost: str, body: Any = None,
            ghost_body: Any = None, names: tuple[str, ...] = (), csv: bool = False) -> None:
        tried.append(Attempt(method, template, path, ghost, body,
                             body if ghost_body is None else ghost_body, csv, names))

    # bravo's transactions of every kind, reversals included, on both periods and now
    for txn in b.transactions.values():
        tid = str(txn["id"])
        add("GET", "/v1/transactions/{transaction_id}", f"/v1/transactions/{tid}",
            f"/v1/transactions/{GHOST_ID}", names=(tid,))
        for body in ({"partner_txn_id": "steal-r1"},
                     {"partner_txn_id": "steal-r2", "points": 1},
                     {"partner_txn_id": "steal-r3",
                      "refund": {"amount": "1.00", "currency": "GBP"}}):
            add("POST", "/v1/transactions/{transaction_id}/reversals",
                f"/v1/transactions/{tid}/reversals",
                f"/v1/transactions/{GHOST_ID}/reversals", body, names=(tid,))
    # bravo's holds: open, voided, captured, expired
    for held in b.holds.values():
        hid = str(held["id"])
        add("GET", "/v1/holds/{hold_id}", f"/v1/holds/{hid}", f"/v1/holds/{GHOST_ID}",
            names=(hid,))
        for action, body in (("capture", {"partner_txn_id": "steal-c1"}),
                             ("capture", {"partner_txn_id": "steal-c2", "points": 1}),
                             ("void", {"partner_txn_id": "steal-v1"})):
            add("POST", f"/v1/holds/{{hold_id}}/{action}", f"/v1/holds/{hid}/{action}",
                f"/v1/holds/{GHOST_ID}/{action}", body, names=(hid,))
    # bravo's references to its members name nothing for acme
    for ref in ("b-shared", "b-only"):
        add("GET", "/v1/members", f"/v1/members?partner_member_ref={ref}",
            f"/v1/members?partner_member_ref={GHOST_REF}", names=(ref,))
        named = {"partner_member_ref": ref}
        ghost = {"partner_member_ref": GHOST_REF}
        add("POST", "/v1/earn", "/v1/earn", "/v1/earn",
            {**named, "partner_txn_id": "steal-e", "points": 5},
            {**ghost, "partner_txn_id": "steal-e", "points": 5}, names=(ref,))
        add("POST", "/v1/burn", "/v1/burn", "/v1/burn",
            {**named, "partner_txn_id": "steal-b", "points": 5},
            {**ghost, "partner_txn_id": "steal-b", "points": 5}, names=(ref,))
        add("POST", "/v1/holds", "/v1/holds", "/v1/holds",
            {**named, "partner_txn_id": "steal-h", "points": 5},
            {**ghost, "partner_txn_id": "steal-h", "points": 5}, names=(ref,))
        sale = {"partner_txn_id": "steal-m", "plan": "club",
                "price": {"amount": "5.00", "currency": "GBP"}}
        add("POST", "/v1/memberships", "/v1/memberships", "/v1/memberships",
            {**named, **sale}, {**ghost, **sale}, names=(ref,))
    # bravo's statements: of the closed run, of the draft; against a partner that does
    # not exist, and a run that does not exist
    statements = "/v1/settlement/runs/{run_id}/statements/{partner}"
    for run in (s.closed_run, s.draft_run):
        add("GET", statements, f"/v1/settlement/runs/{run}/statements/bravo",
            f"/v1/settlement/runs/{run}/statements/{GHOST_CODE}", names=("bravo",))
        add("GET", statements, f"/v1/settlement/runs/{run}/statements/bravo",
            f"/v1/settlement/runs/{GHOST_ID}/statements/bravo", names=(str(run),))
    # bravo's webhook endpoint and its deliveries; bravo's delivery under acme's endpoint
    ep, dl, own = str(ops.bravo_endpoint), str(ops.bravo_delivery), str(ops.acme_endpoint)
    add("DELETE", "/v1/webhooks/{endpoint_id}", f"/v1/webhooks/{ep}",
        f"/v1/webhooks/{GHOST_ID}", names=(ep,))
    add("GET", "/v1/webhooks/{endpoint_id}/deliveries", f"/v1/webhooks/{ep}/deliveries",
        f"/v1/webhooks/{GHOST_ID}/deliveries", names=(ep,))
    replay = "/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay"
    add("POST", replay, f"/v1/webhooks/{ep}/deliveries/{dl}/replay",
        f"/v1/webhooks/{GHOST_ID}/deliveries/{dl}/replay", names=(ep,))
    add("POST", replay, f"/v1/webhooks/{own}/deliveries/{dl}/replay",
        f"/v1/webhooks/{own}/deliveries/{GHOST_ID}/replay", names=(dl,))
    # bravo's batch and its results
    batch = str(ops.bravo_batch)
    for suffix in ("", "/results"):
        add("GET", f"/v1/batches/{{batch_id}}{suffix}", f"/v1/batches/{batch}{suffix}",
            f"/v1/batches/{GHOST_ID}{suffix}", names=(batch,))
    # a member's missing-points claim at bravo
    claim = str(ops.bravo_claim)
    add("GET", "/v1/claims/{claim_id}", f"/v1/claims/{claim}", f"/v1/claims/{GHOST_ID}",
        names=(claim,))
    for action, body in (("confirm", None), ("refuse", {"reason": "not ours"})):
        add("POST", f"/v1/claims/{{claim_id}}/{action}", f"/v1/claims/{claim}/{action}",
            f"/v1/claims/{GHOST_ID}/{action}", body, names=(claim,))
    # bravo's reward, and a voucher of it
    reward, code = str(ops.bravo_reward), ops.bravo_voucher
    add("PATCH", "/v1/rewards/{reward_id}", f"/v1/rewards/{reward}",
        f"/v1/rewards/{GHOST_ID}", {"name": "Stolen"}, names=(reward,))
    ghost_code = "A" * len(code)
    add("GET", "/v1/vouchers/{code}", f"/v1/vouchers/{code}", f"/v1/vouchers/{ghost_code}",
        names=(code, ghost_code))
    add("POST", "/v1/vouchers/{code}/redeem", f"/v1/vouchers/{code}/redeem",
        f"/v1/vouchers/{ghost_code}/redeem", names=(code, ghost_code))
    # acme's own statement of the draft run does not exist for acme yet either
    add("GET", statements, f"/v1/settlement/runs/{s.draft_run}/statements/acme",
        f"/v1/settlement/runs/{GHOST_ID}/statements/acme", names=(str(s.draft_run),))
    return tried


def operator_attempts(s: Seeded, spec: dict[str, Any]) -> list[Attempt]:
    """Every operation for operator or member tokens, on real objects and on ghosts."""
    real = {"run_id": str(s.draft_run), "break_id": str(s.breaks[0]), "partner": "bravo",
            "code": "bravo", "client_id": "op-unknown", "member_number": s.shared,
            "login": "staff@bravo", "offer_id": "1"}
    ghost = {"run_id": str(GHOST_ID), "break_id": str(GHOST_ID), "partner": GHOST_CODE,
             "code": GHOST_CODE, "client_id": "op-unknown", "member_number": s.shared,
             "login": "staff@bravo", "offer_id": str(GHOST_ID)}
    bodies: dict[str, Any] = {
        "/v1/settlement/runs": {"period_start": "2001-03-02", "period_end": "2001-03-03"},
        "/v1/settlement/runs/{run_id}/breaks/{break_id}": {"action": "accept",
                                                          "reason": "acme says so"},
        "/v1/admin/members/merge": {"absorbed": s.bravo_only, "survivor": s.shared},
        "/v1/me/transfers": {"to_member_number": s.shared, "points": 1},
        "/v1/me/donations": {"partner": s.charity, "points": 1},
    }
    tried = []
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            requirements = operation.get("security") if isinstance(operation, dict) else None
            scopes = {scope for r in requirements or () for scope in r.get("oauth2", ())}
            if not scopes or scopes & set(PARTNER_SCOPES):
                continue
            path = ghost_path = template
            names = []
            for name in re.findall(r"{(\w+)}", template):
                path = path.replace(f"{{{name}}}", real[name])
                ghost_path = ghost_path.replace(f"{{{name}}}", ghost[name])
                names.append(real[name])
            csv = template.endswith("/reconciliations/{partner}")
            body = (CSV if csv else bodies.get(template, {} if method in ("post", "put")
                                               else None))
            tried.append(Attempt(method.upper(), template, path, ghost_path, body, body,
                                 csv, tuple(names)))
    return tried


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def seeded(_migrated_app) -> Iterator[Seeded]:
    """One coalition per backend for the whole module: nothing here may change it (every
    test asserts so), so the tests share it."""
    from coalition.oauth.clients import create_operator_client

    app = _migrated_app
    client = app.test_client()
    try:
        with app.app_context():
            issued = create_operator_client(["admin", "settlement:run"], name="matrix operator")
            operator = bearer(fetch_token(client, issued.client_id, issued.client_secret))
            s = seed(client, partner_maker(client), operator, signed_in=False)
            # what acme is refused exists, and bravo reaches it
            for txn in s.bravo.transactions.values():
                got = client.get(f"/v1/transactions/{txn['id']}", headers=s.bravo.headers)
                assert got.status_code == 200, got.get_json()
            for held in s.bravo.holds.values():
                got = client.get(f"/v1/holds/{held['id']}", headers=s.bravo.headers)
                assert got.status_code == 200, got.get_json()
            statement = client.get(f"/v1/settlement/runs/{s.closed_run}/statements/bravo",
                                   headers=s.bravo.headers)
            assert statement.status_code == 200 and statement.get_json()["issued_points"] > 0
            own = client.get(f"/v1/settlement/runs/{s.closed_run}/statements/acme",
                             headers=s.acme.headers)
            assert own.status_code == 200, own.get_json()
            yield s
    finally:
        empty_all_tables(app)


@pytest.fixture(scope="module")
def ops(_migrated_app, seeded) -> Operations:
    """Bravo's webhook endpoint with a delivery (an earn it reported), and an endpoint of
    acme's own."""
    client = _migrated_app.test_client()
    with _migrated_app.app_context():
        def endpoint(headers: dict[str, str]) -> int:
            made = client.post("/v1/webhooks", headers=headers, json={
                "url": "https://hooks.example.com/in", "events": ["transaction.booked"]})
            assert made.status_code == 201, made.get_json()
            return int(made.get_json()["id"])

        bravo = endpoint(seeded.bravo.headers)
        earned = client.post("/v1/earn", headers=seeded.bravo.headers, json={
            "member_number": seeded.bravo_only, "partner_txn_id": "ops-e1", "points": 3})
        assert earned.status_code == 201, earned.get_json()
        deliveries = client.get(f"/v1/webhooks/{bravo}/deliveries",
                                headers=seeded.bravo.headers).get_json()["items"]
        configure("bravo", {"points": 1000, "price": Decimal("1.00"), "currency": "GBP"})
        batch = client.post("/v1/batches", headers={**seeded.bravo.headers,
                                                    "Content-Type": "text/csv"},
                            data=BATCH.format(member=seeded.bravo_only))
        assert batch.status_code == 202, batch.get_json()
        claim = client.post("/v1/me/claims", headers=member_token(seeded.bravo_only), json={
            "partner": "bravo", "receipt": "ops-r1",
            "spend": {"amount": "9.99", "currency": "GBP"},
            "occurred_at": rfc3339(utcnow() - timedelta(days=1))})
        assert claim.status_code == 201, claim.get_json()
        reward = client.post("/v1/rewards", headers=seeded.bravo.headers, json={
            "name": "Mug", "kind": "product", "points": 1})
        assert reward.status_code == 201, reward.get_json()
        with read() as session:
            member = session.scalar(select(Member.id).where(
                Member.member_number == seeded.bravo_only))
        voucher = redemptions.redeem(member, reward.get_json()["id"]).body["voucher_code"]
        return Operations(bravo, deliveries[0]["id"], endpoint(seeded.acme.headers),
                          batch.get_json()["id"], claim.get_json()["id"],
                          reward.get_json()["id"], voucher)


@pytest.fixture
def client(_migrated_app, seeded, ops) -> Iterator[FlaskClient]:
    """A client on the module's coalition (not conftest's, which empties every table
    after each test)."""
    with _migrated_app.app_context():
        yield _migrated_app.test_client()


def acme_token(client, scopes: tuple[str, ...]) -> dict[str, str]:
    from partners.service import issue_partner_client

    issued = issue_partner_client("acme", list(scopes))
    return bearer(fetch_token(client, issued.client_id, issued.client_secret))


def send(client, attempt: Attempt, headers: dict[str, str], ghost: bool = False) -> Any:
    path = attempt.ghost if ghost else attempt.path
    body = attempt.ghost_body if ghost else attempt.body
    if attempt.csv:
        return client.open(path, method=attempt.method, data=body,
                           headers={**headers, "Content-Type": "text/csv"})
    return client.open(path, method=attempt.method, json=body, headers=headers)


def shape(response: Any, names: tuple[str, ...]) -> Any:
    """What a caller learns: status, body and headers, less the ids, codes and references
    it sent itself (``names``, and those of the ghost)."""
    text = response.get_data(as_text=True)
    for name in sorted({*names, str(GHOST_ID), GHOST_CODE, GHOST_REF}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", "NAME", text)
    headers = {k: v for k, v in response.headers.items()
               if k in ("Content-Type", "WWW-Authenticate", "Allow", "Retry-After",
                        "Idempotent-Replayed")}
    names_sent = sorted(k.lower() for k in response.headers.keys()
                        if k not in ("Date", "Content-Length"))
    return response.status_code, text, headers, names_sent


def expected(attempt: Attempt, scopes: tuple[str, ...]) -> tuple[int, set[str]]:
    needs = NEEDS.get((attempt.method, attempt.template))
    if needs is None:  # operator and member endpoints: no partner holds their scopes
        return 403, {"insufficient_scope"}
    if not needs & set(scopes):
        return 403, {"insufficient_scope"}
    return 404, {"not_found"}


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("token", list(TOKENS))
def test_acme_is_refused_everything_of_bravos_and_learns_nothing(client, seeded, ops, token):
    headers = acme_token(client, TOKENS[token])
    spec = client.get("/openapi.json").get_json()
    baseline = snapshot(client.application)
    failures = []
    tried = attempts(seeded, ops) + operator_attempts(seeded, spec)
    for attempt in tried:
        status, codes = expected(attempt, TOKENS[token])
        theirs = send(client, attempt, headers)
        ghost = send(client, attempt, headers, ghost=True)
        try:
            if attempt.method != "GET":  # the GETs are checked together, at the end
                assert snapshot(client.application) == baseline, "a table changed"
            body = theirs.get_json()
            assert (theirs.status_code, body["error"] in codes) == (status, True), \
                f"{theirs.status_code} {body}"
            assert set(body) <= {"code", "status", "message", "error", "errors"}, body
            assert shape(theirs, attempt.names) == shape(ghost, attempt.names), \
                f"answers differ: {theirs.get_json()} / {ghost.get_json()}"
        except AssertionError as exc:
            failures.append(f"{attempt.label()}: {str(exc).splitlines()[0]}")
            baseline = snapshot(client.application)
    if snapshot(client.application) != baseline:
        failures.append("a table changed")
    assert not failures, f"{len(failures)} of {len(tried)}:\n" + "\n".join(failures)


def test_the_matrix_covers_every_protected_operation(client, seeded, ops):
    """A new endpoint joins the matrix, or says here why it need not."""
    spec = client.get("/openapi.json").get_json()
    covered = {(a.method, a.template) for a in attempts(seeded, ops)}
    covered |= {(a.method, a.template) for a in operator_attempts(seeded, spec)}
    covered |= NOT_OBJECTS | {("GET", "/v1/members/{member_number}"),
                              ("GET", "/v1/members/{member_number}/balance"),
                              ("GET", "/v1/transactions")}  # tests below
    protected = {(method.upper(), path) for path, item in spec["paths"].items()
                 for method, operation in item.items()
                 if isinstance(operation, dict) and any(
                     "oauth2" in r for r in operation.get("security") or ())}
    assert protected - covered == set()
    partner = {(method.upper(), path) for path, item in spec["paths"].items()
               for method, operation in item.items()
               if isinstance(operation, dict) and any(
                   set(r.get("oauth2", ())) & set(PARTNER_SCOPES)
                   for r in operation.get("security") or ())}
    assert partner == set(NEEDS), "NEEDS lists every partner endpoint"


# --------------------------------------------------------------------------- members


def test_bravos_member_shows_acme_no_reference_and_no_personal_data(client, seeded):
    """Member numbers are coalition-wide (a member earns anywhere), but what bravo knows
    of its member stays bravo's."""
    headers = acme_token(client, PARTNER_SCOPES)
    before = snapshot(client.application)
    member = client.get(f"/v1/members/{seeded.bravo_only}", headers=headers).get_json()
    assert member["member_number"] == seeded.bravo_only
    assert (member["partner_member_ref"], member["name"], member["email"],
            member["birth_date"]) == (None, None, None, None)
    assert "activation_code" not in member
    shared = client.get(f"/v1/members/{seeded.shared}", headers=headers).get_json()
    assert shared["partner_member_ref"] == "a-shared"  # acme's own, never "b-shared"
    balance = client.get(f"/v1/members/{seeded.bravo_only}/balance", headers=headers)
    assert balance.status_code == 200
    assert snapshot(client.application) == before


def test_history_of_a_shared_member_shows_acme_only_its_own(client, seeded):
    headers = acme_token(client, ("transactions:read",))
    for member in (seeded.shared, seeded.bravo_only):
        page = client.get("/v1/transactions", query_string={"member_number": member,
                                                            "limit": 500}, headers=headers)
        assert page.status_code == 200, page.get_json()
        items = page.get_json()["items"]
        assert {t["partner"] for t in items} <= {"acme"}
        assert not {t["id"] for t in items} & set(seeded.bravo.transaction_ids())


def test_a_partner_linking_a_member_sees_no_personal_data_it_did_not_supply(client, seeded):
    """Personal data is the member's: acme linked bravo's member Ada by her number and
    supplied nothing, so no answer acme gets that shows her carries her name, e-mail or
    birth date (bravo, which supplied them, sees them)."""
    headers = acme_token(client, PARTNER_SCOPES)
    before = snapshot(client.application)
    shared = seeded.shared
    answers = {
        "get": client.get(f"/v1/members/{shared}", headers=headers),
        "by reference": client.get("/v1/members",
                                   query_string={"partner_member_ref": "a-shared"},
                                   headers=headers),
        "link again": client.post("/v1/members", json={"partner_member_ref": "a-shared",
                                                       "member_number": shared},
                                  headers=headers),
        "find by reference": client.post("/v1/members",
                                         json={"partner_member_ref": "a-shared"},
                                         headers=headers),
        "balance": client.get(f"/v1/members/{shared}/balance", headers=headers),
        "history": client.get("/v1/transactions",
                              query_string={"member_number": shared, "limit": 500},
                              headers=headers),
    }
    for what, answer in answers.items():
        assert answer.status_code == 200, (what, answer.get_json())
        text = answer.get_data(as_text=True)
        assert "Ada" not in text and "ada@example.com" not in text, what
        body = answer.get_json()
        if "partner_member_ref" in body:
            assert (body["member_number"], body["partner_member_ref"]) == (shared, "a-shared")
            assert (body["name"], body["email"], body["birth_date"]) == (None, None, None), \
                what
    assert snapshot(client.application) == before
    theirs = client.get(f"/v1/members/{shared}", headers=seeded.bravo.headers).get_json()
    assert (theirs["name"], theirs["email"]) == ("Ada", "ada@example.com")


# --------------------------------------------------------------------------- operations


def test_acme_lists_only_its_own_webhook_endpoints(client, seeded, ops):
    headers = acme_token(client, ("transactions:read",))
    listed = client.get("/v1/webhooks", headers=headers).get_json()
    assert [e["id"] for e in listed] == [ops.acme_endpoint]
    theirs = client.get("/v1/webhooks", headers=seeded.bravo.headers).get_json()
    assert [e["id"] for e in theirs] == [ops.bravo_endpoint]


def test_acme_lists_only_its_own_batches(client, seeded, ops):
    headers = acme_token(client, ("transactions:read",))
    assert client.get("/v1/batches", headers=headers).get_json() == []
    theirs = client.get("/v1/batches", headers=seeded.bravo.headers).get_json()
    assert [b["id"] for b in theirs] == [ops.bravo_batch]



def test_acme_sees_only_its_own_funding(client, seeded, ops):
    headers = acme_token(client, ("settlement:read",))
    mine = client.get("/v1/funding", headers=headers).get_json()
    assert (mine["model"], mine["blocks"]) == ("postpaid", [])
    theirs = client.get("/v1/funding", headers=seeded.bravo.headers).get_json()
    assert (theirs["model"], len(theirs["blocks"])) == ("prepaid", 1)
