"""Helpers for the finance sign-in and finance page tests (not a test module).

:func:`book_period` books a small coalition's period on the test's clock; every figure of its
settlement is worked out by hand in :data:`EXPECTED`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from flask.testing import FlaskClient

from coalition.oauth import finance_users
from coalition.oauth.clients import create_public_client
from tests.factories.clock import HandClock
from tests.factories.members import csrf_of, query_of
from tests.factories.partner_api import burn, earn, enrol
from tests.factories.settlement import T0, csv_rows, iso

FINANCE_PASSWORD = "ledger-balanced-2001"
S = T0
E = S + timedelta(seconds=10)
AT = iso(S + timedelta(seconds=1))

#: grocer: issued 1000 at 0.0100 = 10.00; redeemed 120 at 0.0080 = 0.96 → net −9.04
#: fuel:   issued  600 at 0.0090 =  5.40; redeemed 300 at 0.0085 = 2.55 → net −2.85
#:         (100 of the 600 booked in the period for an earlier date: a late entry)
#: charity:                              redeemed 200 at 0.0100 = 2.00 → net  2.00
#: matrix: fuel→grocer 120, grocer→charity 200, grocer→fuel 300; under the operator model
#: (the default) each partner settles its net with the coalition: positions are the nets,
#: the coalition's is the margin 10.00 + 5.40 − 0.96 − 2.55 − 2.00 = 9.89;
#: outstanding ann 1000 − 300 − 200 = 500 (grocer), bob 500 + 100 − 120 = 480 (fuel)
EXPECTED = {
    "grocer": {"issued_points": 1000, "redeemed_points": 120, "payable": "10.00",
               "receivable": "0.96", "net": "-9.04"},
    "fuel": {"issued_points": 600, "redeemed_points": 300, "payable": "5.40",
             "receivable": "2.55", "net": "-2.85"},
    "charity": {"issued_points": 0, "redeemed_points": 200, "payable": "0",
                "receivable": "2.00", "net": "2.00"},
}
CELLS = [{"origin": "fuel", "redeemed_at": "grocer", "points": 120},
         {"origin": "grocer", "redeemed_at": "charity", "points": 200},
         {"origin": "grocer", "redeemed_at": "fuel", "points": 300}]
POSITIONS = [{"party": "charity", "currency": "GBP", "amount": "2.00"},
             {"party": "fuel", "currency": "GBP", "amount": "-2.85"},
             {"party": "grocer", "currency": "GBP", "amount": "-9.04"}]
PAYMENTS = [{"from": "coalition", "to": "charity", "amount": "2.00", "currency": "GBP",
             "model": "operator"},
            {"from": "fuel", "to": "coalition", "amount": "2.85", "currency": "GBP",
             "model": "operator"},
            {"from": "grocer", "to": "coalition", "amount": "9.04", "currency": "GBP",
             "model": "operator"}]


@pytest.fixture
def fast_hashing() -> None:
    """Nothing to do any more: the test app hashes passwords at the minimal Argon2 cost
    itself (``PASSWORD_HASHING``); kept for the tests that still import it."""


@dataclass
class Booked:
    grocer: dict[str, str]
    fuel: dict[str, str]
    charity: dict[str, str]
    ann: str
    bob: str

    def grocer_file(self, g1_points: int = 1000) -> str:
        """The grocer's own record of the period (g1 with other points: a break)."""
        return csv_rows(("g1", "earn", self.ann, g1_points, AT),
                        ("g2", "burn", self.bob, 120, AT))


