"""A member's notifications, installed on the app: the inbox and choices API, the member
page's inbox and choices, the unsubscribe page of e-mails, and their ledger check."""

from __future__ import annotations

from flask import Flask

from coalition.http.errors import api_of
from coalition.ledger.check import add_check
from coalition.notifications import api, page
from coalition.notifications.check import emails_accounted


def init_app(app: Flask) -> None:
    api_of(app).register_blueprint(api.blp)
    app.register_blueprint(page.bp)
    app.context_processor(page.unread_badge)
    add_check(app, emails_accounted)
