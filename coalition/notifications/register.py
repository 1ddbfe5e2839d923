"""A member's notifications, installed on the app: the inbox and choices API, the member
page's inbox and choices, and the unsubscribe page of e-mails."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.notifications import api, page


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(api.blp)
    app.register_blueprint(page.bp)
    app.context_processor(page.unread_badge)
