"""Everything a member does, installed on the app: ``/v1/me`` and the member page."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.member import api, ledger_api, page


def init_app(app: Flask) -> None:
    rest = api_of(app)
    rest.register_blueprint(ledger_api.blp)
    rest.register_blueprint(ledger_api.admin_blp)
    rest.register_blueprint(api.blp)
    app.register_blueprint(page.bp)
