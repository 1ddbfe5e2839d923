"""The demo coalition with its history (``coalition demo load --with-history``), the
samples in docs/samples/, and what the command line prints about them: RFC 3339 UTC
timestamps, partners named by code, runs' CSV rows that say which run they belong to,
and English plurals."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coalition.ledger.check import check_ledger
from coalition.ledger.models import TRANSACTION_TYPES
from coalition.wording import breaks_to_resolve, plural, reconciliation_counts, verb
from partners.demo import history_file, load_history
from settlement.reconcile import parse
from tests.conftest import bearer, fetch_token, snapshot

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "docs" / "samples"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture
def demo(app):
    """The demo coalition loaded through the command, with its history."""
    result = app.test_cli_runner().invoke(args=["demo", "load", "--with-history", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def operator_token(client, demo) -> dict[str, str]:
    [op] = [c for c in demo["clients"] if c["for"] == "operator"]
    return bearer(fetch_token(client, op["client_id"], op["client_secret"]))


def test_the_history_books_every_kind_of_transaction(app, client, demo):
    history = demo["history"]
    assert history["transactions"] == 18 and history["replayed"] == 0
    assert sorted(history["members"]) == ["ada", "alan", "grace", "katherine"]
    assert check_ledger().ok
    headers = operator_token(client, demo)
    [northwind] = [c for c in demo["clients"] if c["for"] == "northwind"]
    till = bearer(fetch_token(client, northwind["client_id"], northwind["client_secret"]))
    kinds = {t["type"] for t in client.get("/v1/transactions?limit=100",
                                           headers=till).get_json()["items"]}
    # (and grace's VIP membership, sold at Northwind's till)
    assert kinds == {"earn", "burn", "hold_capture", "earn_reversal", "membership_sale"}
    ada = client.get(f"/v1/members/{history['members']['ada']}/balance", headers=till)
    # 420 + 120 earned (+100 welcome), 300 spent, 100 refunded, 20 reversed, 200 spent,
    # 150 redeemed for the shopping bag
    assert ada.status_code == 200 and ada.get_json()["available"] == 70
    rewards = client.get("/v1/rewards").get_json()["items"]
    assert len(rewards) == 5
    assert [r["name"] for r in rewards if r["plan"] == "vip"] == ["VIP tasting evening"]
    # grace holds the VIP membership, sold for money at northwind's till
    assert history["membership"]["member"] == "grace"
    assert history["membership"]["plan"] == "vip"
    plans = client.get("/v1/program/memberships").get_json()["plans"]
    assert [p["code"] for p in plans] == ["club", "vip"]
    assert headers  # the operator's client works too


def test_loading_the_history_again_books_nothing_twice(app, demo):
    before = snapshot(app)
    again = load_history(history_file().read_text())
    assert again["replayed"] == again["transactions"] == 18
    assert again["members"] == demo["history"]["members"]
    assert snapshot(app) == before
    rerun = app.test_cli_runner().invoke(args=["demo", "load", "--with-history"])
    assert rerun.exit_code == 0 and rerun.output == "demo coalition already loaded\n"
    assert snapshot(app) == before


def test_a_bad_history_file_is_refused_before_anything_is_booked(app, tmp_path):
    bad = tmp_path / "history.csv"
    bad.write_text("partner,partner_txn_id,type,member,points,spend_amount,spend_currency,"
                   "reference\nnorthwind,x-1,earn,nobody,10,,,\n")
    result = app.test_cli_runner().invoke(args=["demo", "load", "--history-file", str(bad)])
    assert result.exit_code == 1
    assert "Line 2 of the demo history names an unknown partner, type or member." \
        in result.output


def test_the_demo_can_be_settled_on_first_start(app, client, demo, tmp_path, clock):
    headers = operator_token(client, demo)
    # the period ends at a whole second after the last booking: the clock is moved there
    end = clock.set(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1))
    start = end - timedelta(days=1)
    run = client.post("/v1/settlement/runs", headers=headers, json={
        "period_start": start.isoformat(), "period_end": end.isoformat()})
    assert run.status_code == 201, run.get_json()
    body = run.get_json()
    issued = {s["partner"]: s["issued_points"] for s in body["statements"]}
    assert issued == {"greenhearts": 0, "northwind": 1913, "skyline": 1124}

    # the CSV export: every row names the run, its period and its money model
    export = client.get(f"/v1/settlement/runs/{body['id']}/export",
                        headers={**headers, "Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert list(rows[0])[:4] == ["run_id", "period_start", "period_end", "model"]
    assert {(r["run_id"], r["period_start"], r["period_end"]) for r in rows} == {
        (str(body["id"]), start.strftime("%Y-%m-%dT%H:%M:%SZ"),
         end.strftime("%Y-%m-%dT%H:%M:%SZ"))}
    assert {r["section"] for r in rows} == {"statement", "total", "payment", "coalition"}

    # the reconciliation sample, through the command line
    runner = app.test_cli_runner()
    sample = SAMPLES / "reconciliation-northwind.csv"
    plain = runner.invoke(args=["settle", "reconcile", str(body["id"]), "northwind",
                                str(sample)])
    assert plain.exit_code == 0, plain.output
    # (the demo member's reward redemption at northwind is not in the sample file)
    assert "6 missing in the ledger, 9 missing in the partner's file, " \
           "1 duplicated in the file. 16 breaks to resolve." in plain.output
    shown = runner.invoke(args=["settle", "show", str(body["id"]), "--json"])
    data = json.loads(shown.stdout)
    assert RFC3339_UTC.match(data["period_start"]) and RFC3339_UTC.match(data["created_at"])
    text = runner.invoke(args=["settle", "show", str(body["id"])]).output
    assert f"{start.strftime('%Y-%m-%dT%H:%M:%SZ')} → {end.strftime('%Y-%m-%dT%H:%M:%SZ')}" \
        in text and "16 breaks to resolve." in text


def test_ledger_check_names_partners_by_code_and_writes_rfc3339(app, demo):
    result = app.test_cli_runner().invoke(args=["ledger", "check", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert RFC3339_UTC.match(data["checked_at"])
    [conservation] = [c for c in data["checks"] if c["name"] == "conservation"]
    origins = [row["origin_partner"] for row in conservation["figures"]["per_origin_partner"]]
    assert origins == [None, "northwind", "skyline"]
    assert "origin_partner_id" not in json.dumps(data)
    text = app.test_cli_runner().invoke(args=["ledger", "check"]).output
    assert re.match(r"ledger check at \d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z: OK", text)


def test_the_reconciliation_sample_has_every_documented_type():
    records, malformed = parse((SAMPLES / "reconciliation-northwind.csv").read_bytes())
    assert malformed == []
    assert {r.type for r in records} == set(TRANSACTION_TYPES)
    readme = (ROOT / "README.md").read_text()
    for kind in TRANSACTION_TYPES:
        assert f"`{kind}`" in readme, kind
    assert "docs/samples/reconciliation-northwind.csv" in readme


def test_english_plurals():
    assert plural(1, "break") == "1 break" and plural(3, "break") == "3 breaks"
    assert plural(0, "member") == "0 members" and plural(1200, "point") == "1,200 points"
    assert verb(1, "differs", "differ") == "differs" and verb(2, "differs", "differ") == "differ"
    assert reconciliation_counts({"matched": 4, "points_mismatch": 1, "malformed": 0}) \
        == "4 matched, 1 record differs"
    assert reconciliation_counts({"points_mismatch": 3, "malformed": 1}) \
        == "3 records differ, 1 unreadable row"
    assert breaks_to_resolve(1) == "1 break to resolve"
    assert breaks_to_resolve(3) == "3 breaks to resolve" and breaks_to_resolve(0) == "No breaks"
