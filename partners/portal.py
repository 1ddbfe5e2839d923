"""``/partner``: the partner portal.

A partner's staff (its loyalty manager, its accountant) sign in with their own accounts
(:mod:`coalition.oauth.partner_users`, created by the operator with a one-time activation
code) the way every page signs its user in (:mod:`coalition.http.signin`, scope
``partner:portal``, redirect URI ``<this site>/partner/callback``), and see their own partner
only: each view calls the partner API's services with the signed-in person's partner, so
another partner's object answers 404 exactly as one that does not exist.

What a person may do is their role's (:data:`coalition.oauth.partner_users.ROLES`): every
view names the role it needs (:func:`signed_in_as`), and a person whose role is not
enough gets 403 before anything is read from the form. Every action that changes something
is written to the partner's audit trail in the transaction of the change, naming the
person.
"""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime, timedelta
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
    stream_with_context,
    url_for,
)

from coalition.audit.service import Actor
from coalition.errors import CoalitionError, NotFound
from coalition.http.pages import check_csrf, protect_pages
from coalition.http.signin import PageSignIn
from coalition.ledger import history
from coalition.ledger.models import HISTORY_TYPES
from coalition.member.signin import ActivationFailed, SignInLocked
from coalition.oauth import partner_users
from coalition.oauth.models import PARTNER_SCOPES, PORTAL_SCOPES
from coalition.oauth.partner_users import SignedInPartnerUser
from coalition.oauth.server import Principal
from config.logging import current_request_id
from partners import batches, portal_queries, webhooks
from partners.funding import funding
from partners.models import EVENT_TYPES
from settlement import service as settlement
from settlement.schemas import StatementSchema

bp = Blueprint("partner_portal", __name__, url_prefix="/partner")
protect_pages(bp, "partner/base.html", "partner_portal.home", "Back to the portal")

SCOPE = PORTAL_SCOPES[0]
TOKENS = "partner_tokens"
PENDING = "partner_oauth_pending"
#: ids are 64-bit: a larger one names nothing (404) rather than overflowing the driver
ID = "int(max=9223372036854775807)"
PAGE = 50
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: what a batch file uploaded here may book: what the partner's API clients may
BATCH_SCOPES = {s for s in PARTNER_SCOPES if s.startswith("points:")}
#: the largest file the portal takes (the API's own limit applies as well)
UPLOAD_MAX = 20 * 1024 * 1024
NOT_A_PAGE = "That page link is not valid; start again from the first."


@bp.before_request
def _nobody_yet() -> None:
    # set once the session's token is proven (_staff), for the page header
    g.staff = None


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"staff": g.get("staff")}


# --------------------------------------------------------------------------- sign in and out


def _staff(principal: Principal) -> SignedInPartnerUser | None:
    if principal.partner_user_id is None:
        return None
    g.staff = partner_users.active_partner_user(principal.partner_user_id)
    return g.staff


page_sign_in = PageSignIn(bp, name="Partner portal", scope=SCOPE, tokens=TOKENS,
                          pending=PENDING, who=_staff, come_back=True, clears_session=False)


def signed_in_as(role: str = "viewer") -> SignedInPartnerUser:
    """The person signed in to the portal, whose role allows what ``role`` does: else off
    to sign in (and back to this page after), or 403. For the portal's other blueprints
    too."""
    staff: SignedInPartnerUser | None = page_sign_in.signed_in()
    if staff is None:
        back = request.full_path.rstrip("?") if request.method == "GET" else None
        abort(redirect(url_for("partner_portal.sign_in", next=back) if back
                       else url_for("partner_portal.sign_in")))
    if not staff.may(role):
        abort(403, f"Your role ({staff.role}) does not allow this: it needs {role}. Ask an "
                   f"admin of {staff.partner_name} for it.")
    return staff


def _signed_in() -> SignedInPartnerUser:
    return signed_in_as("viewer")


def actor_of(staff: SignedInPartnerUser) -> Actor:
    """Who the audit trail names: the portal's client, acting for the staff member."""
    return Actor(session[TOKENS]["client_id"], staff.login, current_request_id())


