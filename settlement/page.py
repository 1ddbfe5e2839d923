"""``/finance``: the finance page.

Finance users sign in with their own accounts (``coalition finance user create``) through
the authorization-code grant with PKCE, exactly as the member page does: the page is a
public client of this server with the scope ``settlement:run``, starts each sign-in with a
fresh state and verifier, exchanges the code at ``/oauth/token`` in process, and keeps the
tokens in the signed, HTTP-only session cookie. Each view proves the access token the way
the API does (refreshing it with rotation when it is about to expire) and then calls the
same settlement services as ``/v1/settlement``, in the finance user's name: what they
create, upload, resolve or close is recorded under their username. Signing out revokes the
tokens.

The page's client is the oldest public client with the scope ``settlement:run`` registered
with the redirect URI ``<this site>/finance/callback``. Outside production one is
registered on first use; in production the operator registers it (``coalition client
create --public --scope settlement:run``).
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
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
from werkzeug.exceptions import HTTPException

from coalition.audit.service import Actor
from coalition.errors import CoalitionError, NotFound
from coalition.http.pages import (
    check_csrf,
    keep_tokens,
    oauth_call,
    page_client_id,
    protect_pages,
    revoke_tokens,
    token_refused,
)
from coalition.oauth.server import principal_for
from coalition.wording import breaks_to_resolve, plural, reconciliation_counts
from config.logging import current_request_id
from settlement import charts, reconcile, service
from settlement.schemas import RunSchema

bp = Blueprint("finance_page", __name__, url_prefix="/finance")
protect_pages(bp)

SCOPE = "settlement:run"
#: refresh this long before the access token expires
REFRESH_MARGIN = 30
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


def _error_page(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    message = error.description if status != 500 else "Something went wrong on our side."
    return render_template("finance/error.html", status=status, title=error.name,
                           message=message), status


bp.register_error_handler(HTTPException, _error_page)


def _stamp(value: datetime | None) -> str:
    """To the second, since periods are honoured to the second."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _sign(value: str) -> int:
    amount = Decimal(value)
    return (amount > 0) - (amount < 0)


@bp.before_request
def _nobody_yet() -> None:
    # set by _signed_in once the session's token is proven, for the page header
    g.finance_user = None


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"finance_user": g.get("finance_user"), "money": charts.money, "stamp": _stamp,
            "sign": _sign}


# --------------------------------------------------------------------------- the OAuth client


def _redirect_uri() -> str:
    return url_for("finance_page.callback", _external=True)


def _client_id() -> str:
    return page_client_id(_redirect_uri(), "Finance page", SCOPE)


def _keep_tokens(token: dict[str, Any], client_id: str) -> None:
    keep_tokens(TOKENS, token, client_id)


def _signed_in() -> str | None:
    """The username of the finance user whose tokens this session holds, refreshing them
    if needed."""
    tokens = session.get(TOKENS)
    if not tokens:
        return None
    if tokens["expires_at"] - REFRESH_MARGIN <= time.time():
        status, body = oauth_call("/oauth/token", {
            "grant_type": "refresh_token", "refresh_token": tokens.get("refresh_token") or "",
            "client_id": tokens["client_id"]})
        if status != 200:
            session.pop(TOKENS, None)
            return None
        _keep_tokens(body, tokens["client_id"])
        tokens = session[TOKENS]
    principal = principal_for(tokens["access_token"])
    if (principal is None or principal.kind != "public" or SCOPE not in principal.scopes
            or not principal.finance_user):
        session.pop(TOKENS, None)
        return None
    g.finance_user = principal.finance_user
    return principal.finance_user


def _local(path: str | None) -> str | None:
    """A path on this page to come back to after signing in (never another site)."""
    if path and path.startswith("/finance") and not path.startswith("//") and "\\" not in path:
        return path
    return None


def _require() -> str:
    username = _signed_in()
    if username is None:
        back = request.full_path.rstrip("?") if request.method == "GET" else None
        abort(redirect(url_for(".sign_in", next=back) if back else url_for(".sign_in")))
    return username


def _actor(username: str) -> Actor:
    """Who the audit log names: the page's client, acting for the finance user."""
    return Actor(session[TOKENS]["client_id"], username, current_request_id())


# --------------------------------------------------------------------------- sign in and out


