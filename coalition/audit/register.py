"""The audit log's API and command, installed on the app."""

from __future__ import annotations

from flask import Flask

from coalition.audit import views
from coalition.audit.cli import audit_cli
from coalition.http.errors import api_of


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(views.blp)
    app.cli.add_command(audit_cli)