def cursor_or_none(errors: dict[str, str]) -> str | None:
    """The page's ``cursor`` argument, or ``None`` for the first page; a cursor that is
    not one is an error of the form (checked again by the service, which refuses it)."""
    text = request.args.get("cursor", "").strip()
    if text and (len(text) > 64 or not re.fullmatch(r"[A-Za-z0-9_-]+", text)):
        errors["cursor"] = NOT_A_PAGE
        return None
    return text or None


@bp.route("/activate", methods=["GET", "POST"])
def activate() -> Any:
    """The person's first visit: the activation code from the operator and a password."""
    form = {"login": request.form.get("login", "").strip()}
    if request.method == "GET":
        return render_template("partner/activate.html", form=form, errors={}, problem=None)
    check_csrf()
    try:
        partner_users.activate(form["login"], request.form.get("activation_code", ""),
                               request.form.get("password", ""))
    except SignInLocked as locked:
        return render_template("partner/activate.html", form=form, errors={},
                               problem=locked.message), 429, locked.headers or {}
    except ActivationFailed as refused:
        errors = {k: " ".join(v) for k, v in (refused.errors or {}).items()
                  if isinstance(v, list)}
        return render_template("partner/activate.html", form=form, errors=errors,
                               problem=refused.message), 422
    flash("Your account is ready: sign in with your login and the password you chose.",
          "success")
    return redirect(url_for(".home"))


# --------------------------------------------------------------------------- transactions


def _day(text: str, field: str, errors: dict[str, str]) -> datetime | None:
    if not text:
        return None
    try:
        if not DATE.fullmatch(text):
            raise ValueError(text)
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        errors[field] = "Enter a date as YYYY-MM-DD."
        return None


@bp.get("")
def home() -> Any:
    staff = page_sign_in.signed_in()
    if staff is None:
        return render_template("partner/welcome.html")
    return _transactions(staff)


@bp.get("/transactions")
def transactions() -> Any:
    return _transactions(_signed_in())


def _transactions(staff: SignedInPartnerUser) -> Any:
    """The partner's transactions, newest first, filtered, a page at a time; a search by
    the partner's own reference goes straight to that transaction."""
    form = {k: request.args.get(k, "").strip()
            for k in ("q", "type", "member_number", "from", "to", "cursor")}
    errors: dict[str, str] = {}
    if form["q"]:
        found = portal_queries.by_partner_txn_id(staff.partner_id, form["q"][:64])
        if found is not None:
            return redirect(url_for(".transaction", transaction_id=found))
        errors["q"] = f"No transaction of yours has the reference {form['q'][:64]!r}."
    if form["type"] and form["type"] not in HISTORY_TYPES:
        errors["type"] = "Choose a type from the list."
    start = _day(form["from"], "from", errors)
    end = _day(form["to"], "to", errors)
    if start and end and start > end:
        errors["to"] = "The last day cannot be before the first."
    page: dict[str, Any] = {"items": [], "next_cursor": None}
    if not errors:
        filters: dict[str, Any] = {"limit": PAGE, "type": form["type"] or None,
                                   "member_number": form["member_number"] or None,
                                   "booked_from": start,
                                   "booked_to": end + timedelta(days=1) if end else None}
        if form["cursor"]:
            try:
                history.decode_cursor(form["cursor"])
            except CoalitionError:
                errors["cursor"] = NOT_A_PAGE
            else:
                filters["cursor"] = form["cursor"]
        if not errors:
            page = history.list_transactions(staff.partner_id, filters)
    more = {k: v for k, v in form.items() if v and k not in ("cursor", "q")}
    return render_template("partner/transactions.html", page=page, form=form, errors=errors,
                           types=HISTORY_TYPES, more=more), 422 if errors else 200


@bp.get(f"/transactions/<{ID}:transaction_id>")
def transaction(transaction_id: int) -> Any:
    staff = _signed_in()
    try:
        txn = history.get_transaction(staff.partner_id, transaction_id)
    except NotFound:
        abort(404, f"No transaction {transaction_id}.")
    original = None
    if txn["type"] in portal_queries.REVERSAL_TYPES and txn.get("reference") is not None:
        original = txn["reference"]
    return render_template("partner/transaction.html", txn=txn, original=original,
                           reversals=portal_queries.reversals_of(staff.partner_id,
                                                                 transaction_id))


# --------------------------------------------------------------------------- batch files


