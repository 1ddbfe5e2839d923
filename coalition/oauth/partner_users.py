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
* Disabling an account revokes its tokens in the same transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
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
from coalition.oauth.models import OAuthToken, PartnerUser, revoke_tokens
from coalition.oauth.passwords import PasswordAccounts, check_password_rules

PASSWORD_MIN = 12
#: an e-mail address or a plain name: lower case, no spaces
LOGIN = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,253}")
REFUSED = "The login or password is wrong."

#: partner staff, named by their login: the one rule of every password account
STAFF = PasswordAccounts(PartnerUser.__table__, "login", lambda c: c.active.is_(True),
                         REFUSED, ("activation_hash",))


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


def normalise_login(login: str) -> str:
    return login.strip().lower()


def _view(user: PartnerUser, partner_code: str) -> dict[str, Any]:
    return {"login": user.login, "name": user.name, "partner": partner_code,
            "active": user.active, "activated": user.password_hash is not None,
            "created_at": user.created_at, "locked_until": user.locked_until}


def create_user(partner_code: str, login: str, name: str, *,
                actor: Actor = SYSTEM) -> dict[str, Any]:
    """A new staff account of the partner, waiting for its activation code (returned here
    once, as ``activation_code``)."""
    login = normalise_login(login)
    errors: dict[str, list[str]] = {}
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
        user = PartnerUser(partner_id=partner.id, login=login, name=name.strip(),
                           activation_hash=activation_digest(code), active=True,
                           failed_sign_ins=0, created_at=utcnow())
        uow.session.add(user)
        try:
            uow.session.flush()
        except IntegrityError as exc:
            raise AlreadyExists(f"A portal account {login!r} already exists.") from exc
        record(uow.session, actor, "partner_user.created", f"partner_user:{login}",
               {"partner": partner.code, "name": user.name})
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


def disable_user(partner_code: str, login: str, *, actor: Actor = SYSTEM) -> dict[str, Any]:
    """No further sign-in, and every token the account holds stops working."""
    with UnitOfWork() as uow:
        user = uow.session.scalar(
            select(PartnerUser).join(Partner, Partner.id == PartnerUser.partner_id)
            .where(PartnerUser.login == normalise_login(login), Partner.code == partner_code)
            .with_for_update())
        if user is None:
            raise NotFound(f"No portal account {login!r} at {partner_code!r}.")
        user.active = False
        revoked = revoke_partner_user_tokens(uow.session, user.id)
        record(uow.session, actor, "partner_user.disabled", f"partner_user:{user.login}",
               {"partner": partner_code, "tokens_revoked": revoked})
        uow.commit()
        return {**_view(user, partner_code), "tokens_revoked": revoked}


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
    working)."""
    with read() as session:
        row = session.execute(
            select(PartnerUser.id, PartnerUser.login, PartnerUser.name, Partner.id,
                   Partner.code, Partner.name)
            .join(Partner, Partner.id == PartnerUser.partner_id)
            .where(PartnerUser.id == user_id, PartnerUser.active.is_(True),
                   PartnerUser.password_hash.is_not(None))).first()
    return SignedInPartnerUser(*row) if row else None
