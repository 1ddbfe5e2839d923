"""``GET /healthz``: the process is up and the database answers."""

from __future__ import annotations

import logging
from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from coalition.db import read
from coalition.http.errors import error_response

blp = Blueprint("health", __name__, description="Health")
log = logging.getLogger("coalition.health")


class HealthSchema(Schema):
    status = fields.String()
    database = fields.String()


@blp.route("/healthz")
@blp.response(200, HealthSchema)
@blp.alt_response(503, description="The database does not answer")
def healthz() -> Any:
    """Liveness and database check."""
    try:
        with read() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        log.exception("health check: database unavailable")
        return error_response(503, "The database is unavailable.", "unavailable")
    return {"status": "ok", "database": "ok"}
