"""The catalog, installed on the app: its API and the member page's catalog."""

from __future__ import annotations

from flask import Flask

from coalition.catalog import api, page
from coalition.catalog.check import vouchers_paid
from coalition.http.errors import api_of
from coalition.ledger.check import add_check


def init_app(app: Flask) -> None:
    rest = api_of(app)
    rest.register_blueprint(api.blp)
    rest.register_blueprint(api.member_blp)
    app.register_blueprint(page.bp)
    add_check(app, vouchers_paid)
