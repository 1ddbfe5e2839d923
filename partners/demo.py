"""A demo coalition: an operator client, two merchants and a charity, with rate cards, a
partner portal account at the first merchant, paid membership plans, two promotions (one
the first merchant's, one shared with the coalition), rewards in the catalog, and
optionally a history of transactions (``docs/samples/demo-transactions.csv``, then a
voucher redeemed by its first member, a membership sold at a till and two missing-points
claims open at the first merchant) so that the member, finance and partner pages have
something to show and settle on first start."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import select

from coalition import clock
from coalition.audit.service import SYSTEM, Actor
from coalition.catalog import redemptions, rewards
from coalition.claims.opening import open_claim
from coalition.clock import utcnow
from coalition.db import read
from coalition.errors import AlreadyExists, InvalidRequest
from coalition.ledger import holds, idempotency
from coalition.ledger.booking import PartnerRef, partner_ref
from coalition.ledger.lookup import member_by_number
from coalition.ledger.members import enrol
from coalition.ledger.models import Member
from coalition.membership import purchase
from coalition.models import Partner
from coalition.oauth import partner_users
from coalition.oauth.clients import create_operator_client
from coalition.oauth.models import PARTNER_SCOPES
from coalition.offers import publishing
from coalition.program.service import publish_rules
from config import source_checkout
from partners import transactions
from partners.service import create_partner, issue_partner_client


class DemoPartner(TypedDict):
    code: str
    name: str
    kind: str
    currency: str
    earn_rate: Decimal
    issue_price: Decimal
    redeem_rate: Decimal


DEMO_PARTNERS: tuple[DemoPartner, ...] = (
    {"code": "northwind", "name": "Northwind Grocers", "kind": "merchant", "currency": "GBP",
     "earn_rate": Decimal("1"), "issue_price": Decimal("0.0100"), "redeem_rate": Decimal("0.0080")},
    {"code": "skyline", "name": "Skyline Fuel", "kind": "merchant", "currency": "GBP",
     "earn_rate": Decimal("2"), "issue_price": Decimal("0.0090"), "redeem_rate": Decimal("0.0085")},
    {"code": "greenhearts", "name": "Green Hearts Trust", "kind": "charity", "currency": "GBP",
     "earn_rate": Decimal("0"), "issue_price": Decimal("0"), "redeem_rate": Decimal("0.0100")},
)

#: the demo's partner portal account (README names it), an admin of its partner who can
#: manage the partner's other staff: a demo's password is public
DEMO_STAFF = {"partner": "northwind", "login": "nora@northwind.example",
              "name": "Nora Northwind", "password": "northwind-portal-demo", "role": "admin"}

DEMO_RULES: dict[str, Any] = {
    "pending_days": 0,
    "expiry": {"policy": "fixed", "months": 24},
    "tiers": [
        {"code": "blue", "name": "Blue", "threshold": 0, "multiplier": Decimal("1")},
        {"code": "silver", "name": "Silver", "threshold": 5000, "multiplier": Decimal("1.25")},
        {"code": "gold", "name": "Gold", "threshold": 20000, "multiplier": Decimal("1.5")},
    ],
    "bonuses": {"welcome": 100, "birthday": 250},
    "transfers": {"enabled": True, "min_points": 100, "max_points": 50000,
                  "max_points_per_day": 100000},
    "holds": {"default_seconds": 900, "max_seconds": 7 * 86400},
    "earn_reversal_after_spend": "take_from_other_lots",
    "terms": "Earn points at every partner and spend them at any. Points have no cash value.",
    "memberships": [
        {"code": "club", "name": "Coalition Club", "price_points": 200,
         "price": {"amount": Decimal("4.99"), "currency": "GBP"}, "period_months": 1,
         "multiplier": Decimal("1.5"), "auto_renew_default": True,
         "description": "Half as many points again on every purchase, month by month."},
        {"code": "vip", "name": "VIP", "price": {"amount": Decimal("39.00"), "currency": "GBP"},
         "period_months": 12, "multiplier": Decimal("2"), "auto_renew_default": False,
         "description": "Double points for a year; sold at the tills of our partners."},
    ],
}

#: the demo member holding a paid membership: sold for money at the first merchant's till
DEMO_MEMBERSHIP = {"partner": "northwind", "member": "grace", "plan": "vip",
                   "partner_txn_id": "demo-vip-grace",
                   "price": {"amount": Decimal("39.00"), "currency": "GBP"}}


def demo_offers() -> list[tuple[str | None, dict[str, Any]]]:
    """The demo's promotions, ``(publishing partner or None: the operator, body)``, open
    for 90 days from now. Both are opt-in: the demo history, booked before anyone activates
    them, reads the same with them or without."""
    now = clock.utcnow().replace(microsecond=0)
    window = {"valid_from": now, "valid_to": now + timedelta(days=90)}
    return [
        ("northwind", {"name": "Double points on groceries", "rule": "multiplier",
                       "multiplier": Decimal("2"), "opt_in": True, "cap_points": 100000,
                       **window}),
        (None, {"name": "250 more at Skyline, on us and Northwind", "rule": "bonus",
                "bonus_points": 250, "opt_in": True, "cap_points": 50000,
                "partners": ["skyline"],
                "cost_share": {"coalition": Decimal("0.5"), "northwind": Decimal("0.5")},
                **window}),
    ]


#: the catalog: rewards the partners fulfil, and a coalition reward the charity fulfils
#: (``partner`` names the fulfilling partner; ``coalition``: published by the operator)
DEMO_REWARDS: tuple[dict[str, Any], ...] = (
    {"partner": "northwind", "coalition": False, "name": "£5 off your shop", "kind": "voucher",
     "points": 500, "per_member_limit": 4, "description": "Five pounds off a shop of £20 "
     "or more at any Northwind store.", "terms": "One per shop; not for tobacco or gift cards."},
    {"partner": "northwind", "coalition": False, "name": "Reusable shopping bag",
     "kind": "product", "points": 150, "stock": 200,
     "description": "A sturdy cotton bag, collected at the till."},
    {"partner": "skyline", "coalition": False, "name": "Free car wash", "kind": "service",
     "points": 800, "stock": 100, "per_member_limit": 2,
     "description": "One premium wash at any Skyline station.", "terms": "Cars and vans."},
    {"partner": "greenhearts", "coalition": True, "name": "Plant a tree", "kind": "charity",
     "points": 250, "description": "Green Hearts Trust plants a native tree in your name.",
     "terms": "A coalition reward, fulfilled by Green Hearts Trust."},
    {"partner": "northwind", "coalition": False, "name": "VIP tasting evening",
     "kind": "service", "points": 400, "stock": 40, "per_member_limit": 1, "plan": "vip",
     "description": "An evening of tastings at the flagship store, for VIP members.",
     "terms": "For members holding the VIP membership; one guest each."},
)
#: the voucher the demo history's first member redeemed (its Idempotency-Key)
DEMO_VOUCHER = {"member": "ada", "reward": "Reusable shopping bag", "key": "demo-voucher-1"}


def load_rewards() -> list[dict[str, Any]]:
    """Publish the demo catalog: each reward by its partner, a coalition reward by the
    operator."""
    with read() as session:
        ids = {row.code: row.id for row in session.execute(select(Partner.code, Partner.id))}
    published = []
    for spec in DEMO_REWARDS:
        data = {k: v for k, v in spec.items() if k not in ("coalition",)}
        publisher = None if spec["coalition"] else ids[spec["partner"]]
        published.append(rewards.publish(publisher, data))
    return published


def load_demo(actor: Actor = SYSTEM) -> dict[str, Any] | None:
    """Create the demo coalition, or return ``None`` if partners already exist."""

    with read() as session:
        if session.scalar(select(Partner.id).limit(1)) is not None:
            return None
    operator = create_operator_client(["admin", "settlement:run"], name="demo operator",
                                      actor=actor)
    issued = [{"for": "operator", "client_id": operator.client_id,
               "client_secret": operator.client_secret, "scopes": operator.scopes}]
    for spec in DEMO_PARTNERS:
        create_partner(**spec, actor=actor)
        client = issue_partner_client(spec["code"], list(PARTNER_SCOPES), actor=actor)
        issued.append({"for": spec["code"], "client_id": client.client_id,
                       "client_secret": client.client_secret, "scopes": client.scopes})
    publish_rules(DEMO_RULES, published_by=operator.client_id, actor=actor)
    staff = partner_users.create_user(DEMO_STAFF["partner"], DEMO_STAFF["login"],
                                      DEMO_STAFF["name"], DEMO_STAFF["role"], actor=actor)
    partner_users.activate(DEMO_STAFF["login"], staff["activation_code"],
                           DEMO_STAFF["password"])
    with read() as session:
        ids = {row.code: row.id for row in session.execute(select(Partner.code, Partner.id))}
    for publisher, offer in demo_offers():
        publishing.publish(offer, partner_id=ids[publisher] if publisher else None,
                           actor=actor)
    load_rewards()
    return {"loaded": True, "clients": issued,
            "portal": {k: DEMO_STAFF[k] for k in ("partner", "login", "password")}}


#: the people of the demo history, by the handle its file names them with
DEMO_MEMBERS = {"ada": "Ada Lovelace", "grace": "Grace Hopper", "alan": "Alan Turing",
                "katherine": "Katherine Johnson"}
HISTORY_COLUMNS = ("partner", "partner_txn_id", "type", "member", "points", "spend_amount",
                   "spend_currency", "reference")
HISTORY_TYPES = ("earn", "burn", "hold", "hold_capture", "hold_void", "earn_reversal",
                 "burn_reversal")


def history_file() -> Path | None:
    """The demo history shipped with a source checkout (None when installed)."""
    checkout = source_checkout()
    return None if checkout is None else checkout / "docs" / "samples" / "demo-transactions.csv"


def load_history(text: str) -> dict[str, Any]:
    """Book the demo history, each row through the same services as the partner API: a
    booking uses the partner's funding and raises its webhook event as an API call's does.

    Members are enrolled at the first partner that names them and linked at the others.
    Every row is idempotent by its ``partner_txn_id``, so loading twice books nothing twice.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or tuple(rows[0]) != HISTORY_COLUMNS:
        raise InvalidRequest(f"The demo history needs the columns {', '.join(HISTORY_COLUMNS)}.")
    with read() as session:
        partners = {code: partner_ref(session, partner_id) for code, partner_id
                    in session.execute(select(Partner.code, Partner.id))}
    numbers: dict[str, str] = {}
    linked: set[tuple[str, str]] = set()
    booked: dict[tuple[str, str], int] = {}  # (partner, partner_txn_id) -> transaction/hold id
    replayed = 0
    for line, row in enumerate(rows, start=2):
        partner = partners.get(row["partner"])
        if partner is None or row["type"] not in HISTORY_TYPES \
                or row["member"] not in DEMO_MEMBERS:
            raise InvalidRequest(f"Line {line} of the demo history names an unknown "
                                 "partner, type or member.")
        handle = row["member"]
        if (row["partner"], handle) not in linked:
            member, _ = enrol(partner.id, handle, name=DEMO_MEMBERS[handle],
                              member_number=numbers.get(handle))
            numbers[handle] = member["member_number"]
            linked.add((row["partner"], handle))
        outcome = _book(partner, row, numbers[handle],
                        booked.get((row["partner"], row["reference"])), line)
        booked[(row["partner"], row["partner_txn_id"])] = outcome.body["id"]
        replayed += outcome.replayed
    voucher = _redeem_demo_voucher(numbers)
    result: dict[str, Any] = {"transactions": len(rows), "replayed": replayed,
                              "members": numbers, **({"voucher": voucher} if voucher else {})}
    sale = DEMO_MEMBERSHIP
    if sale["member"] in numbers and sale["partner"] in partners:
        sold = purchase.record_money_purchase(partners[sale["partner"]], {
            "member_number": numbers[sale["member"]], "plan": sale["plan"],
            "partner_txn_id": sale["partner_txn_id"], "price": sale["price"]})
        result["membership"] = {"member": sale["member"], "plan": sold.body["plan"],
                                "ends_at": sold.body["ends_at"].isoformat()}
    result["claims"] = open_demo_claims(numbers)
    return result


