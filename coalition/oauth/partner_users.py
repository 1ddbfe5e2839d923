"""Partner staff: people of a partner (its loyalty manager, its accountant) with their own
accounts for the partner portal, each seeing that partner alone.

* The operator creates an account (``POST /v1/admin/partners/{code}/users``, ``coalition
  partner user create``) and hands the person its one-time activation code; with it the
  person chooses a password (at least :data:`PASSWORD_MIN` characters). Codes and passwords
  follow the members' rules (:mod:`coalition.member.signin`): short codes stored as
  digests, Argon2id hashes, the same password rules.
* They sign in through the authorization-code grant with PKCE (scope ``partner:portal``),
  throttled like finance users: every attempt (sign-in or activation) is counted before the
  secret is checked, with one guarded ``UPDATE``; after ``MAX_FAILURES`` failures in a row
  the account is locked for ``LOCK_FOR``. An unknown login costs the same Argon2 work.
* Disabling an account revokes its tokens in the same transaction; so does suspending its
  partner (:func:`partners.service.set_status`), and while the partner is suspended its staff
  cannot sign in or activate, and no token of theirs works.
* Each account has a role (:data:`ROLES`, each allowing what the one before it does):
  ``viewer`` reads everything of its partner, ``operator`` also uploads batches, replays
  deliveries and manages webhook endpoints, ``admin`` also manages the partner's other
  staff accounts from the portal. The portal checks it on every action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coalition.audit.service import SYSTEM, Actor, record
from coalition.db import UnitOfWork, read, utcnow
from coalition.errors import AlreadyExists, InvalidRequest, NotFound
from coalition.member.signin import (
    ActivationFailed,
    activation_digest,
    display_code,
    new_activation_code,
)
from coalition.models import Partner
from coalition.oauth.models import PARTNER_ROLES, OAuthToken, PartnerUser, revoke_tokens
from coalition.oauth.passwords import PasswordAccounts, check_password_rules

PASSWORD_MIN = 12
#: an e-mail address or a plain name: lower case, no spaces
LOGIN = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,253}")
REFUSED = "The login or password is wrong."

ROLES = PARTNER_ROLES


def _may_sign_in(c: Any) -> ColumnElement[bool]:
    """An active account of a partner that is not suspended."""
    partner = Partner.__table__.c
    return c.active.is_(True) & (select(partner.id).where(partner.id == c.partner_id,
                                                          partner.status == "active")
                                 .exists())


#: partner staff, named by their login: the one rule of every password account
STAFF = PasswordAccounts(PartnerUser.__table__, "login", _may_sign_in, REFUSED,
                         ("activation_hash",))


@dataclass(frozen=True)
class SignedInPartnerUser:
    """The resource owner Authlib's grant is given (it needs ``id``), and whom the portal
    acts for."""

    id: int
    login: str
    name: str
    partner_id: int
    partner_code: str
    partner_name: str
    role: str = "viewer"

    def may(self, role: str) -> bool:
        """Whether the person's role allows what ``role`` does."""
        return ROLES.index(self.role) >= ROLES.index(role)


def normalise_login(login: str) -> str:
    return login.strip().lower()


def _view(user: PartnerUser, partner_code: str) -> dict[str, Any]:
    return {"login": user.login, "name": user.name, "partner": partner_code,
            "role": user.role, "active": user.active,
            "activated": user.password_hash is not None,
            "created_at": user.created_at, "locked_until": user.locked_until}


def _check_role(role: str, errors: dict[str, list[str]]) -> None:
    if role not in ROLES:
        errors["role"] = [f"A role is one of {', '.join(ROLES)}."]


def _audit(session: Session, actor: Actor, action: str, user: PartnerUser, partner_code: str,
           details: dict[str, Any]) -> None:
    """In the audit log and the partner's own trail, whether its admin or the operator
    acted."""
    record(session, actor, action, f"partner_user:{user.login}",
           {"partner": partner_code, **details}, partner_id=user.partner_id)


