"""Settlement, installed on the app: its API, the finance page, the ``settle`` and
``finance`` commands, and the ledger check that closed periods never change."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.ledger.check import add_check
from settlement import api, page
from settlement.check import closed_runs
from settlement.cli import analytics_cli, finance_cli, settle_cli


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(api.blp)
    api_of(app).register_blueprint(api.analytics_blp)
    app.register_blueprint(page.bp)
    app.cli.add_command(settle_cli)
    app.cli.add_command(finance_cli)
    app.cli.add_command(analytics_cli)
    add_check(app, closed_runs)
