"""The settlement API (``/v1/settlement``): finance runs, partners read their statements."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.audit.views import current_actor
from coalition.errors import CoalitionError, InsufficientScope, InvalidRequest, NotFound
from coalition.http.errors import accepts
from coalition.http.guard import protected
from coalition.oauth.server import current_principal
from settlement import analytics, reconcile, service
from settlement.schemas import (
    AnalyticsQueryArgsSchema,
    AnalyticsSchema,
    BreakQueryArgsSchema,
    BreakSchema,
    LiabilitySchema,
    MatrixSchema,
    PaymentSchema,
    ReconciliationSchema,
    ResolveSchema,
    RunCreateSchema,
    RunSchema,
    RunSummarySchema,
    StatementSchema,
)

blp = Blueprint("settlement", __name__, url_prefix="/v1/settlement",
                description="Settlement between partners")
analytics_blp = Blueprint("analytics", __name__, url_prefix="/v1/analytics",
                          description="Program analytics for the operator and finance")

#: operator clients, and finance users signed in through the finance page
_FINANCE = ("operator", "finance")
_CSV = {"text/csv": {"schema": {"type": "string"}}}
#: ids are 64-bit: a larger one in a path names nothing (404), rather than overflowing the
#: database driver (500)
_ID = "int(max=9223372036854775807)"


def _who() -> str:
    """Who acts: a finance user by their username, an operator client by its id."""
    principal = current_principal()
    return principal.finance_user or principal.client_id


def _resolver(named: str | None) -> str:
    """Who resolves a break: a finance user is always themselves; an operator client may
    name the person it acts for."""
    principal = current_principal()
    if principal.finance_user:
        if named and named != principal.finance_user:
            message = "A finance user resolves breaks in their own name."
            raise InvalidRequest(message, errors={"user": [message]})
        return principal.finance_user
    return named or principal.client_id


def _wants_csv() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


@blp.route("/runs")
class Runs(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(200, RunSummarySchema(many=True))
    def get(self) -> Any:
        """Settlement runs, oldest period first."""
        return service.list_runs()

    @protected("settlement:run", kinds=_FINANCE)
    @blp.arguments(RunCreateSchema())
    @blp.response(201, RunSchema)
    @blp.alt_response(409, description="period_overlap, unpriced_entries")
    def post(self, data: dict[str, Any]) -> Any:
        """Compute a draft run over a half-open period of booking time."""
        return service.create_run(data["period_start"], data["period_end"], _who(),
                                  actor=current_actor())


@blp.route(f"/runs/<{_ID}:run_id>")
class Run(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(200, RunSchema)
    @blp.alt_response(404, description="No such run")
    def get(self, run_id: int) -> Any:
        """A run with every statement, the matrix, obligations and payments."""
        return service.get_run(run_id)

    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(204)
    @blp.alt_response(404, description="No such run")
    @blp.alt_response(409, description="period_closed")
    def delete(self, run_id: int) -> None:
        """Discard a draft run (a closed run is kept forever)."""
        service.delete_draft(run_id, actor=current_actor())


@blp.route(f"/runs/<{_ID}:run_id>/recompute")
class Recompute(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(200, RunSchema)
    @blp.alt_response(404, description="No such run")
    @blp.alt_response(409, description="period_closed")
    def post(self, run_id: int) -> Any:
        """Recompute a draft from the journal."""
        return service.recompute(run_id, actor=current_actor())


@blp.route(f"/runs/<{_ID}:run_id>/statements/<partner>")
class Statement(MethodView):
    @protected("settlement:run", "settlement:read", any_of=True)
    @blp.response(200, StatementSchema, content_type="application/json")
    @blp.alt_response(200, content_type="text/csv", schema=None,
                      description="The statement as CSV (Accept: text/csv)", success=True)
    @blp.alt_response(404, description="No such run or statement")
    def get(self, run_id: int, partner: str) -> Any:
        """One partner's statement; a partner reads only its own, of closed runs."""
        principal = current_principal()
        if principal.kind == "partner":
            if "settlement:read" not in principal.scopes:
                raise InsufficientScope("This call needs the scope settlement:read.")
            if principal.partner_code != partner:
                # another partner's statement does not exist, as far as this caller knows

                raise NotFound(f"No statement for {partner} in run {run_id}.")
            doc = service.statement(run_id, partner, only_closed=True)
        else:
            if "settlement:run" not in principal.scopes:
                raise InsufficientScope("This call needs the scope settlement:run.")
            doc = service.statement(run_id, partner)
        if _wants_csv():
            return Response(service.statement_csv(doc), mimetype="text/csv")
        return doc


