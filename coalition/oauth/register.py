"""The authorization server, its endpoints, the sign-in page, the operator's API for
public clients and the ``client`` command, installed on the app."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.oauth import admin, authorize, views
from coalition.oauth.cli import client_cli
from coalition.oauth.server import init_oauth


def init_app(app: Flask) -> None:
    init_oauth(app)
    api = api_of(app)
    api.register_blueprint(views.blp)
    api.register_blueprint(admin.blp)
    app.register_blueprint(authorize.bp)
    app.cli.add_command(client_cli)
