"""The demo history books through the partner API's services: a prepaid partner's funding
is used, and its webhooks hear of every booking, as for an API call; and the demo's portal
account is its partner's admin."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from coalition.db import read
from coalition.ledger.check import check_ledger
from coalition.ledger.models import HISTORY_KINDS, Entry
from coalition.models import Partner
from coalition.oauth import partner_users
from partners import webhooks
from partners.demo import DEMO_STAFF, history_file, load_demo, load_history
from partners.funding import configure, funding
from partners.models import WebhookEvent


def test_the_demo_history_uses_funding_and_raises_events(app):
    assert load_demo() is not None
    configure("northwind", {"points": 100_000, "price": Decimal("900.00"), "currency": "GBP"})
    with read() as session:
        northwind = session.scalar(select(Partner.id).where(Partner.code == "northwind"))
    webhooks.create_endpoint(northwind, "http://127.0.0.1:18603/hook",
                             ["transaction.booked", "transaction.reversed"])
    load_history(history_file().read_text())
    with read() as session:
        issued = session.scalar(select(
            func.coalesce(func.sum(Entry.points), 0)).where(
            Entry.partner_id == northwind, Entry.kind == "earn")) - session.scalar(select(
                func.coalesce(func.sum(Entry.points), 0)).where(
                Entry.partner_id == northwind, Entry.kind == "earn_reversal"))
        booked = session.scalar(select(func.count()).select_from(Entry).where(
            Entry.partner_id == northwind, Entry.kind.in_(list(HISTORY_KINDS.values()))))
        events = session.scalar(select(func.count()).select_from(WebhookEvent).where(
            WebhookEvent.partner_id == northwind))
    assert issued > 0
    assert funding(northwind)["available_points"] == 100_000 - issued
    assert events == booked
    report = check_ledger()
    assert report.ok, [(c.name, c.violations) for c in report.checks if not c.ok]


def test_the_demo_portal_account_is_an_admin(app):
    load_demo()
    staff = partner_users.authenticate(DEMO_STAFF["login"], DEMO_STAFF["password"])
    assert (staff.partner_code, staff.role) == ("northwind", "admin")
