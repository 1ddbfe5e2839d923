"""``/partner/offers``: the partner portal's promotions. The partner's staff see the
promotions their partner funds a share of, with the points each has issued against its
cap, and publish one on their own earns (funded by their partner alone, as through
``POST /v1/offers``). Signed in as the rest of the portal (:mod:`partners.portal`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from marshmallow import ValidationError

from coalition.errors import CoalitionError
from coalition.http.pages import check_csrf, protect_pages
from coalition.oauth.partner_users import SignedInPartnerUser
from coalition.offers import publishing
from coalition.offers.schemas import OfferCreateSchema
from partners.portal import actor_of, signed_in_as

bp = Blueprint("partner_offers", __name__, url_prefix="/partner/offers")
protect_pages(bp, "partner/base.html", "partner_portal.home", "Back to the portal")

#: the form's fields, as the page names them
FIELDS = ("name", "rule", "multiplier", "bonus_points", "valid_from", "valid_to", "tiers",
          "cap_points")


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"staff": g.get("staff")}


def _page(staff: SignedInPartnerUser, form: dict[str, str], errors: dict[str, str],
          problem: str | None, status: int = 200) -> Any:
    return render_template("partner/offers.html",
                           offers=publishing.funded_by(staff.partner_id), form=form,
                           errors=errors, problem=problem), status


@bp.get("")
def offers() -> Any:
    return _page(signed_in_as("viewer"), {"rule": "multiplier"}, {}, None)


def _wire(form: dict[str, str]) -> dict[str, Any]:
    """The form as the API's body: blank fields left out, numbers as numbers where they
    look like them (the schema refuses the rest), tiers split at commas."""
    body: dict[str, Any] = {"opt_in": form.get("opt_in") == "yes"}
    for name in FIELDS:
        value = form.get(name, "").strip()
        if not value:
            continue
        if name in ("bonus_points", "cap_points"):
            body[name] = int(value) if value.isdigit() else value
        elif name == "tiers":
            body[name] = [t.strip() for t in value.split(",") if t.strip()]
        else:
            body[name] = value
    if body.get("rule") == "multiplier":
        body.pop("bonus_points", None)
    elif body.get("rule") == "bonus":
        body.pop("multiplier", None)
    return body


@bp.post("")
def publish() -> Any:
    """Publish a promotion on the partner's earns, funded by the partner alone."""
    staff = signed_in_as("operator")
    check_csrf()
    form = {name: request.form.get(name, "") for name in (*FIELDS, "opt_in")}
    try:
        data = OfferCreateSchema().load(_wire(form))
        offer = publishing.publish(data, partner_id=staff.partner_id, actor=actor_of(staff))
    except ValidationError as refused:
        errors = {k: " ".join(v) if isinstance(v, list) else "Not valid."
                  for k, v in refused.normalized_messages().items()}
        return _page(staff, form, errors, "The promotion was not published: check the "
                     "fields marked.", 422)
    except CoalitionError as refused:
        errors = {k: " ".join(v) for k, v in (refused.errors or {}).items()
                  if isinstance(v, list)}
        return _page(staff, form, errors,
                     f"The promotion was not published: {refused.message}", 422)
    flash(f"“{offer['name']}” is published: it applies to your earns from "
          f"{offer['valid_from']:%-d %b %Y}.", "success")
    return redirect(url_for(".offers"))
