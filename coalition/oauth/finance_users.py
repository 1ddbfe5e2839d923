"""Finance users: people of the coalition's finance team, with their own accounts.

They sign in to the finance page through the authorization-code grant with PKCE (scope
``settlement:run``), the same machinery as members (:mod:`coalition.oauth.member_grants`),
and whatever they resolve or close is recorded under their username.

* Passwords are at least :data:`PASSWORD_MIN` characters; hashing, the counting of
  attempts and the lockout follow the rule of every password account
  (:mod:`coalition.oauth.passwords`). An unknown or disabled username costs the same
  Argon2 work as a wrong password.
* Disabling a user revokes their tokens in the same transaction.
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
from coalition.oauth.models import FinanceUser, OAuthToken, revoke_tokens
from coalition.oauth.passwords import PasswordAccounts, check_password_rules, hash_password

PASSWORD_MIN = 12
#: lower-case letters, digits, dot, dash and underscore; it is what appears in
#: ``resolved_by`` and ``closed_by``
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: the only scope a finance user's token carries
FINANCE_SCOPES = ("settlement:run",)

#: finance users, named by their username
FINANCE_USERS = PasswordAccounts(FinanceUser.__table__, "username",
                                 lambda c: c.active.is_(True),
                                 "The username or password is wrong.", ("name",))


@dataclass(frozen=True)
class SignedInFinanceUser:
    """The resource owner Authlib's grant is given (it needs ``id``)."""

    id: int
    username: str
    name: str


def _view(user: FinanceUser) -> dict[str, Any]:
    return {"username": user.username, "name": user.name, "active": user.active,
            "created_at": user.created_at, "locked_until": user.locked_until}


def check_password(password: str) -> None:
    check_password_rules(password, InvalidRequest, PASSWORD_MIN)


def create_user(username: str, name: str, password: str, *,
                actor: Actor = SYSTEM) -> dict[str, Any]:
    """A new, active finance user."""
    if not USERNAME.fullmatch(username):
        message = ("A username is 1 to 64 lower-case letters, digits, '.', '-' or '_', "
                   "starting with a letter or digit.")
        raise InvalidRequest(message, errors={"username": [message]})
    if not name.strip() or len(name) > 200:
        message = "A name of 1 to 200 characters is required."
        raise InvalidRequest(message, errors={"name": [message]})
    check_password(password)
    password_hash = hash_password(password)
    with UnitOfWork() as uow:
        user = FinanceUser(username=username, name=name.strip(), password_hash=password_hash,
                           active=True, failed_sign_ins=0, created_at=utcnow())
        uow.session.add(user)
        try:
            uow.session.flush()
        except IntegrityError as exc:
            raise AlreadyExists(f"A finance user {username!r} already exists.") from exc
        record(uow.session, actor, "finance_user.created", f"finance_user:{username}",
               {"name": user.name})
        uow.commit()
        return _view(user)


def list_users() -> list[dict[str, Any]]:
    with read() as session:
        return [_view(u) for u in session.scalars(select(FinanceUser).order_by(
            FinanceUser.username))]


def revoke_finance_user_tokens(session: Session, finance_user_id: int,
                               client_id: str | None = None) -> int:
    """Revoke the user's live tokens (at one client, or everywhere) in the caller's
    transaction. Returns how many."""
    return revoke_tokens(session, OAuthToken.__table__.c.finance_user_id == finance_user_id,
                         client_id)


def disable_user(username: str, *, actor: Actor = SYSTEM) -> dict[str, Any]:
    """Disable the user: no further sign-in, and every token they hold stops working."""
    with UnitOfWork() as uow:
        user = uow.session.scalar(select(FinanceUser).where(FinanceUser.username == username)
                                  .with_for_update())
        if user is None:
            raise NotFound(f"No finance user {username!r}.")
        user.active = False
        revoked = revoke_finance_user_tokens(uow.session, user.id)
        record(uow.session, actor, "finance_user.disabled", f"finance_user:{username}",
               {"tokens_revoked": revoked})
        uow.commit()
        return {**_view(user), "tokens_revoked": revoked}


# --------------------------------------------------------------------------- sign-in


def authenticate(username: str, password: str) -> SignedInFinanceUser:
    """The active finance user with this username and password, or :class:`SignInFailed` /
    :class:`SignInLocked`."""
    if not USERNAME.fullmatch(username):
        raise FINANCE_USERS.refuse(password)
    attempt = FINANCE_USERS.authenticate(username, password)
    return SignedInFinanceUser(attempt.id, username, attempt.row.name)


def active_finance_user(user_id: int) -> SignedInFinanceUser | None:
    """The user, if still active (a disabled user's grants stop working)."""
    with read() as session:
        row = session.execute(select(FinanceUser.id, FinanceUser.username, FinanceUser.name)
                              .where(FinanceUser.id == user_id,
                                     FinanceUser.active.is_(True))).first()
    return SignedInFinanceUser(row.id, row.username, row.name) if row else None
