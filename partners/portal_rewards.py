"""``/partner/rewards`` and ``/partner/vouchers``: the rewards a partner fulfils (list,
publish, edit, stock) and the voucher lookup at its till, in the partner portal.

Signed in as the rest of the portal is, with the role each view needs
(:func:`partners.portal.signed_in_as`: a viewer reads, an operator publishes, edits and
marks vouchers used); each view
calls the catalog's services with the signed-in person's partner, so another partner's
reward or voucher answers 404 exactly as one that does not exist. A coalition reward the
partner fulfils is listed but changed by the operator only.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from marshmallow import ValidationError, fields, validate

from coalition.catalog import rewards, vouchers
from coalition.catalog.models import REWARD_KINDS
from coalition.errors import CoalitionError
from coalition.http.pages import check_csrf, protect_pages
from coalition.member.forms import FormCheckbox, FormPoints, PageForm, _key, field_errors
from partners.portal import ID, actor_of, signed_in_as

bp = Blueprint("portal_rewards", __name__, url_prefix="/partner")
protect_pages(bp, "partner/base.html", "partner_portal.home", "Back to the portal")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CODE = re.compile(r"[A-Za-z2-7 -]{1,64}")


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"staff": g.get("staff")}


class FormCount(fields.Field):
    """A whole number typed in digits, or nothing (none: no limit)."""

    default_error_messages = {"invalid": "Enter a whole number in digits, or leave it empty.",
                              "small": "At least {minimum}, or leave it empty."}

    def __init__(self, *, minimum: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | None:
        if value == "":
            return None
        if not isinstance(value, str) or not value.isascii() or not value.isdigit() \
                or len(value) > 15:
            raise self.make_error("invalid")
        if int(value) < self.minimum:
            raise self.make_error("small", minimum=self.minimum)
        return int(value)


class FormDay(fields.Field):
    """A date as YYYY-MM-DD (midnight UTC), or nothing."""

    default_error_messages = {"invalid": "Enter a date as YYYY-MM-DD, or leave it empty."}

    def _deserialize(self, value: Any, attr: str | None, data: Any,
                     **kwargs: Any) -> datetime | None:
        if value == "":
            return None
        try:
            if not isinstance(value, str) or not _DATE.fullmatch(value):
                raise ValueError(value)
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        except ValueError as exc:
            raise self.make_error("invalid") from exc


def _text(message: str, length: int, required: bool = False) -> fields.String:
    default: dict[str, Any] = {} if required else {"load_default": ""}
    return fields.String(required=required, **default,
                         validate=validate.Length(min=1 if required else 0, max=length,
                                                  error=message),
                         error_messages={"required": message})


class RewardForm(PageForm):
    name = _text("Name the reward (up to 200 characters).", 200, required=True)
    description = _text("At most 5,000 characters.", 5000)
    kind = fields.String(required=True, validate=validate.OneOf(
        REWARD_KINDS, error="Choose what kind of reward it is."),
        error_messages={"required": "Choose what kind of reward it is."})
    points = FormPoints(required=True)
    stock = FormCount(load_default=None)
    per_member_limit = FormCount(load_default=None, minimum=1)
    valid_from = FormDay(load_default=None)
    valid_to = FormDay(load_default=None)
    terms = _text("At most 20,000 characters.", 20_000)
    active = FormCheckbox(load_default=False)


def _day(moment: datetime | None) -> str:
    return moment.date().isoformat() if moment else ""


def _form_values(reward: dict[str, Any] | None) -> dict[str, str]:
    """What the form's fields show: the reward's values, or what was posted."""
    if reward is None:
        return {"kind": "voucher", "active": "yes"}
    return {"name": reward["name"], "description": reward["description"],
            "kind": reward["kind"], "points": str(reward["points"]),
            "stock": "" if reward["stock"] is None else str(reward["stock"]),
            "per_member_limit": "" if reward["per_member_limit"] is None
            else str(reward["per_member_limit"]),
            "valid_from": _day(reward["valid_from"]), "valid_to": _day(reward["valid_to"]),
            "terms": reward["terms"], "active": "yes" if reward["active"] else ""}


def _render_form(reward: dict[str, Any] | None, form: dict[str, str],
                 errors: dict[str, str], problem: str | None = None, status: int = 200) -> Any:
    return render_template("partner/reward_form.html", reward=reward, form=form,
                           errors=errors, problem=problem, kinds=REWARD_KINDS), status


def _service_errors(refused: CoalitionError) -> dict[str, str]:
    return {name: " ".join(str(m) for m in messages)
            for name, messages in (refused.errors or {}).items()
            if isinstance(messages, list)}


@bp.get("/rewards")
def reward_list() -> Any:
    staff = signed_in_as("viewer")
    return render_template("partner/rewards.html", rewards=rewards.catalog(
        partner_id=staff.partner_id, include_inactive=True))


@bp.route("/rewards/new", methods=["GET", "POST"])
def reward_new() -> Any:
    staff = signed_in_as("operator")
    if request.method == "GET":
        return _render_form(None, _form_values(None), {})
    check_csrf()
    posted = request.form.to_dict()
    try:
        data = RewardForm().load(posted)
    except ValidationError as refused:
        return _render_form(None, posted, field_errors(refused), status=422)
    try:
        created = rewards.publish(staff.partner_id, data, actor=actor_of(staff))
    except CoalitionError as refused:
        return _render_form(None, posted, _service_errors(refused), refused.message, 422)
    flash(f"{created['name']} is published.", "success")
    return redirect(url_for(".reward_list"))


@bp.route(f"/rewards/<{ID}:reward_id>", methods=["GET", "POST"])
def reward_edit(reward_id: int) -> Any:
    staff = signed_in_as("operator")
    try:
        reward = rewards.reward(reward_id, partner_id=staff.partner_id)
    except CoalitionError:
        abort(404)
    if request.method == "GET":
        return _render_form(reward, _form_values(reward), {})
    check_csrf()
    posted = request.form.to_dict()
    try:
        data = RewardForm().load(posted)
    except ValidationError as refused:
        return _render_form(reward, posted, field_errors(refused), status=422)
    try:
        changed = rewards.update(staff.partner_id, reward_id, data, actor=actor_of(staff))
    except CoalitionError as refused:
        return _render_form(reward, posted, _service_errors(refused), refused.message, 422)
    flash(f"{changed['name']} is saved.", "success")
    return redirect(url_for(".reward_list"))


@bp.get("/vouchers")
def voucher_lookup() -> Any:
    staff = signed_in_as("viewer")
    code = request.args.get("code", "").strip()
    found, problem, status = None, None, 200
    if code and not _CODE.fullmatch(code):
        problem, status = "A voucher code is letters A-Z and digits 2-7.", 422
    elif code:
        try:
            found = vouchers.check(staff.partner_id, code)
        except CoalitionError as refused:
            problem, status = refused.message, refused.status
    return render_template("partner/vouchers.html", code=code, voucher=found, problem=problem,
                           request_key=secrets.token_urlsafe(18)), status


@bp.post("/vouchers/use")
def voucher_use() -> Any:
    staff = signed_in_as("operator")
    check_csrf()
    code = request.form.get("code", "").strip()
    try:
        key = _key().deserialize(request.form.get("idempotency_key") or None)
        if not _CODE.fullmatch(code):
            raise ValidationError("code")
    except ValidationError:
        flash("This form is damaged; look the voucher up again.", "error")
        return redirect(url_for(".voucher_lookup"))
    try:
        outcome = vouchers.use(staff.partner_id, code, request_id=key)
    except CoalitionError as refused:
        flash(f"The voucher was not used: {refused.message}", "error")
    else:
        flash(f"Voucher used: {outcome.body['reward']}."
              + (" (This form was already sent; it was done once.)" if outcome.replayed
                 else ""), "success")
    return redirect(url_for(".voucher_lookup", code=code))