def _batch_page(staff: SignedInPartnerUser, problem: str | None, status: int = 200) -> Any:
    errors: dict[str, str] = {}
    cursor = cursor_or_none(errors)
    page: dict[str, Any] = {"items": [], "next_cursor": None}
    if not errors:
        try:
            page = batches.page_batches(staff.partner_id, PAGE, cursor)
        except CoalitionError:
            errors["cursor"] = NOT_A_PAGE
    return render_template("partner/batches.html", batches=page["items"],
                           next_cursor=page["next_cursor"], problem=problem,
                           errors=errors), 422 if errors else status


@bp.get("/batches")
def batch_list() -> Any:
    return _batch_page(_signed_in(), None)


@bp.post("/batches")
def batch_upload() -> Any:
    """A day's transactions as a CSV file, checked whole, then booked by the worker."""
    staff = signed_in_as("operator")
    check_csrf()
    file = request.files.get("file")
    content = file.read(UPLOAD_MAX + 1) if file else b""
    problem = None
    if not content:
        problem = "Choose the CSV file to upload."
    elif len(content) > UPLOAD_MAX:
        problem = f"The file is larger than {UPLOAD_MAX // (1024 * 1024)} MB: split it."
    else:
        try:
            batch = batches.upload(staff.partner_id, BATCH_SCOPES, content,
                                   request.form.get("rows", "").strip() or None,
                                   actor=actor_of(staff))
        except CoalitionError as refused:
            detail = " ".join(m for ms in (refused.errors or {}).values()
                              if isinstance(ms, list) for m in ms if m != refused.message)
            problem = f"The file was not accepted: {refused.message} {detail}".strip()
        else:
            flash(f"Batch {batch['id']} of {batch['rows']} rows is queued for booking.",
                  "success")
            return redirect(url_for(".batch", batch_id=batch["id"]))
    return _batch_page(staff, problem, 422)


def _batch(partner_id: int, batch_id: int) -> dict[str, Any]:
    try:
        return batches.get_batch(partner_id, batch_id)
    except NotFound:
        abort(404, f"No batch {batch_id}.")


@bp.get(f"/batches/<{ID}:batch_id>")
def batch(batch_id: int) -> Any:
    staff = _signed_in()
    doc = _batch(staff.partner_id, batch_id)
    refused = [line for line in _result_rows(staff.partner_id, batch_id)
               if line["outcome"] == "refused"][:200]
    return render_template("partner/batch.html", batch=doc, refused=refused)


def _result_rows(partner_id: int, batch_id: int) -> list[dict[str, str]]:
    """The batch's per-row results, as its result file gives them."""
    return list(csv.DictReader("".join(batches.results(partner_id, batch_id)).splitlines()))


@bp.get(f"/batches/<{ID}:batch_id>/results.csv")
def batch_results(batch_id: int) -> Response:
    staff = _signed_in()
    _batch(staff.partner_id, batch_id)
    return _download(stream_with_context(batches.results(staff.partner_id, batch_id)),
                     "text/csv", f"batch-{batch_id}-results.csv")


# --------------------------------------------------------------------------- webhooks


def _webhook_page(staff: SignedInPartnerUser, *, form: dict[str, Any] | None = None,
                  errors: dict[str, str] | None = None, created: dict[str, Any] | None = None,
                  status: int = 200) -> Any:
    return render_template("partner/webhooks.html",
                           endpoints=webhooks.list_endpoints(staff.partner_id),
                           event_types=EVENT_TYPES, form=form or {"url": "", "events": []},
                           errors=errors or {}, created=created), status


@bp.get("/webhooks")
def webhook_list() -> Any:
    return _webhook_page(_signed_in())


@bp.post("/webhooks")
def webhook_create() -> Any:
    """Register an endpoint: the same service as ``POST /v1/webhooks``; its signing
    secret is shown on the answer, this once (never put in the session)."""
    staff = signed_in_as("operator")
    check_csrf()
    url = request.form.get("url", "").strip()[:2000]
    events = request.form.getlist("events")
    form = {"url": url, "events": events}
    try:
        created = webhooks.create_endpoint(staff.partner_id, url, events,
                                           actor=actor_of(staff))
    except CoalitionError as refused:
        errors = {k: " ".join(v) for k, v in (refused.errors or {}).items()
                  if isinstance(v, list)} or {"url": refused.message}
        return _webhook_page(staff, form=form, errors=errors, status=422)
    return _webhook_page(staff, created=created, status=201)