@blp.route(f"/runs/<{_ID}:run_id>/matrix")
class Matrix(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(200, MatrixSchema)
    @blp.alt_response(404, description="No such run")
    def get(self, run_id: int) -> Any:
        """Points earned at ``origin`` and redeemed at ``redeemed_at`` in the period."""
        return service.get_run(run_id)["matrix"]


@blp.route(f"/runs/<{_ID}:run_id>/payments")
class Payments(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(200, PaymentSchema(many=True))
    @blp.alt_response(404, description="No such run")
    def get(self, run_id: int) -> Any:
        """Netted payment instructions: at most n − 1 per currency."""
        return service.get_run(run_id)["payments"]


@blp.route(f"/runs/<{_ID}:run_id>/export")
class Export(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(200, RunSchema, content_type="application/json")
    @blp.alt_response(200, content_type="text/csv", schema=None, success=True,
                      description="Statement lines and payments as CSV (Accept: text/csv)")
    @blp.alt_response(404, description="No such run")
    def get(self, run_id: int) -> Any:
        """The run for export, as JSON or CSV."""
        doc = service.get_run(run_id)
        if _wants_csv():
            response = Response(service.run_csv(doc), mimetype="text/csv")
            response.headers["Content-Disposition"] = (
                f'attachment; filename="settlement-run-{run_id}.csv"')
            return response
        return doc


@blp.route(f"/runs/<{_ID}:run_id>/reconciliations/<partner>")
class Reconciliations(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @accepts("text/csv")
    @blp.doc(requestBody={"required": True, "content": _CSV})
    @blp.response(201, ReconciliationSchema)
    @blp.alt_response(404, description="No such run or partner")
    @blp.alt_response(409, description="period_closed")
    @blp.alt_response(415, description="Send the file as text/csv")
    @blp.alt_response(422, description="The file cannot be read as CSV with the expected header")
    def post(self, run_id: int, partner: str) -> Any:
        """Reconcile the partner's CSV (partner_txn_id,type,member_number,points,occurred_at)."""
        if request.mimetype != "text/csv":

            class _Unsupported(CoalitionError):
                status, code = 415, "unsupported_media_type"

            raise _Unsupported("Send the partner's file as text/csv.")
        return reconcile.reconcile(run_id, partner, request.get_data(), _who(),
                                   actor=current_actor())


@blp.route(f"/runs/<{_ID}:run_id>/breaks")
class Breaks(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.arguments(BreakQueryArgsSchema(), location="query")
    @blp.response(200, BreakSchema(many=True))
    @blp.alt_response(404, description="No such run")
    def get(self, args: dict[str, Any], run_id: int) -> Any:
        """Reconciliation breaks of the run."""
        return reconcile.list_breaks(run_id, args.get("status"))


@blp.route(f"/runs/<{_ID}:run_id>/breaks/<{_ID}:break_id>")
class BreakResource(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.arguments(ResolveSchema())
    @blp.response(200, BreakSchema)
    @blp.alt_response(404, description="No such break")
    @blp.alt_response(409, description="break_resolved, period_closed, insufficient_points")
    def post(self, data: dict[str, Any], run_id: int, break_id: int) -> Any:
        """Resolve a break: accept it with a reason, or book the adjustment."""
        return reconcile.resolve(run_id, break_id, data["action"], data["reason"],
                                 _resolver(data.get("user")), actor=current_actor())


@blp.route(f"/runs/<{_ID}:run_id>/close")
class Close(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(200, RunSchema)
    @blp.alt_response(404, description="No such run")
    @blp.alt_response(409, description="unresolved_breaks, period_closed")
    def post(self, run_id: int) -> Any:
        """Close the run: only with every break resolved; then it never changes."""
        return service.close_run(run_id, _who(), actor=current_actor())


@blp.route(f"/runs/<{_ID}:run_id>/liability")
class Liability(MethodView):
    @protected("settlement:run", kinds=_FINANCE)
    @blp.response(200, LiabilitySchema)
    @blp.alt_response(404, description="No such run")
    def get(self, run_id: int) -> Any:
        """The points liability at the run's period end, with the period's roll-forward."""
        return service.run_liability(run_id)


@analytics_blp.route("")
class Analytics(MethodView):
    # only operator clients and finance users ever hold either scope
    @protected("admin", "settlement:run", any_of=True)
    @analytics_blp.arguments(AnalyticsQueryArgsSchema(), location="query")
    @analytics_blp.response(200, AnalyticsSchema, content_type="application/json")
    @analytics_blp.alt_response(200, content_type="text/csv", schema=None, success=True,
                                description="The rows as CSV (Accept: text/csv)")
    @analytics_blp.alt_response(404, description="No such partner")
    def get(self, args: dict[str, Any]) -> Any:
        """Members and points per month and partner."""
        doc = analytics.program_analytics(args.get("from"), args.get("to"),
                                          args.get("partner"))
        if _wants_csv():
            return Response(analytics.as_csv(doc), mimetype="text/csv")
        return doc
