"""``/finance``: the finance page.

Finance users sign in with their own accounts (``coalition finance user create``) the way
every page signs its user in (:mod:`coalition.http.signin`, scope ``settlement:run``,
redirect URI ``<this site>/finance/callback``), coming back to the page they asked for.
Each view then calls the same settlement services as ``/v1/settlement``, in the finance
user's name: what they create, upload, resolve or close is recorded under their username.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    json,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from coalition.audit.service import Actor
from coalition.errors import CoalitionError, NotFound
from coalition.http.pages import check_csrf, protect_pages
from coalition.http.signin import PageSignIn
from coalition.oauth.server import Principal
from coalition.wording import breaks_to_resolve, plural, reconciliation_counts
from config.logging import current_request_id
from settlement import analytics, charts, reconcile, service
from settlement.schemas import RunSchema

bp = Blueprint("finance_page", __name__, url_prefix="/finance")
protect_pages(bp, "finance/base.html", "finance_page.home", "Back to settlement runs")

SCOPE = "settlement:run"
TOKENS = "finance_tokens"
PENDING = "finance_oauth_pending"
REASON_MIN, REASON_MAX = 3, 2000

BREAK_LABELS = {
    "points_mismatch": "Records differ", "missing_in_ledger": "Missing in the ledger",
    "missing_in_file": "Missing in the partner's file",
    "duplicated_in_file": "Duplicated in the file", "malformed": "Unreadable row",
}
ADJUSTABLE = ("points_mismatch", "missing_in_ledger", "missing_in_file")
#: ids are 64-bit: a larger one names nothing (404) rather than overflowing the driver
ID = "int(max=9223372036854775807)"


def _stamp(value: datetime | None) -> str:
    """To the second, since periods are honoured to the second."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _sign(value: str) -> int:
    amount = Decimal(value)
    return (amount > 0) - (amount < 0)


@bp.before_request
def _nobody_yet() -> None:
    # set once the session's token is proven (_finance_user), for the page header
    g.finance_user = None


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"finance_user": g.get("finance_user"), "money": charts.money, "stamp": _stamp,
            "sign": _sign}


# --------------------------------------------------------------------------- sign in and out


def _finance_user(principal: Principal) -> str | None:
    g.finance_user = principal.finance_user or None
    return g.finance_user


page_sign_in = PageSignIn(bp, name="Finance page", scope=SCOPE, tokens=TOKENS, pending=PENDING,
                          who=_finance_user, come_back=True, clears_session=False)


def _actor(username: str) -> Actor:
    """Who the audit log names: the page's client, acting for the finance user."""
    return Actor(session[TOKENS]["client_id"], username, current_request_id())


# --------------------------------------------------------------------------- runs


DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
TIME = re.compile(r"\d{2}:\d{2}(:\d{2})?")


def _moment(day: str, clock: str, field: str, errors: dict[str, str]) -> datetime | None:
    """A date and an optional whole-second time of day, in UTC."""
    if not day:
        errors[field] = "Enter a date."
        return None
    if not DATE.fullmatch(day) or (clock and not TIME.fullmatch(clock)):
        errors[field] = "Enter a date as YYYY-MM-DD and a time as HH:MM:SS (UTC)."
        return None
    try:
        return datetime.fromisoformat(f"{day}T{clock or '00:00:00'}").replace(tzinfo=UTC)
    except ValueError:
        errors[field] = "That date or time does not exist."
        return None


def _runs_page(form: dict[str, str] | None = None,
               errors: dict[str, str] | None = None, problem: str | None = None,
               status: int = 200) -> Any:
    runs = sorted(service.list_runs(), key=lambda r: r["period_start"], reverse=True)
    return render_template("finance/runs.html", runs=runs, form=form or {},
                           errors=errors or {}, problem=problem), status


@bp.get("")
def home() -> Any:
    username = page_sign_in.signed_in()
    if username is None:
        return render_template("finance/welcome.html")
    return _runs_page()