def book_period(client: FlaskClient, make_partner: Any, clock: HandClock) -> Booked:
    clock.set(S - timedelta(hours=1))
    since = S - timedelta(days=1)
    _, grocer = make_partner("grocer", name="Grocer", earn_rate=Decimal("1"),
                             issue_price=Decimal("0.0100"), redeem_rate=Decimal("0.0080"),
                             valid_from=since)
    _, fuel = make_partner("fuel", name="Fuel", earn_rate=Decimal("2"),
                           issue_price=Decimal("0.0090"), redeem_rate=Decimal("0.0085"),
                           valid_from=since)
    _, charity = make_partner("charity", name="Charity", kind="charity",
                              earn_rate=Decimal("0"), issue_price=Decimal("0"),
                              redeem_rate=Decimal("0.0100"), valid_from=since)
    ann, bob = enrol(client, grocer, "ann"), enrol(client, grocer, "bob")
    clock.set(S)
    earn(client, grocer, ann, "g1", points=1000)
    earn(client, fuel, bob, "f1", points=500)
    earn(client, fuel, bob, "f0", points=100,              # a late entry
         occurred_at=iso(S - timedelta(days=3)))
    burn(client, fuel, ann, "f2", points=300)       # grocer's points spent at fuel
    burn(client, grocer, bob, "g2", points=120)     # fuel's points spent at grocer
    burn(client, charity, ann, "c1", points=200)    # a donation of grocer's points
    clock.set(E + timedelta(minutes=1))  # what finance books now lands after the period
    return Booked(grocer, fuel, charity, ann, bob)


def finance_user(username: str = "fiona", name: str = "Fiona Ledger",
                 password: str = FINANCE_PASSWORD) -> dict[str, Any]:
    return finance_users.create_user(username, name, password)


def finance_client(base_url: str, path: str = "/fcb", name: str = "Finance app"
                   ) -> dict[str, str]:
    view = create_public_client(name, [f"{base_url}{path}"], scopes=("settlement:run",))
    return {"client_id": view.client_id, "redirect_uri": f"{base_url}{path}"}


class FinanceFlow:
    """One authorization-code flow for a finance user, driven by Authlib's OAuth 2.0
    client (the app's side) and a browser-like requests session (the user's side)."""

    def __init__(self, base_url: str, app_client: dict[str, str],
                 scope: str = "settlement:run") -> None:
        self.base_url = base_url
        self.client = app_client
        self.oauth = OAuth2Session(
            app_client["client_id"], redirect_uri=app_client["redirect_uri"], scope=scope,
            code_challenge_method="S256", token_endpoint_auth_method="none")
        self.verifier = generate_token(64)
        self.browser = requests.Session()
        self.authorize_url, self.state = self.oauth.create_authorization_url(
            f"{base_url}/oauth/authorize", code_verifier=self.verifier)

    def sign_in(self, username: str, password: str = FINANCE_PASSWORD) -> requests.Response:
        form = self.browser.get(self.authorize_url, timeout=10)
        assert form.status_code == 200, form.text
        return self.browser.post(self.authorize_url, data={
            "csrf_token": csrf_of(form.text), "username": username, "password": password},
            allow_redirects=False, timeout=10)

    def token(self, username: str = "fiona", password: str = FINANCE_PASSWORD
              ) -> dict[str, Any]:
        answer = self.sign_in(username, password)
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        assert location.startswith(self.client["redirect_uri"] + "?")
        assert query_of(location)["state"] == self.state
        return dict(self.oauth.fetch_token(f"{self.base_url}/oauth/token",
                                           authorization_response=location,
                                           code_verifier=self.verifier))


def page_sign_in(client: FlaskClient, username: str = "fiona",
                 password: str = FINANCE_PASSWORD) -> Any:
    """Sign in on /finance with the Flask test client, through the real flow; the page
    the user lands on."""
    start = client.get("/finance/signin")
    assert start.status_code == 302, start.get_data(as_text=True)
    location = start.headers["Location"]
    form = client.get(location)
    assert form.status_code == 200, form.get_data(as_text=True)
    answer = client.post(location, data={"csrf_token": csrf_of(form.get_data(as_text=True)),
                                         "username": username, "password": password})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client.get(answer.headers["Location"], follow_redirects=True)
