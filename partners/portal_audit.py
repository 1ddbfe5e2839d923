"""``/partner/audit``: the partner's own audit trail, newest first, a page at a time.

What its staff did in the portal (batch files uploaded, deliveries replayed, webhook
endpoints registered and deleted, staff accounts created, disabled or given another role)
and what the operator did to its staff accounts and its status, each naming who acted.
Every role reads it; nothing of another partner's is shown.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, render_template

from coalition.audit.service import list_events
from coalition.errors import CoalitionError
from coalition.http.pages import protect_pages
from partners import portal
from partners.portal import NOT_A_PAGE, cursor_or_none, signed_in_as

bp = Blueprint("partner_audit", __name__, url_prefix="/partner/audit")
protect_pages(bp, "partner/base.html", "partner_portal.home", "Back to the portal")

@bp.before_request
def _nobody_yet() -> None:
    g.staff = None


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"staff": g.get("staff")}


@bp.get("")
def trail() -> Any:
    """The partner's audit events, newest first; "older" pages on."""
    staff = signed_in_as("viewer")
    errors: dict[str, str] = {}
    cursor = cursor_or_none(errors)
    page: dict[str, Any] = {"items": [], "next_cursor": None}
    if not errors:
        try:
            page = list_events(partner_id=staff.partner_id, cursor=cursor, limit=portal.PAGE)
        except CoalitionError:
            errors["cursor"] = NOT_A_PAGE
    return render_template("partner/audit.html", page=page,
                           errors=errors), 422 if errors else 200