@bp.get("/signin")
def sign_in() -> Any:
    """Start the authorization-code flow: a fresh state and PKCE verifier per attempt."""
    client_id = _client_id()
    verifier = secrets.token_urlsafe(64)
    state = secrets.token_urlsafe(24)
    session[PENDING] = {"state": state, "verifier": verifier, "client_id": client_id,
                        "redirect_uri": _redirect_uri(),
                        "next": _local(request.args.get("next"))}
    query = urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": _redirect_uri(),
        "scope": SCOPE, "state": state,
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    })
    return redirect(f"{url_for('authorize.authorize')}?{query}")


@bp.get("/callback")
def callback() -> Any:
    """Where the authorization server sends the finance user back with a code."""
    pending = session.pop(PENDING, None)
    state = request.args.get("state", "")
    if not pending or not hmac.compare_digest(pending["state"].encode(), state.encode()):
        abort(400, "This sign-in has expired or was started elsewhere. Please sign in again.")
    if request.args.get("error"):
        if request.args["error"] == "access_denied":
            flash("Sign-in was cancelled.", "info")
            return redirect(url_for(".home"))
        abort(400, request.args.get("error_description") or request.args["error"])
    status, body = oauth_call("/oauth/token", {
        "grant_type": "authorization_code", "code": request.args.get("code", ""),
        "redirect_uri": pending["redirect_uri"], "client_id": pending["client_id"],
        "code_verifier": pending["verifier"]})
    if status != 200:
        token_refused(status, body)
    _keep_tokens(body, pending["client_id"])
    return redirect(_local(pending.get("next")) or url_for(".home"))


@bp.post("/signout")
def sign_out() -> Any:
    check_csrf()
    tokens = session.get(TOKENS)
    if tokens:
        refused = revoke_tokens(tokens)
        if refused:
            flash(refused, "error")
            return redirect(url_for(".home"))
    session.pop(TOKENS, None)
    session.pop(PENDING, None)
    session.pop("csrf", None)  # a new form token for whoever signs in next
    flash("You have signed out.", "info")
    return redirect(url_for(".home"))


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
    username = _signed_in()
    if username is None:
        return render_template("finance/welcome.html")
    return _runs_page()


@bp.post("/runs")
def create_run() -> Any:
    username = _require()
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
    _require()
    doc = _load(run_id)
    breaks = reconcile.list_breaks(run_id)
    partners = [s["partner"] for s in doc["statements"]]
    return render_template(
        "finance/run.html", run=doc, charts=charts.position_charts(doc["positions"]),
        heat=charts.heat_map(doc["matrix"]["cells"], partners),
        open_breaks=[b for b in breaks if b["status"] == "open"],
        resolved_breaks=[b for b in breaks if b["status"] != "open"],
        labels=BREAK_LABELS, adjustable=ADJUSTABLE, reason_min=REASON_MIN,
        reason_max=REASON_MAX)


def _back(run_id: int) -> Response:
    """Back to the run, whose top says what happened (a status message)."""
    return redirect(url_for(".run", run_id=run_id))


@bp.post(f"/runs/<{ID}:run_id>/reconciliations")
def upload(run_id: int) -> Any:
    """The partner's own record of the period, as a CSV file, against the journal."""
    username = _require()
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
    username = _require()
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
    username = _require()
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
    username = _require()
    check_csrf()
    try:
        service.close_run(run_id, username, actor=_actor(username))
    except CoalitionError as refused:
        flash(f"The run was not closed: {refused.message}", "error")
    else:
        flash(f"Run {run_id} is closed. Its figures will never change.", "success")
    return _back(run_id)


# --------------------------------------------------------------------------- exports


def _download(body: str, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get(f"/runs/<{ID}:run_id>/export.csv")
def export_csv(run_id: int) -> Response:
    _require()
    return _download(service.run_csv(_load(run_id)), "text/csv",
                     f"settlement-run-{run_id}.csv")


@bp.get(f"/runs/<{ID}:run_id>/export.json")
def export_json(run_id: int) -> Response:
    _require()
    body = json.dumps(RunSchema().dump(_load(run_id)), indent=2)
    return _download(body, "application/json", f"settlement-run-{run_id}.json")


@bp.get(f"/runs/<{ID}:run_id>/statements/<partner>.csv")
def statement_csv(run_id: int, partner: str) -> Response:
    _require()
    try:
        doc = service.statement(run_id, partner)
    except NotFound as missing:
        abort(404, missing.message)
    return _download(service.statement_csv(doc), "text/csv",
                     f"statement-{run_id}-{partner}.csv")
