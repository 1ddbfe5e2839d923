"""``GET /v1/admin/audit`` (operator clients, scope ``admin``), and :func:`current_actor`,
which views pass to the services they call."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from coalition.audit import service
from coalition.audit.service import ACTIONS, Actor
from coalition.http.guard import protected
from coalition.oauth.server import current_principal
from coalition.schemas import CursorQueryArgsSchema, UTCTimestamp
from config.logging import current_request_id

blp = Blueprint("admin_audit", __name__, url_prefix="/v1/admin/audit",
                description="Operator: the audit log of operator and finance actions")


def current_actor() -> Actor:
    """The caller of this request: its client, the finance user it acts for, if any, and
    the request id."""
    principal = current_principal()
    return Actor(principal.client_id, getattr(principal, "finance_user", None),
                 current_request_id())


class AuditQueryArgsSchema(CursorQueryArgsSchema):
    action = fields.String(validate=validate.OneOf(ACTIONS))
    actor = fields.String(validate=validate.Length(min=1, max=200),
                          metadata={"description": "a client id (`cli` for the command "
                                    "line) or a finance user's name"})
    occurred_from = UTCTimestamp(data_key="from", metadata={"description": "inclusive"})
    occurred_to = UTCTimestamp(data_key="to", metadata={"description": "exclusive"})


class AuditEventSchema(Schema):
    id = fields.Integer()
    occurred_at = UTCTimestamp()
    action = fields.String(metadata={"enum": list(ACTIONS)})
    actor = fields.String(metadata={"description": "the OAuth client that acted; `cli` for "
                                    "the command line, `system` for the application itself"})
    actor_user = fields.String(allow_none=True, metadata={
        "description": "the person: a finance user's name, or the login at the command line"})
    target = fields.String(metadata={"description": "what was acted on, as kind:id"})
    details = fields.Dict(metadata={"description": "what changed (never a secret)"})
    request_id = fields.String(allow_none=True, metadata={
        "description": "the X-Request-ID of the request that did it"})


class AuditPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEventSchema))
    next_cursor = fields.String(allow_none=True)


@blp.route("")
class Audit(MethodView):
    @protected("admin", kinds=("operator",))
    @blp.arguments(AuditQueryArgsSchema(), location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Audit events, newest first; follow ``next_cursor`` for more."""
        return service.list_events(**args)