@bp.post("/runs")
def create_run() -> Any:
    username = page_sign_in.require()
    check_csrf()
    form = {k: request.form.get(k, "").strip()
            for k in ("start_date", "start_time", "end_date", "end_time")}
    errors: dict[str, str] = {}
    start = _moment(form["start_date"], form["start_time"], "start", errors)
    end = _moment(form["end_date"], form["end_time"], "end", errors)
    if start and end and start >= end:
        errors["end"] = "The end must be after the start."
    if errors or start is None or end is None:
        return _runs_page(form, errors, "Check the period.", 422)
    try:
        run = service.create_run(start, end, username, actor=_actor(username))
    except CoalitionError as refused:
        fields = {"period_start": "start", "period_end": "end"}
        for name, messages in (refused.errors or {}).items():
            if name in fields and isinstance(messages, list):
                errors[fields[name]] = " ".join(messages)
        return _runs_page(form, errors, refused.message, refused.status)
    flash(f"Run {run['id']} is computed as a draft.", "success")
    return redirect(url_for(".run", run_id=run["id"]))


def _load(run_id: int) -> dict[str, Any]:
    try:
        return service.get_run(run_id)
    except NotFound:
        abort(404, f"No settlement run {run_id}.")


@bp.get(f"/runs/<{ID}:run_id>")
def run(run_id: int) -> Any:
    page_sign_in.require()
    doc = _load(run_id)
    breaks = reconcile.list_breaks(run_id)
    partners = [s["partner"] for s in doc["statements"]]
    return render_template(
        "finance/run.html", run=doc, charts=charts.position_charts(doc["positions"]),
        liability=service.run_liability(run_id),
        heat=charts.heat_map(doc["matrix"]["cells"], partners),
        open_breaks=[b for b in breaks if b["status"] == "open"],
        resolved_breaks=[b for b in breaks if b["status"] != "open"],
        labels=BREAK_LABELS, adjustable=ADJUSTABLE, reason_min=REASON_MIN,
        reason_max=REASON_MAX)


def _back(run_id: int) -> BaseResponse:
    """Back to the run, whose top says what happened (a status message)."""
    return redirect(url_for(".run", run_id=run_id))


@bp.post(f"/runs/<{ID}:run_id>/reconciliations")
def upload(run_id: int) -> Any:
    """The partner's own record of the period, as a CSV file, against the journal."""
    username = page_sign_in.require()
    check_csrf()
    partner = request.form.get("partner", "")
    file = request.files.get("file")
    content = file.read() if file else b""
    if not partner or not content:
        flash("Choose the partner and the CSV file to reconcile.", "error")
        return _back(run_id)
    try:
        report = reconcile.reconcile(run_id, partner, content, username,
                                     actor=_actor(username))
    except CoalitionError as refused:
        detail = " ".join(m for ms in (refused.errors or {}).values()
                          if isinstance(ms, list) for m in ms if m != refused.message)
        flash(f"The file was not reconciled: {refused.message} {detail}".strip(), "error")
        return _back(run_id)
    breaks = sum(1 for b in report["breaks"] if b["status"] == "open")
    flash(f"{partner}'s file of {plural(report['rows'], 'row')} is reconciled: "
          f"{reconciliation_counts(report['summary'])}. {breaks_to_resolve(breaks)}.",
          "success" if not breaks else "info")
    return _back(run_id)


