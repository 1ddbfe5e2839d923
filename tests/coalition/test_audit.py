"""The audit log: every operator and finance action, who did it, when and what, written in
the action's own transaction; append-only; read through the admin API and the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import g
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from coalition.audit.service import Actor, list_events
from coalition.audit.views import current_actor
from coalition.db import db, utcnow
from coalition.oauth.server import Principal
from tests.conftest import bearer, fetch_token, snapshot
from tests.factories.clock import held_at
from tests.factories.partner_api import RULES, assert_error, earn, enrol, publish
from tests.factories.settlement import T0, csv_rows, iso, resolve, upload

PARTNER = {"code": "northwind", "name": "Northwind Grocers", "kind": "merchant",
           "currency": "GBP", "earn_rate": "1", "issue_price": "0.0100",
           "redeem_rate": "0.008", "valid_from": "2026-01-01"}


def audit(client, headers, **query: Any) -> Any:
    return client.get("/v1/admin/audit", headers=headers, query_string=query)


def recorded(actor: str | None = None) -> list[dict[str, Any]]:
    """Events in the order they happened."""
    return list(reversed(list_events(actor=actor, limit=500)["items"]))


def by(headers: dict[str, str], request_id: str) -> dict[str, str]:
    return {**headers, "X-Request-ID": request_id}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json(silent=True)


# --------------------------------------------------------------------------- recording


def test_operator_actions_are_recorded_with_who_when_and_what(app, client, operator,
                                                              operator_headers, make_partner):
    op = operator["client_id"]
    started = utcnow()
    ok(client.post("/v1/admin/partners", json=PARTNER, headers=by(operator_headers, "r1")),
       201)
    ok(client.post("/v1/admin/partners/northwind/rates", headers=by(operator_headers, "r2"),
                   json={"valid_from": "2999-01-01", "issue_price": "0.02"}), 201)
    issued = ok(client.post("/v1/admin/partners/northwind/clients",
                            headers=by(operator_headers, "r3"),
                            json={"scopes": ["points:earn"], "name": "till"}), 201)
    pt = issued["client_id"]
    rotated = ok(client.post(f"/v1/admin/partners/northwind/clients/{pt}/secret",
                             headers=by(operator_headers, "r4")))
    ok(client.delete(f"/v1/admin/partners/northwind/clients/{pt}",
                     headers=by(operator_headers, "r5")), 204)
    public = ok(client.post("/v1/admin/clients", headers=by(operator_headers, "r6"),
                            json={"name": "Member app",
                                  "redirect_uris": ["https://app.example/cb"]}), 201)
    ok(client.delete(f"/v1/admin/clients/{public['client_id']}",
                     headers=by(operator_headers, "r7")), 204)
    ok(client.put("/v1/admin/program", json=RULES, headers=by(operator_headers, "r8")))
    _, acme = make_partner("acme")
    x, s = enrol(client, acme, "x"), enrol(client, acme, "s")
    earn(client, acme, x, "x-1", 40)
    merged = ok(client.post("/v1/admin/members/merge", headers=by(operator_headers, "r9"),
                            json={"absorbed": x, "survivor": s}))
    finished = utcnow()

    events = recorded(actor=op)
    assert [(e["action"], e["target"], e["request_id"]) for e in events] == [
        ("partner.created", "partner:northwind", "r1"),
        ("partner.rate_card_added", "partner:northwind", "r2"),
        ("client.issued", f"client:{pt}", "r3"),
        ("client.rotated", f"client:{pt}", "r4"),
        ("client.revoked", f"client:{pt}", "r5"),
        ("client.issued", f"client:{public['client_id']}", "r6"),
        ("client.revoked", f"client:{public['client_id']}", "r7"),
        ("program.published", "program:1", "r8"),
        ("member.merged", f"member:{x}", "r9"),
    ]
    for event in events:
        assert (event["actor"], event["actor_user"]) == (op, None)
        assert started <= event["occurred_at"] <= finished
    details = [e["details"] for e in events]
    assert details[0] == {"code": "northwind", "name": "Northwind Grocers", "kind": "merchant",
                          "currency": "GBP", "rate_card": {
                              "valid_from": "2026-01-01T00:00:00Z", "earn_rate": "1",
                              "issue_price": "0.01", "redeem_rate": "0.008"}}
    assert details[1]["rate_card"] == {"valid_from": "2999-01-01T00:00:00Z",
                                       "earn_rate": "1", "issue_price": "0.02",
                                       "redeem_rate": "0.008"}
    assert details[2] == {"kind": "partner", "partner": "northwind", "name": "till",
                          "scopes": ["points:earn"]}
    assert details[3] == {"kind": "partner", "partner": "northwind", "name": "till",
                          "tokens_revoked": 0}
    assert details[5] == {"kind": "public", "name": "Member app", "scopes": ["member"],
                          "redirect_uris": ["https://app.example/cb"]}
    assert details[7]["version"] == 1 and details[7]["rules"]["pending_days"] == 0
    assert details[8] == {"absorbed": x, "survivor": s, "entry_id": merged["entry_id"],
                          "moved": merged["moved"]}
    # no secret is ever recorded
    everything = json.dumps(list_events(limit=500), default=str)
    for secret in (issued["client_secret"], rotated["client_secret"],
                   operator["client_secret"]):
        assert secret not in everything
    # the fixtures' own clients and partner were made by code, not by a person
    system = {(e["action"], e["target"].split(":")[0]) for e in recorded(actor="system")}
    assert system == {("client.issued", "client"), ("partner.created", "partner")}


@pytest.fixture
def run_with_breaks(client, operator_headers, make_partner, clock):
    """A draft run of [T0, T0 + 10 s), booked with the clock held at T0, with acme's
    file giving two breaks: a points mismatch (e-1) and a record missing in the ledger
    (ghost); the run is made at the present time."""
    clock.set(T0)
    publish(client, operator_headers)
    _, acme = make_partner("acme", valid_from=T0 - timedelta(days=1))
    member = enrol(client, acme, "m")
    earn(client, acme, member, "e-1", 100)
    clock.held = None
    run = ok(client.post("/v1/settlement/runs", headers=by(operator_headers, "s1"),
                         json={"period_start": iso(T0),
                               "period_end": iso(T0 + timedelta(seconds=10))}), 201)
    report = ok(upload(client, by(operator_headers, "s2"), run["id"], "acme",
                       csv_rows(("e-1", "earn", member, 120, iso(T0)),
                                ("ghost", "earn", member, 5, iso(T0)))), 201)
    breaks = {b["partner_txn_id"]: b for b in report["breaks"]}
    return run, report, breaks


def test_settlement_actions_are_recorded(client, operator, operator_headers,
                                         run_with_breaks):
    op = operator["client_id"]
    run, report, breaks = run_with_breaks
    rid = run["id"]
    ok(resolve(client, by(operator_headers, "s3"), rid, breaks["ghost"]["id"], "accept",
               reason="not ours", user="Dana"))
    adjusted = ok(resolve(client, by(operator_headers, "s4"), rid, breaks["e-1"]["id"],
                          "adjust", reason="partner is right"))
    closed = ok(client.post(f"/v1/settlement/runs/{rid}/close",
                            headers=by(operator_headers, "s5")))
    old = ok(client.post("/v1/settlement/runs", headers=by(operator_headers, "s6"),
                         json={"period_start": "2000-01-01", "period_end": "2000-02-01"}), 201)
    ok(client.post(f"/v1/settlement/runs/{old['id']}/recompute",
                   headers=by(operator_headers, "s7")))
    ok(client.delete(f"/v1/settlement/runs/{old['id']}", headers=by(operator_headers, "s8")),
       204)

    events = [e for e in recorded(actor=op) if e["action"].startswith("settlement.")]
    assert [(e["action"], e["target"], e["request_id"]) for e in events] == [
        ("settlement.run_created", f"run:{rid}", "s1"),
        ("settlement.reconciliation_uploaded", f"run:{rid}", "s2"),
        ("settlement.break_accepted", f"break:{breaks['ghost']['id']}", "s3"),
        ("settlement.break_adjusted", f"break:{breaks['e-1']['id']}", "s4"),
        ("settlement.run_closed", f"run:{rid}", "s5"),
        ("settlement.run_created", f"run:{old['id']}", "s6"),
        ("settlement.run_recomputed", f"run:{old['id']}", "s7"),
        ("settlement.run_deleted", f"run:{old['id']}", "s8"),
    ]
    created, uploaded, accepted, adjusting, closing = (e["details"] for e in events[:5])
    assert created["digest"] == run["digest"]
    assert created["period_end"] == run["period_end"]
    assert uploaded == {"partner": "acme", "reconciliation_id": report["id"],
                        "file_sha256": report["file_sha256"], "rows": 2,
                        "summary": report["summary"], "superseded": []}
    assert accepted == {"run": rid, "partner": "acme", "kind": "missing_in_ledger",
                        "partner_txn_id": "ghost", "reason": "not ours",
                        "resolved_by": "Dana", "adjustment_entry_id": None}
    assert adjusting["kind"] == "points_mismatch"
    assert adjusting["adjustment_entry_id"] == adjusted["adjustment_entry_id"] is not None
    assert closing["digest"] == closed["digest"] and closing["closed_by"] == op
    assert events[6]["details"]["changed"] is False


def test_refused_actions_record_nothing(app, client, operator_headers, run_with_breaks):
    run, _, breaks = run_with_breaks
    rid = run["id"]
    ok(resolve(client, operator_headers, rid, breaks["ghost"]["id"], "accept"))
    ok(client.post("/v1/admin/partners", json=PARTNER, headers=operator_headers), 201)
    before = snapshot(app)
    assert before["audit_event"]

    post, put = client.post, client.put
    h = operator_headers
    assert_error(post("/v1/admin/partners", json=PARTNER, headers=h), 409, "already_exists")
    assert_error(post("/v1/admin/partners/northwind/rates", headers=h,
                      json={"valid_from": PARTNER["valid_from"], "earn_rate": "2"}), 422,
                 "invalid_request")
    assert_error(post("/v1/admin/partners/nobody/clients", headers=h,
                      json={"scopes": ["points:earn"]}), 404, "not_found")
    assert_error(post("/v1/admin/partners/northwind/clients/pt_nobody/secret", headers=h),
                 404, "not_found")
    assert_error(client.delete("/v1/admin/clients/pub_nobody", headers=h), 404, "not_found")
    assert_error(post("/v1/admin/clients", headers=h, json={
        "name": "x", "redirect_uris": ["http://evil.example/cb"]}), 422, "invalid_request")
    assert_error(put("/v1/admin/program", headers=h, json={**RULES, "pending_days": -1}),
                 422, "invalid_request")
    assert_error(post("/v1/admin/members/merge", headers=h, json={
        "absorbed": "400000000006", "survivor": "400000000006"}), 422, "invalid_request")
    assert_error(post("/v1/settlement/runs", headers=h, json={
        "period_start": run["period_start"], "period_end": run["period_end"]}), 409,
        "period_overlap")
    assert_error(post(f"/v1/settlement/runs/{rid}/close", headers=h), 409,
                 "unresolved_breaks")
    assert_error(resolve(client, h, rid, breaks["ghost"]["id"], "accept"), 409,
                 "break_resolved")
    assert_error(upload(client, h, rid, "nobody", "partner_txn_id\n"), 422, "invalid_request")
    assert_error(post(f"/v1/settlement/runs/{rid + 1}/recompute", headers=h), 404,
                 "not_found")
    assert snapshot(app) == before


def test_the_audit_table_refuses_update_and_delete(app, make_partner):
    make_partner("acme")
    for statement in ("UPDATE audit_event SET actor = 'someone else'",
                      "DELETE FROM audit_event"):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))
    assert [e["actor"] for e in recorded()] == ["system", "system"]


# --------------------------------------------------------------------------- who


def test_a_finance_users_name_is_the_person_behind_the_client(app):
    principal = Principal("pub_finance", "public", None, frozenset({"settlement:run"}),
                          finance_user="dana")
    with app.test_request_context("/v1/settlement/runs"):
        g.principal = principal
        assert current_actor() == Actor("pub_finance", "dana", None)
    assert str(Actor("pub_finance", "dana")) == "pub_finance (dana)"


def test_cli_actions_are_recorded_as_cli_and_listed(app, monkeypatch):
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "ops-anna")
    runner = app.test_cli_runner()
    created = runner.invoke(args=["partner", "create", "--code", "acme", "--name", "Acme",
                                  "--currency", "GBP", "--earn-rate", "1",
                                  "--issue-price", "0.01", "--redeem-rate", "0.008"])
    assert created.exit_code == 0, created.output
    issued = runner.invoke(args=["partner", "client", "acme", "--scope", "points:earn",
                                 "--json"])
    assert issued.exit_code == 0, issued.output
    secret = json.loads(issued.output)["client_secret"]

    listed = runner.invoke(args=["audit", "list", "--actor", "cli", "--json"])
    assert listed.exit_code == 0, listed.output
    page = json.loads(listed.output)
    assert page["next_cursor"] is None
    assert [(e["action"], e["actor"], e["actor_user"], e["request_id"])
            for e in page["items"]] == [("client.issued", "cli", "ops-anna", None),
                                        ("partner.created", "cli", "ops-anna", None)]
    assert page["items"][1]["occurred_at"].endswith("Z")
    assert secret not in listed.output

    text_ = runner.invoke(args=["audit", "list", "--action", "partner.created"])
    assert text_.exit_code == 0, text_.output
    assert "partner.created" in text_.output and "cli (ops-anna)" in text_.output
    paged = runner.invoke(args=["audit", "list", "--limit", "1"])
    assert "more: --cursor " in paged.output
    assert runner.invoke(args=["audit", "list", "--action", "nonsense"]).exit_code == 2
    assert runner.invoke(args=["audit", "list", "--from", "yesterday"]).exit_code == 2
    assert runner.invoke(args=["audit", "list", "--cursor", "!!"]).exit_code == 2


# --------------------------------------------------------------------------- reading


def test_the_admin_api_pages_newest_first_and_filters(app, client, operator_headers):
    from partners.service import create_partner

    def partner(code: str, actor: Actor, at: datetime) -> None:
        with held_at(at):
            create_partner(code=code, name=code, kind="merchant", currency="GBP",
                           earn_rate=Decimal(1), issue_price=Decimal(0),
                           redeem_rate=Decimal(0), actor=actor)

    middle = utcnow().replace(microsecond=0) + timedelta(days=1)
    partner("p1", Actor("op_a"), middle - timedelta(seconds=2))
    partner("p2", Actor("op_b"), middle - timedelta(seconds=1))
    partner("p3", Actor("pub_finance", "dana"), middle)
    partner("p4", Actor("op_a"), middle + timedelta(seconds=1))

    seen, cursor = [], None
    while True:
        query = {"limit": 2, "action": "partner.created"}
        if cursor:
            query["cursor"] = cursor
        page = ok(audit(client, operator_headers, **query))
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["target"] for e in seen] == ["partner:p4", "partner:p3", "partner:p2",
                                           "partner:p1"]
    assert set(seen[0]) == {"id", "occurred_at", "action", "actor", "actor_user", "target",
                            "details", "request_id"}
    assert seen[0]["occurred_at"].endswith("Z")

    def targets(**query: Any) -> list[str]:
        return [e["target"] for e in ok(audit(client, operator_headers, **query))["items"]]

    assert targets(actor="op_a") == ["partner:p4", "partner:p1"]
    assert targets(actor="dana") == targets(actor="pub_finance") == ["partner:p3"]
    assert targets(action="partner.created", **{"from": iso(middle)}) == [
        "partner:p4", "partner:p3"]
    assert targets(action="partner.created", to=iso(middle)) == ["partner:p2", "partner:p1"]
    assert targets(action="member.merged") == []

    for query, field in (({"cursor": "bm9wZQ"}, "cursor"), ({"action": "nonsense"}, "action"),
                         ({"limit": 0}, "limit"), ({"from": "yesterday"}, "from")):
        assert_error(audit(client, operator_headers, **query), 422, "invalid_request",
                     {field})


def test_the_admin_api_is_for_operators_with_the_admin_scope(client, make_partner):
    from coalition.oauth.clients import create_operator_client

    _, acme = make_partner("acme")
    finance = create_operator_client(["settlement:run"])
    finance_h = bearer(fetch_token(client, finance.client_id, finance.client_secret))
    assert_error(audit(client, {}), 401, "unauthorized")
    assert_error(audit(client, bearer("nonsense")), 401, "unauthorized")
    assert_error(audit(client, acme), 403, "insufficient_scope")
    assert_error(audit(client, finance_h), 403, "insufficient_scope")
