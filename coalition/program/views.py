"""``GET /v1/program`` (public) and ``PUT /v1/admin/program`` (operator)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.audit.views import current_actor
from coalition.http.guard import protected
from coalition.program import service
from coalition.program.schemas import ProgramRulesSchema, ProgramSchema

blp = Blueprint("program", __name__, url_prefix="/v1", description="Program rules")


@blp.route("/program")
class Program(MethodView):
    @blp.response(200, ProgramSchema)
    def get(self) -> dict[str, Any]:
        """The program's current terms, their version, and every partner's earn rate."""
        return service.program_terms()


@blp.route("/admin/program")
class AdminProgram(MethodView):
    @protected("admin", kinds=("operator",))
    @blp.arguments(ProgramRulesSchema())
    @blp.response(200, ProgramSchema)
    def put(self, rules: dict[str, Any]) -> dict[str, Any]:
        """Publish a new version of the program rules."""
        actor = current_actor()
        service.publish_rules(rules, published_by=actor.client_id, actor=actor)
        return service.program_terms()