@bp.post(f"/runs/<{ID}:run_id>/breaks/<{ID}:break_id>")
def resolve(run_id: int, break_id: int) -> Any:
    username = page_sign_in.require()
    check_csrf()
    action = request.form.get("action", "")
    reason = request.form.get("reason", "").strip()
    if action not in ("accept", "adjust"):
        flash("Choose to accept the break or to book an adjustment.", "error")
    elif not REASON_MIN <= len(reason) <= REASON_MAX:
        flash(f"Break {break_id}: give a reason of {REASON_MIN} to {REASON_MAX} characters.",
              "error")
    else:
        try:
            done = reconcile.resolve(run_id, break_id, action, reason, username,
                                     actor=_actor(username))
        except CoalitionError as refused:
            flash(f"Break {break_id} was not resolved: {refused.message}", "error")
        else:
            what = ("accepted" if done["status"] == "accepted" else
                    f"adjusted (entry {done['adjustment_entry_id']} booked)")
            flash(f"Break {break_id} is {what}.", "success")
    return _back(run_id)


@bp.post(f"/runs/<{ID}:run_id>/recompute")
def recompute(run_id: int) -> Any:
    username = page_sign_in.require()
    check_csrf()
    try:
        doc = service.recompute(run_id, actor=_actor(username))
    except CoalitionError as refused:
        flash(f"The run was not recomputed: {refused.message}", "error")
    else:
        flash(f"Run {run_id} is recomputed from the journal (digest {doc['digest'][:12]}…).",
              "success")
    return _back(run_id)


@bp.post(f"/runs/<{ID}:run_id>/close")
def close(run_id: int) -> Any:
    username = page_sign_in.require()
    check_csrf()
    try:
        service.close_run(run_id, username, actor=_actor(username))
    except CoalitionError as refused:
        flash(f"The run was not closed: {refused.message}", "error")
    else:
        flash(f"Run {run_id} is closed. Its figures will never change.", "success")
    return _back(run_id)


# --------------------------------------------------------------------------- analytics


@bp.get("/analytics")
def program_analytics() -> Any:
    """Members and points per month and partner, drawn and tabled."""
    page_sign_in.require()
    form = {k: request.args.get(k, "").strip() for k in ("from", "to")}
    try:
        doc = analytics.program_analytics(form["from"] or None, form["to"] or None)
    except CoalitionError as refused:
        errors = {name: " ".join(messages) for name, messages in (refused.errors or {}).items()
                  if isinstance(messages, list)}
        return render_template("finance/analytics.html", doc=None, form=form, errors=errors,
                               problem=refused.message), refused.status
    months = [t["month"] for t in doc["totals"]]
    return render_template(
        "finance/analytics.html", doc=doc, form={"from": doc["from"], "to": doc["to"]},
        errors={}, problem=None, lines=charts.points_lines(doc["totals"]),
        bars=charts.issued_bars(doc["months"], months))


@bp.get("/analytics.csv")
def analytics_csv() -> Response:
    page_sign_in.require()
    try:
        doc = analytics.program_analytics(request.args.get("from") or None,
                                          request.args.get("to") or None)
    except CoalitionError as refused:
        abort(refused.status, refused.message)
    return _download(analytics.as_csv(doc), "text/csv",
                     f"analytics-{doc['from']}-{doc['to']}.csv")


# --------------------------------------------------------------------------- exports


def _download(body: str, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get(f"/runs/<{ID}:run_id>/export.csv")
def export_csv(run_id: int) -> Response:
    page_sign_in.require()
    return _download(service.run_csv(_load(run_id)), "text/csv",
                     f"settlement-run-{run_id}.csv")


@bp.get(f"/runs/<{ID}:run_id>/export.json")
def export_json(run_id: int) -> Response:
    page_sign_in.require()
    body = json.dumps(RunSchema().dump(_load(run_id)), indent=2)
    return _download(body, "application/json", f"settlement-run-{run_id}.json")


@bp.get(f"/runs/<{ID}:run_id>/statements/<partner>.csv")
def statement_csv(run_id: int, partner: str) -> Response:
    page_sign_in.require()
    try:
        doc = service.statement(run_id, partner)
    except NotFound as missing:
        abort(404, missing.message)
    return _download(service.statement_csv(doc), "text/csv",
                     f"statement-{run_id}-{partner}.csv")
