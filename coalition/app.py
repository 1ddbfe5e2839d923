"""The application factory: ``gunicorn 'coalition.app:create_app()'``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from coalition.front import DOCS_ASSETS_URL
from coalition.wording import plural
from config import load_settings, source_checkout
from config.logging import configure_logging

API_TITLE = "Coalition"
API_VERSION = "v1"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` overrides settings by name (without the prefix)."""
    instance_path = os.environ.get("COALITION_INSTANCE_PATH")
    app = Flask("coalition", instance_path=str(Path(instance_path).resolve())
                if instance_path else None)
    settings = load_settings(Path(app.instance_path), overrides=config,
                             checkout=source_checkout())
    app.config.update(settings)
    app.config.update(
        TESTING=settings["ENV"] == "testing",
        MAX_CONTENT_LENGTH=settings["MAX_CONTENT_LENGTH"],
        API_TITLE=API_TITLE,
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Swagger UI from the installed swagger-ui-bundle package, never a CDN; no
        # validator badge (it would be fetched from another host)
        OPENAPI_SWAGGER_UI_URL=DOCS_ASSETS_URL,
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
        API_SPEC_OPTIONS=_spec_options(),
        JSON_SORT_KEYS=False,
        # the member page keeps its OAuth tokens in the session cookie: never sent by
        # cross-site subrequests, and only over https in production
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings["ENV"] == "production",
    )
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])
    if settings["ENV"] != "testing":
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    from coalition.db import db
    from coalition.oauth.server import init_oauth
    from coalition.web import register_error_handlers

    db.init_app(app)
    init_oauth(app)
    register_error_handlers(app)
    from coalition.limits import init_limits

    init_limits(app)  # rate limits (429), strict JSON bodies (400), 413 in the error shape
    _register_api(app)
    _register_pages(app)
    _register_cli(app)
    from coalition.observability import init_observability

    init_observability(app)  # request ids, the access log, /metrics
    return app


def load_models() -> None:
    """Import every package's models so that ``Base.metadata`` knows all tables."""
    import coalition.audit.models  # noqa: F401
    import coalition.ledger.models  # noqa: F401
    import coalition.models  # noqa: F401
    import coalition.oauth.models  # noqa: F401
    import settlement.models  # noqa: F401


def _spec_options() -> dict[str, Any]:
    from coalition.oauth.models import ALL_SCOPES, MEMBER_SCOPES

    return {
        "info": {
            "description": "Coalition: earn and burn one shared point currency across "
                           "partner brands, with settlement between the partners.",
        },
        "components": {
            "securitySchemes": {
                "oauth2": {
                    "type": "oauth2",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": "/oauth/token",
                            "scopes": {scope: scope for scope in ALL_SCOPES},
                        },
                        # members, through public clients, with PKCE (S256)
                        "authorizationCode": {
                            "authorizationUrl": "/oauth/authorize",
                            "tokenUrl": "/oauth/token",
                            "refreshUrl": "/oauth/token",
                            "scopes": {scope: scope for scope in MEMBER_SCOPES},
                        },
                    },
                },
                "clientBasic": {"type": "http", "scheme": "basic",
                                "description": "OAuth client id and secret"},
            },
        },
    }


def _register_api(app: Flask) -> None:
    from coalition import health
    from coalition.oauth import views as oauth_views
    from coalition.program import views as program_views
    from coalition.schemas import ErrorSchema
    from coalition.web import Api
    from partners import admin as partner_admin
    from partners import api as partner_api
    from settlement import api as settlement_api

    Api.ERROR_SCHEMA = ErrorSchema
    api = Api(app)
    app.extensions["coalition.api"] = api
    for blueprint in (health.blp, oauth_views.blp, program_views.blp, partner_admin.blp,
                      partner_api.blp, settlement_api.blp):
        api.register_blueprint(blueprint)
    from coalition import member_api

    api.register_blueprint(member_api.blp)
    api.register_blueprint(member_api.admin_blp)
    from coalition.member import api as me_api
    from coalition.oauth import admin as client_admin

    api.register_blueprint(me_api.blp)
    api.register_blueprint(client_admin.blp)
    from coalition.audit import views as audit_views

    api.register_blueprint(audit_views.blp)


def _register_pages(app: Flask) -> None:
    """Server-rendered pages: the front door, sign-in (``/oauth/authorize``), ``/member``,
    ``/finance``, and the files of ``/docs``."""
    from coalition import front
    from coalition.member import page
    from coalition.oauth import authorize
    from coalition.pages import init_pages

    init_pages(app)
    app.add_template_filter(plural)  # {{ n|plural("point") }} → 1 point, 1,200 points
    app.register_blueprint(front.bp)
    app.register_blueprint(front.assets)
    app.register_blueprint(authorize.bp)
    app.register_blueprint(page.bp)
    from settlement import page as finance_page

    app.register_blueprint(finance_page.bp)


def _register_cli(app: Flask) -> None:
    from coalition.cli import client_cli, db_cli, demo_cli, expire_command, ledger_cli
    from partners.cli import partner_cli
    from settlement.cli import finance_cli, settle_cli

    for group in (db_cli, client_cli, demo_cli, ledger_cli, expire_command, partner_cli,
                  settle_cli, finance_cli):
        app.cli.add_command(group)
    from coalition.cli import daily_command, member_cli

    app.cli.add_command(member_cli)
    app.cli.add_command(daily_command)
    from coalition.cli import audit_cli

    app.cli.add_command(audit_cli)
