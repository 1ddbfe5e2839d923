"""The application factory: ``gunicorn 'coalition.app:create_app()'``."""

from __future__ import annotations

import os
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from flask import Flask

from coalition import passwords
from coalition.commands import add_core_commands
from coalition.db import db
from coalition.http.front import DOCS_ASSETS_URL
from coalition.oauth.models import ALL_SCOPES, MEMBER_SCOPES
from coalition.observability import init_observability
from config import load_settings, source_checkout
from config.logging import configure_logging

API_TITLE = "Coalition"
API_VERSION = "v1"

#: the packages the app is made of, by name, in the order of the API document: each one's
#: ``register.init_app(app)`` adds its blueprints, commands and hooks. Named rather than
#: imported, so that the core never depends on the packages built on it (Django's
#: ``INSTALLED_APPS``, the Flask tutorial's ``init_app``).
PACKAGES = ("coalition.http", "coalition.oauth", "coalition.program", "partners",
            "settlement", "coalition.member", "coalition.notifications",
            "coalition.membership", "coalition.catalog", "coalition.audit", "coalition.claims",
            "coalition.offers")


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

    db.init_app(app)
    passwords.init_app(app)
    for package in PACKAGES:
        import_module(f"{package}.register").init_app(app)
    add_core_commands(app)
    init_observability(app)  # request ids, the access log, /metrics
    return app


def load_models() -> None:
    """Import every package's models so that ``Base.metadata`` knows all tables."""
    for package in ("coalition", "coalition.audit", "coalition.ledger", "coalition.oauth",
                    "coalition.notifications", *PACKAGES):
        if find_spec(f"{package}.models") is not None:
            import_module(f"{package}.models")


def _spec_options() -> dict[str, Any]:
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
