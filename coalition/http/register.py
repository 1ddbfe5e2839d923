"""What every request and page shares, installed on the app: the error shape, the
limits, the client's address behind a proxy, the API object (with ``/healthz``), the
pages' filters and the front door."""

from __future__ import annotations

from flask import Flask

from coalition import health
from coalition.http import front
from coalition.http.errors import Api, register_error_handlers
from coalition.http.limits import init_limits
from coalition.http.pages import init_pages
from coalition.http.proxy import init_proxy
from coalition.wording import plural


def init_app(app: Flask) -> None:
    register_error_handlers(app)
    init_limits(app)  # rate limits (429), strict JSON bodies (400), 413 in the error shape
    init_proxy(app)  # the client's address behind nginx (after init_limits: outermost)
    api = Api(app)
    app.extensions["coalition.api"] = api
    api.register_blueprint(health.blp)
    init_pages(app)
    app.add_template_filter(plural)  # {{ n|plural("point") }} → 1 point, 1,200 points
    app.register_blueprint(front.bp)
    app.register_blueprint(front.assets)
