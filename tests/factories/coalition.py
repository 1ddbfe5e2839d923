"""A small coalition with something of everything, for the fuzzer and the isolation matrix
(not a test module).

Two merchants (``acme``, ``bravo``) and a charity (``give``); a member of both merchants,
one of each alone; every kind of transaction and hold of each merchant; a closed settlement
run and a draft run with a reconciliation break, both over periods long past (booked on a
fake ledger clock, as the settlement tests do), then open holds and fresh entries on the
real clock; and two members with passwords and real member tokens (one of them to be
closed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask.testing import FlaskClient

from tests.factories.clock import held_at
from tests.factories.partner_api import RULES, burn, earn, enrol, hold, post_ok
from tests.factories.partners import partner_maker  # noqa: F401 - for fixtures wider than a test
from tests.factories.settlement import T0, iso

#: the settled periods: [T0, T1) is closed, [T1, T2) is a draft with a break
T1 = T0 + timedelta(hours=1)
T2 = T1 + timedelta(hours=1)


@contextmanager
def ledger_clock(moment: datetime) -> Iterator[None]:
    """Book as if it were ``moment``: the app's clock held there inside the block (the
    settlement runs after it are made at the present time)."""
    with held_at(moment):
        yield


@dataclass
class PartnerData:
    code: str
    headers: dict[str, str]
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    holds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def transaction_ids(self) -> list[int]:
        return [t["id"] for t in self.transactions.values()]

    def hold_ids(self) -> list[int]:
        return [h["id"] for h in self.holds.values()]


@dataclass
class Seeded:
    operator: dict[str, str]
    acme: PartnerData
    bravo: PartnerData
    charity: str
    shared: str          # member of acme and bravo
    acme_only: str
    bravo_only: str
    closed_run: int
    draft_run: int
    breaks: list[int]
    csv: str             # bravo's reconciliation file of the draft run
    member_number: str | None = None   # signed in, with member_headers
    member_headers: dict[str, str] | None = None
    closer_number: str | None = None    # signed in, for POST /v1/me/close
    closer_headers: dict[str, str] | None = None

    @property
    def members(self) -> list[str]:
        return [m for m in (self.shared, self.acme_only, self.bravo_only, self.member_number,
                            self.closer_number) if m]


def _activity(client: FlaskClient, p: PartnerData, member: str, tag: str) -> None:
    """One of everything of ``p`` on ``member``: earn (points and spend), burn, open,
    voided and captured holds, a capture, a burn reversal and an earn reversal."""
    t, h = p.transactions, p.holds
    t[f"earn{tag}"] = earn(client, p.headers, member, f"{p.code}-e{tag}", points=500)
    t[f"spend{tag}"] = earn(client, p.headers, member, f"{p.code}-s{tag}",
                            spend={"amount": "20.00", "currency": "GBP"})
    t[f"burn{tag}"] = burn(client, p.headers, member, f"{p.code}-b{tag}", points=50)
    h[f"open{tag}"] = hold(client, p.headers, member, f"{p.code}-h{tag}", points=40)
    h[f"voided{tag}"] = hold(client, p.headers, member, f"{p.code}-hv{tag}", points=10)
    post_ok(client, f"/v1/holds/{h[f'voided{tag}']['id']}/void", p.headers,
            {"partner_txn_id": f"{p.code}-v{tag}"})
    h[f"captured{tag}"] = hold(client, p.headers, member, f"{p.code}-hc{tag}", points=30)
    t[f"capture{tag}"] = post_ok(client, f"/v1/holds/{h[f'captured{tag}']['id']}/capture",
                                 p.headers, {"partner_txn_id": f"{p.code}-c{tag}"})
    t[f"burn_reversal{tag}"] = post_ok(
        client, f"/v1/transactions/{t[f'burn{tag}']['id']}/reversals", p.headers,
        {"partner_txn_id": f"{p.code}-rb{tag}", "points": 5})
    t[f"earn_reversal{tag}"] = post_ok(
        client, f"/v1/transactions/{t[f'spend{tag}']['id']}/reversals", p.headers,
        {"partner_txn_id": f"{p.code}-re{tag}",
         "refund": {"amount": "2.00", "currency": "GBP"}})


def seed(client: FlaskClient, make_partner: Any, operator: dict[str, str],
         signed_in: bool = True) -> Seeded:
    """The coalition above; ``signed_in=False`` leaves out the members with tokens."""
    from tests.factories.members import active_member, bearer_of, member_token

    # a plan a partner may sell, so that the isolation matrix reaches the member lookup
    plans = [{"code": "club", "name": "Club", "period_months": 1,
              "price": {"amount": "5.00", "currency": "GBP"}}]
    response = client.put("/v1/admin/program", json={**RULES, "memberships": plans},
                          headers=operator)
    assert response.status_code == 200, response.get_json()
    before = T0 - timedelta(days=1)
    _, acme_headers = make_partner("acme", valid_from=before)
    _, bravo_headers = make_partner("bravo", valid_from=before)
    make_partner("give", kind="charity", valid_from=before)
    acme, bravo = PartnerData("acme", acme_headers), PartnerData("bravo", bravo_headers)

    # the closed period [T0, T1), then the draft period [T1, T2)
    with ledger_clock(T0 + timedelta(minutes=1)):
        shared = enrol(client, bravo.headers, "b-shared", name="Ada", email="ada@example.com")
        post_ok(client, "/v1/members", acme.headers,
                {"partner_member_ref": "a-shared", "member_number": shared}, status=200)
        acme_only = enrol(client, acme.headers, "a-only")
        bravo_only = enrol(client, bravo.headers, "b-only")
        for p in (acme, bravo):
            _activity(client, p, shared, "0")
        _activity(client, bravo, bravo_only, "0b")
        _activity(client, acme, acme_only, "0a")
    with ledger_clock(T1 + timedelta(minutes=1)):
        for p in (acme, bravo):
            _activity(client, p, shared, "1")
    closed = post_ok(client, "/v1/settlement/runs", operator,
                     {"period_start": iso(T0), "period_end": iso(T1)})
    post_ok(client, f"/v1/settlement/runs/{closed['id']}/close", operator, {}, status=200)
    draft = post_ok(client, "/v1/settlement/runs", operator,
                    {"period_start": iso(T1), "period_end": iso(T2)})
    # bravo's file: one entry with other points, one the ledger has not got
    earn1 = bravo.transactions["earn1"]
    csv = ("partner_txn_id,type,member_number,points,occurred_at\n"
           f"{earn1['partner_txn_id']},earn,{shared},499,{earn1['occurred_at']}\n"
           f"b-ghost,earn,{shared},10,{iso(T1 + timedelta(minutes=2))}\n")
    report = client.post(f"/v1/settlement/runs/{draft['id']}/reconciliations/bravo",
                         headers={**operator, "Content-Type": "text/csv"}, data=csv)
    assert report.status_code == 201, report.get_json()
    breaks = [b["id"] for b in report.get_json()["breaks"]]
    assert breaks, report.get_json()

    # now, on the real clock: open holds and fresh entries
    for p in (acme, bravo):
        _activity(client, p, shared, "2")
    seeded = Seeded(
        operator=operator, acme=acme, bravo=bravo, charity="give", shared=shared,
        acme_only=acme_only, bravo_only=bravo_only, closed_run=closed["id"],
        draft_run=draft["id"], breaks=breaks, csv=csv)
    if signed_in:
        member = active_member(client, acme.headers, "a-app")
        earn(client, acme.headers, member.member_number, "acme-app-e", points=1000)
        closer = active_member(client, bravo.headers, "b-closer")
        earn(client, bravo.headers, closer.member_number, "bravo-closer-e", points=100)
        seeded.member_number = member.member_number
        seeded.member_headers = bearer_of(member_token(client, member))
        seeded.closer_number = closer.member_number
        seeded.closer_headers = bearer_of(member_token(client, closer))
    return seeded
