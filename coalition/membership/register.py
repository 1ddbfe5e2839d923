"""Paid membership, installed on the app: its API, the member page's "Membership", and
its ledger check."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.ledger.check import add_check
from coalition.membership import api, check, page


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(api.blp)
    app.register_blueprint(page.bp)
    add_check(app, check.memberships_agree)
