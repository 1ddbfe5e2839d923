"""Paid membership: plans in the program rules, a purchase with points by the member, a
money purchase recorded by a partner, the multiplier on earns, cancellation, renewal and
lapse in the daily job, closure and merge.

Every test ends with ``coalition ledger check`` green, and every refused request is shown
to have changed nothing (``snapshot``).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from coalition.db import UnitOfWork
from coalition.ledger import closure, merge
from coalition.ledger.check import check_ledger
from coalition.ledger.daily import daily
from coalition.membership.models import Membership
from coalition.membership.queries import active_plan
from coalition.notifications.models import Notification
from coalition.oauth.models import PARTNER_SCOPES
from tests.conftest import snapshot
from tests.factories.ledger import PRICED_FROM
from tests.factories.member_records import (
    assert_clean,
    entries_of,
    lots_of,
    member_id,
    member_token,
    postings_of,
)
from tests.factories.partner_api import assert_error, earn, enrol, publish
from tests.factories.tokens import partner_headers

PLANS = [
    {"code": "club", "name": "Club", "price_points": 500,
     "price": {"amount": "9.99", "currency": "GBP"}, "period_months": 1,
     "multiplier": "2", "auto_renew_default": True},
    {"code": "vip", "name": "VIP", "price": {"amount": "49.00", "currency": "GBP"},
     "period_months": 12, "multiplier": "3"},
]


@pytest.fixture
def acme(make_partner, client, operator_headers):
    # one tier, so that the plan's multiplier is the only one
    publish(client, operator_headers, memberships=PLANS,
            tiers=[{"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"}])
    return make_partner("acme", valid_from=PRICED_FROM)


def member_with(client, headers, ref: str, points: int) -> str:
    number = enrol(client, headers, ref)
    if points:
        earn(client, headers, number, f"seed-{ref}", points=points)
    return number


def buy(client, number: str, plan: str = "club", key: str | None = None, **extra):
    headers = member_token(number)
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/v1/me/memberships", json={"plan": plan, "pay_with": "points", **extra},
                       headers=headers)


def rows(number: str) -> list[Membership]:
    with UnitOfWork(readonly=True) as uow:
        found = list(uow.session.scalars(select(Membership).where(
            Membership.member_id == member_id(number)).order_by(Membership.id)))
        uow.session.expunge_all()
        return found


def told(number: str) -> list[str]:
    with UnitOfWork(readonly=True) as uow:
        return [n.data["event"] for n in uow.session.scalars(
            select(Notification).where(Notification.member_id == member_id(number),
                                       Notification.kind == "membership")
            .order_by(Notification.id))]


def test_the_plans_are_public(client, acme):
    response = client.get("/v1/program/memberships")
    assert response.status_code == 200
    plans = response.get_json()["plans"]
    assert [p["code"] for p in plans] == ["club", "vip"]
    assert plans[0] == {"code": "club", "name": "Club", "description": "",
                        "price_points": 500, "price": {"amount": "9.99", "currency": "GBP"},
                        "period_months": 1, "multiplier": "2", "auto_renew_default": True}
    assert plans[1]["price_points"] is None and plans[1]["multiplier"] == "3"


@pytest.mark.parametrize("plans, field", [
    ([{"code": "x", "name": "X", "period_months": 1}], "memberships"),
    ([{**PLANS[0], "multiplier": "11"}], "memberships"),
    ([{**PLANS[0], "period_months": 0}], "memberships"),
    ([PLANS[0], PLANS[0]], "memberships"),
    ([{**PLANS[0], "price": {"amount": "1.00", "currency": "XXX"}}], "memberships"),
])
def test_bad_plans_are_refused(app, client, operator_headers, plans, field):
    publish(client, operator_headers)
    before = snapshot(app)
    rules = client.get("/v1/program").get_json()
    body = {k: rules[k] for k in ("pending_days", "expiry", "tiers", "holds")}
    response = client.put("/v1/admin/program", json={**body, "memberships": plans},
                          headers=operator_headers)
    assert_error(response, 422, "invalid_request", {field})
    assert snapshot(app) == before


def test_a_member_buys_a_plan_with_points(client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 800)
    response = buy(client, ann)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["plan"], body["status"], body["paid_with"], body["points"]) == \
        ("club", "active", "points", 500)
    assert body["in_force"] is True and body["auto_renew"] is True
    assert body["balance"] == {"available": 300, "pending": 0, "held": 0}
    (entry,) = entries_of(member_id(ann), "membership")
    assert entry.points == 500 and entry.partner_id is None
    assert sorted(postings_of(entry.id)) == sorted([
        ("member:available", member_id(ann), None, -500),
        ("coalition:membership", None, None, 500)])
    assert [lot["remaining"] for lot in lots_of(member_id(ann))] == [300]
    assert told(ann) == ["bought"]

    mine = client.get("/v1/me/memberships", headers=member_token(ann)).get_json()
    assert mine["current"]["id"] == body["id"]
    assert [m["id"] for m in mine["memberships"]] == [body["id"]]
    assert assert_clean() is None


def test_bad_purchases_change_nothing(app, client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 600)
    poor = member_with(client, headers, "poor", 499)
    member_token(ann)  # the member app's client exists before the snapshot
    before = snapshot(app)
    assert_error(buy(client, ann, "gold"), 422, "invalid_request", {"plan"})
    assert_error(buy(client, ann, "vip"), 422, "invalid_request", {"plan"})
    assert_error(client.post("/v1/me/memberships", json={"plan": "club", "pay_with": "money"},
                             headers=member_token(ann)), 422, "invalid_request", {"pay_with"})
    assert_error(client.post("/v1/me/memberships", json={"plan": "club"},
                             headers=member_token(ann)), 422, "invalid_request", {"pay_with"})
    assert_error(buy(client, ann, auto_renew="yes"), 422, "invalid_request", {"auto_renew"})
    assert_error(buy(client, ann, colour="red"), 422, "invalid_request", {"colour"})
    assert_error(buy(client, poor), 409, "insufficient_points", {"plan"})
    assert_error(client.post("/v1/me/memberships", json={"plan": "club", "pay_with": "points"}),
                 401, "unauthorized")
    assert_error(client.post("/v1/me/memberships", json={"plan": "club", "pay_with": "points"},
                             headers=headers), 403, "insufficient_scope")
    assert_error(client.delete("/v1/me/memberships/current", headers=member_token(ann)),
                 404, "not_found")
    after = snapshot(app)
    # only the member tokens written for the requests differ
    for name in after:
        if name != "oauth_token":
            assert after[name] == before[name], name

    assert buy(client, ann).status_code == 201
    before = snapshot(app)
    assert_error(buy(client, ann), 409, "membership_active", {"plan"})
    after = snapshot(app)
    assert {n for n in after if after[n] != before[n]} <= {"oauth_token"}
    assert_clean()


def test_an_idempotency_key_makes_a_retry_safe(client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 1200)
    first = buy(client, ann, key="k-1")
    again = buy(client, ann, key="k-1")
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["balance"] == first.get_json()["balance"]
    assert_error(buy(client, ann, key="k-1", auto_renew=False), 409, "idempotency_conflict")
    assert len(entries_of(member_id(ann), "membership")) == 1
    assert_clean()


def test_the_multiplier_applies_while_the_membership_is_in_force(app, client, acme, clock):
    _, headers = acme
    ann = member_with(client, headers, "ann", 500)
    bob = member_with(client, headers, "bob", 0)
    assert buy(client, ann).status_code == 201
    spend = {"amount": "10.00", "currency": "GBP"}
    got = earn(client, headers, ann, "e1", spend=spend)
    assert got["points"] == 20  # 10 GBP × 1 point × the plan's 2
    assert earn(client, headers, bob, "e2", spend=spend)["points"] == 10
    with UnitOfWork(readonly=True) as uow:
        plan = active_plan(uow.session, member_id(ann), clock())
    assert plan is not None and (plan.code, plan.multiplier) == ("club", Decimal(2))

    clock.advance(days=32)  # the month paid for is over
    fresh = partner_headers(client, "acme", PARTNER_SCOPES)
    assert earn(client, fresh, ann, "e3", spend=spend)["points"] == 10
    with UnitOfWork(readonly=True) as uow:
        assert active_plan(uow.session, member_id(ann), clock()) is None
    assert_clean()


def test_cancelling_keeps_the_benefits_to_the_end_and_stops_renewal(app, client, acme,
                                                                     clock):
    _, headers = acme
    ann = member_with(client, headers, "ann", 2000)
    bought = buy(client, ann).get_json()
    response = client.delete("/v1/me/memberships/current", headers=member_token(ann))
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["in_force"], body["auto_renew"]) == ("cancelled", True, False)
    assert body["ends_at"] == bought["ends_at"]
    # again: the same answer, nothing more
    assert client.delete("/v1/me/memberships/current",
                         headers=member_token(ann)).get_json()["cancelled_at"] == \
        body["cancelled_at"]
    assert_error(client.patch("/v1/me/memberships/current", json={"auto_renew": True},
                              headers=member_token(ann)), 422, "invalid_request",
                 {"auto_renew"})
    assert earn(client, headers, ann, "e1", spend={"amount": "5.00",
                                                   "currency": "GBP"})["points"] == 10

    end = rows(ann)[0].ends_at
    summary = daily((end - timedelta(days=1)).date())
    assert summary.memberships_lapsed == 0  # not its day yet
    summary = daily(end.date())
    assert (summary.memberships_renewed, summary.memberships_lapsed,
            summary.membership_lapses) == (0, 1, {"cancelled": 1})
    (row,) = rows(ann)
    assert row.status == "lapsed"
    assert told(ann) == ["bought", "cancelled", "lapsed"]
    assert len(entries_of(member_id(ann), "membership")) == 1
    assert_clean()


def test_the_daily_job_renews_with_points_once_or_lapses(app, client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 1500)   # renews twice, then lapses
    bob = member_with(client, headers, "bob", 600)    # auto-renew off
    assert buy(client, ann).status_code == 201
    assert buy(client, bob).status_code == 201
    assert client.patch("/v1/me/memberships/current", json={"auto_renew": False},
                        headers=member_token(bob)).get_json()["auto_renew"] is False

    first_end = rows(ann)[0].ends_at
    summary = daily(first_end.date())
    assert (summary.memberships_renewed, summary.membership_points,
            summary.memberships_lapsed, summary.membership_lapses) == \
        (1, 500, 1, {"no_auto_renew": 1})
    again = daily(first_end.date())  # a rerun changes nothing
    assert (again.memberships_renewed, again.memberships_lapsed) == (0, 0)
    old, new = rows(ann)
    assert (old.status, new.status, new.renews_id) == ("renewed", "active", old.id)
    assert new.starts_at == old.ends_at and new.auto_renew
    assert len(entries_of(member_id(ann), "membership")) == 2
    # in force without a gap: the old period to its end, the new one from there
    with UnitOfWork(readonly=True) as uow:
        for moment in (old.ends_at - timedelta(seconds=1), old.ends_at):
            assert active_plan(uow.session, member_id(ann), moment) is not None

    daily(new.ends_at.date())
    third = rows(ann)[2]
    summary = daily(third.ends_at.date())  # no points left: too few
    assert summary.membership_lapses == {"insufficient_points": 1}
    assert [r.status for r in rows(ann)] == ["renewed", "renewed", "lapsed"]
    assert told(ann) == ["bought", "renewed", "renewed", "lapsed"]
    assert told(bob) == ["bought", "lapsed"]
    assert_clean()


def test_a_partner_records_a_membership_sold_for_money(app, client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 0)
    enrol(client, headers, "ann")
    body = {"partner_member_ref": "ann", "plan": "vip", "partner_txn_id": "till-1",
            "price": {"amount": "49.00", "currency": "GBP"}}
    reader = partner_headers(client, "acme", ("transactions:read",))
    before = snapshot(app)
    for bad, status, code, fields in [
        ({**body, "plan": "gold"}, 422, "invalid_request", {"plan"}),
        ({**body, "price": {"amount": "48.00", "currency": "GBP"}}, 422, "invalid_request",
         {"price"}),
        ({**body, "price": {"amount": "49.00", "currency": "EUR"}}, 422, "invalid_request",
         {"price"}),
        ({**body, "price": {"amount": "-1", "currency": "GBP"}}, 422, "invalid_request",
         {"price"}),
        ({**body, "partner_member_ref": "nobody"}, 404, "not_found", None),
        ({**body, "member_number": ann}, 422, "invalid_request", {"member_number"}),
        ({k: v for k, v in body.items() if k != "partner_txn_id"}, 422, "invalid_request",
         {"partner_txn_id"}),
    ]:
        assert_error(client.post("/v1/memberships", json=bad, headers=headers),
                     status, code, fields)
    assert_error(client.post("/v1/memberships", json=body, headers=reader),
                 403, "insufficient_scope")
    assert snapshot(app) == before

    response = client.post("/v1/memberships", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    sold = response.get_json()
    assert (sold["plan"], sold["paid_with"], sold["price"], sold["partner"],
            sold["points"], sold["member_number"]) == \
        ("vip", "money", {"amount": "49.00", "currency": "GBP"}, "acme", None, ann)
    (entry,) = entries_of(member_id(ann), "membership")
    assert (entry.points, entry.spend_amount, entry.spend_currency) == \
        (0, Decimal("49.00"), "GBP")
    assert postings_of(entry.id) == []

    replay = client.post("/v1/memberships", json=body, headers=headers)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["id"] == sold["id"]
    assert_error(client.post("/v1/memberships", json={**body, "plan": "club",
                                                      "price": {"amount": "9.99",
                                                                "currency": "GBP"}},
                             headers=headers), 409, "idempotency_conflict")
    assert_error(client.post("/v1/memberships", json={**body, "partner_txn_id": "till-2"},
                             headers=headers), 409, "membership_active")
    assert earn(client, headers, ann, "e1", spend={"amount": "10.00",
                                                   "currency": "GBP"})["points"] == 30
    assert_clean()


def test_closure_ends_the_membership(client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 900)
    assert buy(client, ann).status_code == 201
    closure.close(member_id(ann))
    (row,) = rows(ann)
    assert row.status == "ended" and row.ended_at is not None
    with UnitOfWork(readonly=True) as uow:
        assert active_plan(uow.session, member_id(ann), row.starts_at) is None
    assert daily(row.ends_at.date()).memberships_lapsed == 0
    assert_clean()


def test_a_merge_keeps_the_longer_membership(client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 900)
    dup = member_with(client, headers, "dup", 0)
    assert buy(client, ann).status_code == 201  # a month
    vip = {"partner_member_ref": "dup", "plan": "vip", "partner_txn_id": "till-9",
           "price": {"amount": "49.00", "currency": "GBP"}}
    assert client.post("/v1/memberships", json=vip, headers=headers).status_code == 201
    merge.merge(dup, ann, "op")
    club, kept = rows(ann)
    assert (club.plan, club.status) == ("club", "ended")
    assert (kept.plan, kept.status) == ("vip", "active")
    with UnitOfWork(readonly=True) as uow:
        plan = active_plan(uow.session, member_id(ann), kept.starts_at)
    assert plan is not None and plan.code == "vip"
    assert rows(dup) == []
    report = check_ledger()
    assert report.ok, report.to_dict()


def test_the_ledger_check_finds_a_period_its_entry_does_not_pay_for(app, client, acme):
    _, headers = acme
    ann = member_with(client, headers, "ann", 900)
    assert buy(client, ann).status_code == 201
    assert check_ledger().ok
    with UnitOfWork() as uow:
        row = uow.session.scalars(select(Membership)).one()
        row.points = 400
        uow.commit()
    report = check_ledger()
    check = report.check("memberships_agree")
    assert not check.ok
    assert check.violations[0]["problem"].startswith("membership period and the entry")
    assert check.violations[0]["points"] == 400


def test_a_daily_run_killed_half_way_is_finished_by_the_next(app, client, acme,
                                                            monkeypatch):
    from coalition.membership import renewal

    _, headers = acme
    ann = member_with(client, headers, "ann", 1000)
    bob = member_with(client, headers, "bob", 1000)
    assert buy(client, ann).status_code == 201
    assert buy(client, bob).status_code == 201
    day = rows(ann)[0].ends_at.date()
    started = []
    real_start = renewal.start

    def killed_at_the_second(*args, **kwargs):
        started.append(1)
        if len(started) == 2:
            raise KeyboardInterrupt  # the process dies in bob's page
        return real_start(*args, **kwargs)

    monkeypatch.setattr(renewal, "start", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        daily(day, batch=1)
    monkeypatch.setattr(renewal, "start", real_start)
    assert [r.status for r in rows(ann)] == ["renewed", "active"]
    assert [r.status for r in rows(bob)] == ["active"]  # its page rolled back whole
    assert len(entries_of(member_id(bob), "membership")) == 1
    assert_clean()

    summary = daily(day, batch=1)
    assert (summary.memberships_renewed, summary.memberships_lapsed) == (1, 0)
    assert [r.status for r in rows(bob)] == ["renewed", "active"]
    assert len(entries_of(member_id(ann), "membership")) == 2
    assert_clean()
