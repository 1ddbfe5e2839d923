"""Paid membership, installed on the app: its API and its ledger check."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.ledger.check import add_check
from coalition.membership import api, check


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(api.blp)
    add_check(app, check.memberships_agree)
