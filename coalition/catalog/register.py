"""The catalog, installed on the app: its API and the member page's catalog."""

from __future__ import annotations

from flask import Flask

from coalition.catalog import api
from coalition.http.errors import api_of


def init_app(app: Flask) -> None:
    rest = api_of(app)
    rest.register_blueprint(api.blp)
    rest.register_blueprint(api.member_blp)
