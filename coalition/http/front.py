"""The front door (``/``) and the files the API docs page (``/docs``) loads.

Swagger UI's scripts and styles are served from the ``swagger-ui-bundle`` package installed
with Coalition, so ``/docs`` works on a machine without internet access and no page of
Coalition loads anything from another host.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from coalition.http.pages import protect_pages

#: where ``/docs`` finds Swagger UI (``OPENAPI_SWAGGER_UI_URL``)
DOCS_ASSETS_URL = "/docs/assets/"

bp = Blueprint("front", __name__)
protect_pages(bp, "member/base.html", "member_page.home", "Back to my points")

assets = Blueprint("docs_assets", __name__)


@bp.get("/")
def home() -> Any:
    """What Coalition is, and where each kind of user goes next."""
    return render_template("front.html")


@assets.get(DOCS_ASSETS_URL + "<path:filename>")
def docs_asset(filename: str) -> Any:
    """Swagger UI, as shipped by the installed package (no CDN)."""
    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)
