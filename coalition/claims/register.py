"""Missing-points claims, installed on the app: ``/v1/me/claims`` and the member page's
claims, and their invariants in ``coalition ledger check``."""

from __future__ import annotations

from flask import Flask

from coalition.claims import api, check, page
from coalition.http.errors import api_of
from coalition.ledger.check import add_check


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(api.blp)
    app.register_blueprint(page.bp)
    add_check(app, check.claims_booked)
