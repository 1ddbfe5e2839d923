"""The program rules' API, installed on the app."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.program import views


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(views.blp)
