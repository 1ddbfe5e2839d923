"""Promotions, installed on the app: their API, the member page's offers and the ledger
check of their caps."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.ledger.check import add_check
from coalition.offers import api, member_page
from coalition.offers.check import promotion_caps


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(api.blp)
    app.register_blueprint(member_page.bp)
    add_check(app, promotion_caps)
