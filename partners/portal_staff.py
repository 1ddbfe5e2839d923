"""``/partner/staff``: a partner's admin manages its other staff accounts.

An admin creates an account with a role (the one-time activation code is shown on the
answer, once, and never kept in the session), changes a role, or disables an account (its
tokens stop working at once). Every action goes through
:mod:`coalition.oauth.partner_users`, restricted to the admin's own partner (another
partner's login is 404, as one that does not exist), and is written to the partner's audit
trail naming the admin. An admin cannot disable or demote their own account: the partner
would be left without one; another admin, or the operator, does it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from coalition.errors import AlreadyExists, CoalitionError, NotFound
from coalition.http.pages import check_csrf, protect_pages
from coalition.oauth import partner_users
from coalition.oauth.partner_users import ROLES, SignedInPartnerUser
from partners.portal import actor_of, signed_in_as

bp = Blueprint("partner_staff", __name__, url_prefix="/partner/staff")
protect_pages(bp, "partner/base.html", "partner_portal.home", "Back to the portal")

#: a login as the URL carries it (the account rules allow no slash)
LOGIN = "string(maxlength=254)"


@bp.before_request
def _nobody_yet() -> None:
    g.staff = None


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"staff": g.get("staff")}


def _page(admin: SignedInPartnerUser, *, form: dict[str, str] | None = None,
          errors: dict[str, str] | None = None, created: dict[str, Any] | None = None,
          status: int = 200) -> Any:
    return render_template("partner/staff.html",
                           users=partner_users.list_users(admin.partner_code), roles=ROLES,
                           form=form or {"login": "", "name": "", "role": "viewer"},
                           errors=errors or {}, created=created), status


@bp.get("")
def staff_list() -> Any:
    """The partner's staff accounts, with their roles."""
    return _page(signed_in_as("admin"))


@bp.post("")
def staff_create() -> Any:
    """A new account with a role; its activation code is shown on this answer only."""
    admin = signed_in_as("admin")
    check_csrf()
    form = {"login": request.form.get("login", "").strip()[:254],
            "name": request.form.get("name", "").strip()[:200],
            "role": request.form.get("role", "")}
    try:
        created = partner_users.create_user(admin.partner_code, form["login"], form["name"],
                                            form["role"], actor=actor_of(admin))
    except AlreadyExists as taken:
        return _page(admin, form=form, errors={"login": taken.message}, status=409)
    except CoalitionError as refused:
        errors = {k: " ".join(v) for k, v in (refused.errors or {}).items()
                  if isinstance(v, list)} or {"login": refused.message}
        return _page(admin, form=form, errors=errors, status=422)
    return _page(admin, created=created, status=201)


def _not_yourself(admin: SignedInPartnerUser, login: str, what: str) -> None:
    if partner_users.normalise_login(login) == admin.login:
        abort(422, f"You cannot {what} your own account: another admin of "
                   f"{admin.partner_name} can.")


@bp.post(f"/<{LOGIN}:login>/role")
def staff_role(login: str) -> Any:
    """Give an account another role."""
    admin = signed_in_as("admin")
    check_csrf()
    role = request.form.get("role", "")
    if role not in ROLES:
        abort(422, f"Choose a role: {', '.join(ROLES)}.")
    if role != "admin":
        _not_yourself(admin, login, "demote")
    try:
        done = partner_users.change_role(admin.partner_code, login, role,
                                         actor=actor_of(admin))
    except NotFound:
        abort(404, f"No account {login}.")
    flash(f"{done['login']} is now {done['role']}.", "success")
    return redirect(url_for(".staff_list"))


@bp.post(f"/<{LOGIN}:login>/disable")
def staff_disable(login: str) -> Any:
    """Disable an account: no more sign-in, and its sessions end now."""
    admin = signed_in_as("admin")
    check_csrf()
    _not_yourself(admin, login, "disable")
    try:
        done = partner_users.disable_user(admin.partner_code, login, actor=actor_of(admin))
    except NotFound:
        abort(404, f"No account {login}.")
    flash(f"{done['login']} is disabled and signed out.", "success")
    return redirect(url_for(".staff_list"))