@bp.post(f"/webhooks/<{ID}:endpoint_id>/delete")
def webhook_delete(endpoint_id: int) -> Any:
    """Stop sending to an endpoint (``DELETE /v1/webhooks/{id}``)."""
    staff = signed_in_as("operator")
    check_csrf()
    try:
        webhooks.delete_endpoint(staff.partner_id, endpoint_id, actor=actor_of(staff))
    except NotFound:
        abort(404, f"No webhook endpoint {endpoint_id}.")
    flash(f"Endpoint {endpoint_id} is deleted: nothing more is sent to it.", "success")
    return redirect(url_for(".webhook_list"))


@bp.get(f"/webhooks/<{ID}:endpoint_id>")
def webhook(endpoint_id: int) -> Any:
    staff = _signed_in()
    errors: dict[str, str] = {}
    cursor = cursor_or_none(errors)
    args: dict[str, Any] = {"limit": PAGE}
    if cursor:
        args["cursor"] = cursor
    try:
        deliveries = webhooks.list_deliveries(staff.partner_id, endpoint_id, args)
    except NotFound:
        abort(404, f"No webhook endpoint {endpoint_id}.")
    except CoalitionError:
        errors["cursor"] = NOT_A_PAGE
        deliveries = {"items": [], "next_cursor": None}  # the endpoint is theirs
    endpoint = next(e for e in webhooks.list_endpoints(staff.partner_id)
                    if e["id"] == endpoint_id)
    return render_template("partner/webhook.html", endpoint=endpoint,
                           deliveries=deliveries["items"],
                           next_cursor=None if errors else deliveries["next_cursor"],
                           errors=errors), 422 if errors else 200


@bp.post(f"/webhooks/<{ID}:endpoint_id>/deliveries/<{ID}:delivery_id>/replay")
def replay(endpoint_id: int, delivery_id: int) -> Any:
    staff = signed_in_as("operator")
    check_csrf()
    try:
        again = webhooks.replay(staff.partner_id, endpoint_id, delivery_id,
                                actor=actor_of(staff))
    except NotFound:
        abort(404, f"No delivery {delivery_id} of webhook endpoint {endpoint_id}.")
    flash(f"Delivery {delivery_id} is sent again as delivery {again['id']}.", "success")
    return redirect(url_for(".webhook", endpoint_id=endpoint_id))


# --------------------------------------------------------------------------- funding


@bp.get("/funding")
def funding_page() -> Any:
    staff = _signed_in()
    return render_template("partner/funding.html", funding=funding(staff.partner_id))


# --------------------------------------------------------------------------- statements


@bp.get("/statements")
def statements() -> Any:
    staff = _signed_in()
    return render_template("partner/statements.html",
                           runs=portal_queries.closed_runs(staff.partner_code))


def _statement(staff: SignedInPartnerUser, run_id: int) -> dict[str, Any]:
    try:
        return settlement.statement(run_id, staff.partner_code, only_closed=True)
    except NotFound:
        abort(404, f"No statement of run {run_id}.")


@bp.get(f"/statements/<{ID}:run_id>")
def statement(run_id: int) -> Any:
    staff = _signed_in()
    doc = _statement(staff, run_id)
    return render_template("partner/statement.html", doc=doc,
                           reconciliations=portal_queries.reconciliations(staff.partner_id,
                                                                          run_id))


@bp.get(f"/statements/<{ID}:run_id>.csv")
def statement_csv(run_id: int) -> Response:
    staff = _signed_in()
    return _download(settlement.statement_csv(_statement(staff, run_id)), "text/csv",
                     f"statement-{run_id}-{staff.partner_code}.csv")


@bp.get(f"/statements/<{ID}:run_id>.json")
def statement_json(run_id: int) -> Response:
    staff = _signed_in()
    body = json.dumps(StatementSchema().dump(_statement(staff, run_id)), indent=2)
    return _download(body, "application/json", f"statement-{run_id}-{staff.partner_code}.json")


def _download(body: Any, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
