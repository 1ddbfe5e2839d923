"""A member's notifications, installed on the app: the inbox and choices API, the member
page's inbox and the unsubscribe page."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.notifications import api


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(api.blp)
