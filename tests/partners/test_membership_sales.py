"""A paid membership a partner sold for money is in its history as a ``membership_sale``
with its price, and its systems hear of it by ``transaction.booked``, once."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from coalition.db import read
from coalition.models import Partner
from partners import webhooks
from partners.models import WebhookEvent
from tests.conftest import snapshot
from tests.factories.ledger import PRICED_FROM
from tests.factories.partner_api import assert_error, earn, enrol, post_ok, publish
from tests.factories.tokens import partner_headers
from tests.partners.test_portal import sign_in, staff_account, text_of

PLANS = [{"code": "vip", "name": "VIP", "price": {"amount": "49.00", "currency": "GBP"},
          "period_months": 12, "multiplier": "3"}]


def _events(partner_id: int) -> list[dict[str, Any]]:
    with read() as session:
        return [json.loads(body) for body in session.scalars(
            select(WebhookEvent.body).where(WebhookEvent.partner_id == partner_id)
            .order_by(WebhookEvent.created_at))]


def test_a_membership_sale_is_in_the_history_and_on_the_webhook(app, client, make_partner,
                                                                 operator_headers):
    publish(client, operator_headers, memberships=PLANS)
    _, acme = make_partner("acme", valid_from=PRICED_FROM)
    with read() as session:
        acme_id = session.scalar(select(Partner.id).where(Partner.code == "acme"))
    webhooks.create_endpoint(acme_id, "http://127.0.0.1:18302/hook", ["transaction.booked"])
    ann = enrol(client, acme, "ann")
    earned = earn(client, acme, ann, "e1", points=10)
    body = {"member_number": ann, "plan": "vip", "partner_txn_id": "till-1",
            "price": {"amount": "49.00", "currency": "GBP"}}
    post_ok(client, "/v1/memberships", acme, body)
    again = client.post("/v1/memberships", json=body, headers=acme)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"

    reader = partner_headers(client, "acme", ("transactions:read",))
    listed = client.get("/v1/transactions", headers=reader).get_json()["items"]
    assert [(t["type"], t["partner_txn_id"], t["points"]) for t in listed] == [
        ("membership_sale", "till-1", 0), ("earn", "e1", 10)]
    sale = listed[0]
    assert (Decimal(sale["spend"]["amount"]), sale["spend"]["currency"]) == (
        Decimal("49.00"), "GBP")
    assert (sale["member_number"], sale["partner"]) == (ann, "acme")
    only = client.get("/v1/transactions?type=membership_sale", headers=reader).get_json()
    assert only["items"] == [sale]
    assert client.get(f"/v1/transactions/{sale['id']}", headers=reader).get_json() == sale
    assert client.get("/v1/transactions?type=earn", headers=reader).get_json()[
        "items"] == [listed[1]]

    # one event per booking: the earn's and the sale's, the replay adds none
    events = _events(acme_id)
    assert [(e["type"], e["data"]["id"]) for e in events] == [
        ("transaction.booked", earned["id"]), ("transaction.booked", sale["id"])]
    assert events[1]["data"] == sale

    # an unknown type is refused and changes nothing
    before = snapshot(app)
    assert_error(client.get("/v1/transactions?type=membership", headers=reader), 422,
                 "invalid_request", {"type"})
    assert snapshot(app) == before


def test_the_portal_lists_and_filters_membership_sales(app, client, make_partner,
                                                       operator_headers):
    publish(client, operator_headers, memberships=PLANS)
    _, acme = make_partner("acme", valid_from=PRICED_FROM)
    ann = enrol(client, acme, "ann")
    earn(client, acme, ann, "e1", points=10)
    post_ok(client, "/v1/memberships", acme, {
        "member_number": ann, "plan": "vip", "partner_txn_id": "till-1",
        "price": {"amount": "49.00", "currency": "GBP"}})
    reader = partner_headers(client, "acme", ("transactions:read",))
    (sale,) = client.get("/v1/transactions?type=membership_sale", headers=reader).get_json()[
        "items"]
    staff_account("acme")
    sign_in(client)
    everything = text_of(client.get("/partner/transactions"))
    assert "membership sale" in everything and "till-1" in everything and "e1" in everything
    assert '<option value="membership_sale">membership sale</option>' in everything
    only = text_of(client.get("/partner/transactions?type=membership_sale"))
    assert "till-1" in only and "<code>e1</code>" not in only
    detail = client.get(f"/partner/transactions/{sale['id']}")
    html = text_of(detail)
    assert detail.status_code == 200 and "membership sale" in html and "till-1" in html
    assert "49.00 GBP" in html and "Reversals" not in html  # a sale is not reversed
