"""``/v1/me/notifications`` and ``/v1/me/preferences``: a member's inbox, newest first with
the unread count, marking read, and which e-mails they want with every choice recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from coalition.db import UnitOfWork
from coalition.notifications import preferences
from coalition.notifications.service import notify
from tests.conftest import snapshot
from tests.factories.member_records import member_id, member_token
from tests.factories.partner_api import assert_error, enrol, publish, set_member_status


@pytest.fixture
def member(app: Flask, client, make_partner, operator_headers) -> str:
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    return enrol(client, headers, "c1", email="ann@example.com")


def tell(member: int, key: str, kind: str = "redemption", **data) -> None:
    with UnitOfWork() as uow:
        notify(uow.session, member, kind, key, data or {"points": 100})
        uow.commit()


def test_newest_first_paged_with_unread_count(app, client, member, clock) -> None:
    me = member_id(member)
    for n in range(5):
        tell(me, f"voucher:{n}", reward=f"Reward {n}", points=100 * (n + 1))
        clock.advance(seconds=1)
    tell(me, "expiry:2027-01-31:30", "points_expiring", points=250, date="2027-01-31",
         days=30)
    headers = member_token(member)
    first = client.get("/v1/me/notifications?limit=4", headers=headers)
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert body["unread"] == 6
    assert [item["key"] for item in body["items"]] == [
        "expiry:2027-01-31:30", "voucher:4", "voucher:3", "voucher:2"]
    assert body["items"][0]["title"] == "250 points expire on 31 January 2027"
    assert "in 30 days" in body["items"][0]["text"]
    assert body["items"][1]["text"] == ("You redeemed Reward 4 for 500 points. Your voucher "
                                        "is on your account page.")
    assert body["items"][0]["read"] is False and body["items"][0]["read_at"] is None
    rest = client.get(f"/v1/me/notifications?limit=4&cursor={body['next_cursor']}",
                      headers=headers).get_json()
    assert [item["key"] for item in rest["items"]] == ["voucher:1", "voucher:0"]
    assert rest["next_cursor"] is None


def test_marking_read_up_to_an_id_and_by_ids(app, client, member) -> None:
    me = member_id(member)
    for n in range(4):
        tell(me, f"voucher:{n}")
    headers = member_token(member)
    ids = [item["id"] for item in client.get("/v1/me/notifications",
                                             headers=headers).get_json()["items"]]
    answer = client.post("/v1/me/notifications/read", json={"up_to_id": ids[2]},
                         headers=headers)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"marked": 2, "unread": 2}
    again = client.post("/v1/me/notifications/read", json={"up_to_id": ids[2]},
                        headers=headers)
    assert again.get_json() == {"marked": 0, "unread": 2}
    by_id = client.post("/v1/me/notifications/read", json={"ids": [ids[0]]}, headers=headers)
    assert by_id.get_json() == {"marked": 1, "unread": 1}
    unread = client.get("/v1/me/notifications?unread=true", headers=headers).get_json()
    assert [item["id"] for item in unread["items"]] == [ids[1]]
    assert unread["unread"] == 1


def test_another_members_notifications_are_neither_shown_nor_marked(
        app, client, member, make_partner) -> None:
    me = member_id(member)
    other = enrol(client, make_partner("beta")[1], "c2")
    tell(member_id(other), "voucher:9")
    theirs = client.get("/v1/me/notifications",
                        headers=member_token(other)).get_json()["items"][0]["id"]
    tell(me, "voucher:1")
    headers = member_token(member)
    listed = client.get("/v1/me/notifications", headers=headers).get_json()
    assert [item["key"] for item in listed["items"]] == ["voucher:1"]
    before = snapshot(app)
    answer = client.post("/v1/me/notifications/read", json={"ids": [theirs]},
                         headers=headers)
    assert answer.get_json() == {"marked": 0, "unread": 1}
    assert snapshot(app) == before


@pytest.mark.parametrize("body, fields", [
    ({}, {"_schema"}),
    ({"up_to_id": 1, "ids": [1]}, {"_schema"}),
    ({"up_to_id": "1"}, {"up_to_id"}),
    ({"up_to_id": 0}, {"up_to_id"}),
    ({"up_to_id": 2**63}, {"up_to_id"}),
    ({"ids": []}, {"ids"}),
    ({"ids": [1], "all": True}, {"all"}),
])
def test_bad_mark_read_is_refused_and_changes_nothing(app, client, member, body,
                                                      fields) -> None:
    tell(member_id(member), "voucher:1")
    headers = member_token(member)
    before = snapshot(app)
    assert_error(client.post("/v1/me/notifications/read", json=body, headers=headers),
                 422, "invalid_request", fields)
    assert snapshot(app) == before


def test_bad_cursor_and_no_token(app, client, member) -> None:
    headers = member_token(member)
    assert_error(client.get("/v1/me/notifications?cursor=nope", headers=headers),
                 422, "invalid_request")
    assert_error(client.get("/v1/me/notifications"), 401, "unauthorized")
    assert_error(client.put("/v1/me/preferences", json={"email_offers": True}),
                 401, "unauthorized")


def test_preferences_defaults_marketing_off_service_on(app, client, member) -> None:
    answer = client.get("/v1/me/preferences", headers=member_token(member))
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert {k: body[k] for k in ("email_offers", "email_expiry", "email_tier",
                                 "email_account")} == {
        "email_offers": False, "email_expiry": True, "email_tier": True,
        "email_account": True}
    marketing = {c["name"]: c["marketing"] for c in body["choices"]}
    assert marketing == {"email_offers": True, "email_expiry": False, "email_tier": False,
                         "email_account": False}
    assert all(c["changed_at"] is None for c in body["choices"])


def test_choices_are_recorded_with_when_and_how(app, client, member, clock) -> None:
    headers = member_token(member)
    answer = client.put("/v1/me/preferences",
                        json={"email_offers": True, "email_expiry": False}, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["email_offers"] is True and body["email_expiry"] is False
    assert body["email_tier"] is True
    clock.advance(days=1)
    headers = member_token(member)
    # the same choice again records nothing; a change records one row
    changed = client.put("/v1/me/preferences",
                         json={"email_offers": False, "email_expiry": False}, headers=headers)
    assert changed.status_code == 200, changed.get_json()
    history = preferences.history(member_id(member))
    assert [(h["choice"], h["granted"], h["source"]) for h in history] == [
        ("email_offers", True, "api"), ("email_expiry", False, "api"),
        ("email_offers", False, "api")]
    assert history[2]["at"] - history[0]["at"] >= timedelta(days=1)
    got = client.get("/v1/me/preferences", headers=headers).get_json()
    offers = next(c for c in got["choices"] if c["name"] == "email_offers")
    assert offers["value"] is False and offers["source"] == "api"


@pytest.mark.parametrize("body, fields", [
    ({}, {"_schema"}),
    ({"email_offers": "yes"}, {"email_offers"}),
    ({"email_offers": 1}, {"email_offers"}),
    ({"email_sms": True}, {"email_sms"}),
    ({"email_offers": None}, {"email_offers"}),
])
def test_bad_preferences_are_refused_and_change_nothing(app, client, member, body,
                                                        fields) -> None:
    headers = member_token(member)
    before = snapshot(app)
    assert_error(client.put("/v1/me/preferences", json=body, headers=headers),
                 422, "invalid_request", fields)
    assert snapshot(app) == before


def test_a_closed_member_cannot_change_preferences(app, client, member) -> None:
    headers = member_token(member)
    set_member_status(app, member, "closed")
    before = snapshot(app)
    assert_error(client.put("/v1/me/preferences", json={"email_offers": True},
                            headers=headers), 409, "member_closed")
    assert snapshot(app) == before


def test_the_record_of_consents_is_append_only(app, client, member) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from coalition.db import db

    client.put("/v1/me/preferences", json={"email_offers": True},
               headers=member_token(member))
    for statement in ("UPDATE notification_consent SET granted = false",
                      "DELETE FROM notification_consent"):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))
    assert [h["granted"] for h in preferences.history(member_id(member))] == [True]


def test_what_each_kind_says() -> None:
    from coalition.notifications.messages import text, title

    assert text("claim_answered", {"partner": "northwind", "status": "confirmed",
                                   "points": 1200}) == (
        "Your missing-points claim at northwind was confirmed: 1,200 points are booked.")
    assert text("claim_answered", {"partner": "northwind", "status": "refused",
                                   "reason": "No such receipt."}) == (
        "Your missing-points claim at northwind was refused: No such receipt.")
    assert title("offer", {"title": "Double points"}) == "Double points"
    assert text("membership", {"text": "Your Club plan renews on 1 March."}) == (
        "Your Club plan renews on 1 March.")
    assert title("tier_changed", {"to": "gold"}) == "You are now Gold"