def _redeem_demo_voucher(numbers: dict[str, str]) -> str | None:
    """The demo member's voucher (once, by its key), when the member and reward exist."""
    number = numbers.get(DEMO_VOUCHER["member"])
    wanted = [r for r in rewards.catalog() if r["name"] == DEMO_VOUCHER["reward"]]
    if number is None or not wanted:
        return None
    with read() as session:
        member_id = member_by_number(session, number, "member").id
    outcome = redemptions.redeem(member_id, wanted[0]["id"], request_id=DEMO_VOUCHER["key"])
    code: str = outcome.body["voucher_code"]
    return code


#: missing-points claims left open at the first merchant for its portal's staff to answer:
#: (member handle, receipt, amount, days before now)
DEMO_CLAIMS = (("ada", "NW-RCPT-20418", "36.40", 2), ("grace", "NW-RCPT-20533", "12.95", 5))


def open_demo_claims(numbers: dict[str, str]) -> int:
    """Open the demo's claims (those not opened before); how many were opened now."""
    opened = 0
    for handle, receipt, amount, days in DEMO_CLAIMS:
        if handle not in numbers:
            continue
        with read() as session:
            member_id = session.scalars(select(Member.id).where(
                Member.member_number == numbers[handle])).one()
        try:
            open_claim(member_id, {
                "partner": DEMO_STAFF["partner"], "receipt": receipt,
                "spend": {"amount": Decimal(amount), "currency": "GBP"},
                "occurred_at": utcnow() - timedelta(days=days)})
        except AlreadyExists:
            continue
        opened += 1
    return opened


def _book(partner: PartnerRef, row: dict[str, str], member_number: str,
          reference: int | None, line: int) -> idempotency.Outcome:
    kind = row["type"]
    data: dict[str, Any] = {"partner_txn_id": row["partner_txn_id"]}
    try:
        if row["points"]:
            data["points"] = int(row["points"])
        if row["spend_amount"]:
            data["spend"] = {"amount": Decimal(row["spend_amount"]),
                             "currency": row["spend_currency"]}
    except (ValueError, InvalidOperation) as exc:
        raise InvalidRequest(f"Line {line} of the demo history: {exc}.") from exc
    if kind in ("earn", "burn", "hold"):
        data["member_number"] = member_number
        if kind == "earn":
            return transactions.earn(partner, data)
        if kind == "burn":
            return transactions.burn(partner, data)
        return holds.authorise_hold(partner, data)  # books no points
    if reference is None:
        raise InvalidRequest(f"Line {line} of the demo history refers to "
                             f"{row['reference']!r}, which no earlier line books.")
    if kind == "hold_capture":
        return transactions.capture(partner, reference, data)
    if kind == "hold_void":
        return holds.cancel_hold(partner, reference, data)  # books no points
    return transactions.reverse(partner, reference, data, None)