def create_user(partner_code: str, login: str, name: str, role: str = "viewer", *,
                actor: Actor = SYSTEM) -> dict[str, Any]:
    """A new staff account of the partner with ``role``, waiting for its activation code
    (returned here once, as ``activation_code``)."""
    login = normalise_login(login)
    errors: dict[str, list[str]] = {}
    _check_role(role, errors)
    if not LOGIN.fullmatch(login):
        errors["login"] = ["A login is 1 to 254 lower-case letters, digits or '._@+-' (an "
                           "e-mail address will do), starting with a letter or digit."]
    if not name.strip() or len(name) > 200:
        errors["name"] = ["A name of 1 to 200 characters is required."]
    if errors:
        raise InvalidRequest("The account was not created.", errors=errors)
    code = new_activation_code()
    with UnitOfWork() as uow:
        partner = uow.session.scalar(select(Partner).where(Partner.code == partner_code))
        if partner is None:
            raise NotFound(f"No partner {partner_code!r}.")
        user = PartnerUser(partner_id=partner.id, login=login, name=name.strip(), role=role,
                           activation_hash=activation_digest(code), active=True,
                           failed_sign_ins=0, created_at=utcnow())
        uow.session.add(user)
        try:
            uow.session.flush()
        except IntegrityError as exc:
            raise AlreadyExists(f"A portal account {login!r} already exists.") from exc
        _audit(uow.session, actor, "partner_user.created", user, partner.code,
               {"name": user.name, "role": role})
        uow.commit()
        return {**_view(user, partner.code), "activation_code": display_code(code)}


def list_users(partner_code: str) -> list[dict[str, Any]]:
    with read() as session:
        partner = session.scalar(select(Partner).where(Partner.code == partner_code))
        if partner is None:
            raise NotFound(f"No partner {partner_code!r}.")
        return [_view(u, partner.code) for u in session.scalars(
            select(PartnerUser).where(PartnerUser.partner_id == partner.id)
            .order_by(PartnerUser.login))]


def revoke_partner_user_tokens(session: Session, partner_user_id: int,
                               client_id: str | None = None) -> int:
    """Revoke the account's live tokens (at one client, or everywhere) in the caller's
    transaction. Returns how many."""
    return revoke_tokens(session, OAuthToken.__table__.c.partner_user_id == partner_user_id,
                         client_id)


def _locked_user(session: Session, partner_code: str, login: str) -> PartnerUser:
    user = session.scalar(
        select(PartnerUser).join(Partner, Partner.id == PartnerUser.partner_id)
        .where(PartnerUser.login == normalise_login(login), Partner.code == partner_code)
        .with_for_update())
    if user is None:
        raise NotFound(f"No portal account {login!r} at {partner_code!r}.")
    return user


def disable_user(partner_code: str, login: str, *,
                 actor: Actor = SYSTEM) -> dict[str, Any]:
    """No further sign-in, and every token the account holds stops working."""
    with UnitOfWork() as uow:
        user = _locked_user(uow.session, partner_code, login)
        user.active = False
        revoked = revoke_partner_user_tokens(uow.session, user.id)
        _audit(uow.session, actor, "partner_user.disabled", user, partner_code,
               {"tokens_revoked": revoked})
        uow.commit()
        return {**_view(user, partner_code), "tokens_revoked": revoked}


def change_role(partner_code: str, login: str, role: str, *,
                actor: Actor = SYSTEM) -> dict[str, Any]:
    """Give the account another role; it applies from the person's next request."""
    errors: dict[str, list[str]] = {}
    _check_role(role, errors)
    if errors:
        raise InvalidRequest("The role was not changed.", errors=errors)
    with UnitOfWork() as uow:
        user = _locked_user(uow.session, partner_code, login)
        before = user.role
        if before != role:
            user.role = role
            _audit(uow.session, actor, "partner_user.role_changed", user, partner_code,
                   {"from": before, "to": role})
        uow.commit()
        return _view(user, partner_code)


# --------------------------------------------------------------------------- sign-in


def activate(login: str, code: str, password: str) -> SignedInPartnerUser:
    """Check the activation code, set the password and spend the code."""
    check_password_rules(password, ActivationFailed, PASSWORD_MIN)
    refused = "The login or activation code is wrong, or the code was already used."
    attempt = STAFF.activate(normalise_login(login), "activation_hash", activation_digest(code),
                             password, ActivationFailed(refused))
    return _signed_in(attempt.id)


def authenticate(login: str, password: str) -> SignedInPartnerUser:
    """The staff member with this login and password, or :class:`SignInFailed` /
    :class:`SignInLocked`."""
    return _signed_in(STAFF.authenticate(normalise_login(login), password).id)


def _signed_in(user_id: int) -> SignedInPartnerUser:
    signed_in = active_partner_user(user_id)
    assert signed_in is not None
    return signed_in


def active_partner_user(user_id: int) -> SignedInPartnerUser | None:
    """The account, if still active and its partner too (a disabled account's grants stop
    working, and so do those of a suspended partner's staff)."""
    with read() as session:
        row = session.execute(
            select(PartnerUser.id, PartnerUser.login, PartnerUser.name, Partner.id,
                   Partner.code, Partner.name, PartnerUser.role)
            .join(Partner, Partner.id == PartnerUser.partner_id)
            .where(PartnerUser.id == user_id, PartnerUser.active.is_(True),
                   PartnerUser.password_hash.is_not(None), Partner.status == "active")
        ).first()
    return SignedInPartnerUser(*row) if row else None
