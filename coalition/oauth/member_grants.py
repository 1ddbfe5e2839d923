"""Member sign-in on the authorization server: the authorization-code grant with PKCE
(``S256`` only) and refresh tokens with rotation, for public clients only.

* A code is stored as a digest, bound to its client, exact redirect URI and PKCE
  challenge, lives ``AUTHORIZATION_CODE_LIFETIME`` seconds and works once: the statement
  that marks it used is in the same transaction as the token it buys, so two exchanges of
  one code cannot both succeed. A code presented again revokes the member's tokens at that
  client (RFC 6749 4.1.2: the code may have leaked).
* A refresh token works once: refreshing revokes it (and its access token) in the same
  transaction that stores the new pair. For ``REFRESH_GRACE`` seconds after that it answers
  the same new pair again (two page views of one member refreshing at once both get it, so
  neither signs the member out): the pair is derived from the old refresh token with the
  app's secret key, so the server can give it again while storing only digests. After the
  grace (or once the new pair is revoked) an old refresh token presented again is refused
  and revokes the member's live tokens at that client (RFC 9700 4.14.2: reuse means that
  two parties hold it, and the server cannot tell which is the member).
* Member tokens carry the scope ``member`` and the member's id; refresh tokens live
  ``REFRESH_TOKEN_LIFETIME`` seconds from their issue.
* Finance users sign in to the finance page through the same grants: a grant whose scope
  is ``settlement:run`` is a finance user's (:func:`audience`), any other a member's. A
  code or token is bound to exactly one of the two, and its scope must fit that kind of
  user, so a member never obtains ``settlement:run`` nor a finance user ``member``.
* Partner staff sign in to the partner portal the same way, with the scope
  ``partner:portal`` (:mod:`coalition.oauth.partner_users`); their tokens carry no partner
  API scope and name no partner client, so they never call the partner API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coalition.db import UnitOfWork, affected_rows, read, utcnow
from coalition.member.signin import SignedInMember, active_member
from coalition.oauth.finance_users import (
    FINANCE_SCOPES,
    SignedInFinanceUser,
    active_finance_user,
    revoke_finance_user_tokens,
)
from coalition.oauth.grant_request import client_of, held_scopes
from coalition.oauth.models import (
    MEMBER_SCOPES,
    PORTAL_SCOPES,
    OAuthAuthorizationCode,
    OAuthClient,
    OAuthToken,
    digest,
    revoke_tokens,
)
from coalition.oauth.partner_users import (
    SignedInPartnerUser,
    active_partner_user,
    revoke_partner_user_tokens,
)

#: public clients authenticate with their client_id alone
PUBLIC_AUTH_METHODS = ["none"]

Owner = SignedInMember | SignedInFinanceUser | SignedInPartnerUser
#: what a grant's token endpoint answers: status, the token (a dict) and headers
TokenResponse = tuple[int, dict[str, str | int], Collection[tuple[str, str]]]


def audience(scope: str) -> str:
    """Who signs in for a grant of this scope: ``"finance"`` (a finance user) when it asks
    for ``settlement:run``, ``"partner"`` (partner staff) for ``partner:portal``, otherwise
    ``"member"``."""
    asked = set(scope.split())
    if asked & set(FINANCE_SCOPES):
        return "finance"
    return "partner" if asked & set(PORTAL_SCOPES) else "member"


def _allowed(owner: Owner) -> tuple[str, ...]:
    if isinstance(owner, SignedInFinanceUser):
        return FINANCE_SCOPES
    return PORTAL_SCOPES if isinstance(owner, SignedInPartnerUser) else MEMBER_SCOPES


def scope_fits(owner: Owner, scope: str) -> bool:
    """Whether a token of this scope may act for this owner: finance users hold only
    ``settlement:run``, partner staff only ``partner:portal``, members only ``member``."""
    granted = set(scope.split())
    return bool(granted) and granted <= set(_allowed(owner))


def _owner(row: Any) -> Owner | None:
    """The member, finance user or partner staff member a code or token (``row``) acts
    for, if still active."""
    if row.finance_user_id is not None:
        return active_finance_user(row.finance_user_id)
    if row.partner_user_id is not None:
        return active_partner_user(row.partner_user_id)
    if row.member_id is not None:
        return active_member(row.member_id)
    return None


def _owner_ids(owner: Owner) -> dict[str, int | None]:
    """The columns of a code or token that name its owner."""
    return {"member_id": owner.id if isinstance(owner, SignedInMember) else None,
            "finance_user_id": owner.id if isinstance(owner, SignedInFinanceUser) else None,
            "partner_user_id": owner.id if isinstance(owner, SignedInPartnerUser) else None}


@dataclass(frozen=True)
class AuthorizationCode:
    """A stored code as Authlib's grant and PKCE extension read it."""

    id: int
    client_id: str
    member_id: int | None
    finance_user_id: int | None
    partner_user_id: int | None
    redirect_uri: str
    scope: str
    code_challenge: str
    code_challenge_method: str

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class S256CodeChallenge(CodeChallenge):
    """RFC 7636, S256 only: a request without a challenge, or with ``plain`` (or no
    method, which RFC 7636 reads as ``plain``), is refused at the authorization endpoint."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError(
                "PKCE is required: send code_challenge with code_challenge_method=S256.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


def revoke_member_tokens(session: Session, member_id: int, client_id: str | None = None) -> int:
    """Revoke the member's live tokens (at one client, or everywhere) in the caller's
    transaction; e.g. when the account is closed. Returns how many."""
    return revoke_tokens(session, OAuthToken.__table__.c.member_id == member_id, client_id)


def _signed_in(request: OAuth2Request, owner: Owner | None) -> Owner:
    """The member or finance user a code or refresh token still acts for, now the
    request's user; refused when they can no longer sign in."""
    if owner is None:
        raise InvalidGrantError("The member or user can no longer sign in.")
    request.user = owner
    return owner


def _revoke_after_replay(row: Any) -> None:
    """Revoke the tokens at its client of whom a replayed code or token (``row``) acts
    for."""
    with UnitOfWork() as uow:
        if row.member_id is not None:
            revoke_member_tokens(uow.session, row.member_id, row.client_id)
        if row.finance_user_id is not None:
            revoke_finance_user_tokens(uow.session, row.finance_user_id, row.client_id)
        if row.partner_user_id is not None:
            revoke_partner_user_tokens(uow.session, row.partner_user_id, row.client_id)
        uow.commit()


def granted_scope(token: Mapping[str, str | int]) -> str:
    """The scope of a token Authlib generated (absent when empty)."""
    return str(token.get("scope", ""))


def _token_row(client: OAuthClient, owner: Owner, token: Mapping[str, str | int]) -> OAuthToken:
    refresh = token.get("refresh_token")
    if not scope_fits(owner, granted_scope(token)):
        # never store a member token with settlement:run, nor a finance token with member
        raise InvalidScopeError("The scope does not fit who signed in.")
    return OAuthToken(
        client_pk=client.id, client_id=client.client_id, kind=client.kind, partner_id=None,
        **_owner_ids(owner),
        access_token_hash=digest(str(token["access_token"])),
        refresh_token_hash=digest(str(refresh)) if refresh else None,
        scope=granted_scope(token), expires_in=int(token["expires_in"]),
        client_generation=client.generation,
    )


class MemberAuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = PUBLIC_AUTH_METHODS

    def validate_requested_scope(self) -> None:
        super().validate_requested_scope()
        requested, held = held_scopes(self.request)
        granted = requested or held
        if not any(granted <= set(scopes)
                   for scopes in (MEMBER_SCOPES, FINANCE_SCOPES, PORTAL_SCOPES)):
            raise InvalidScopeError("Members, finance users and partner staff sign in "
                                    "separately: ask for one of member, settlement:run or "
                                    "partner:portal.")

    def save_authorization_code(self, code: str, request: Any) -> None:
        now = utcnow()
        lifetime = int(current_app.config["AUTHORIZATION_CODE_LIFETIME"])
        data = request.payload.data
        owner: Owner = request.user
        # the scope as granted (the client's own when none was asked for), so that the
        # token endpoint can check it against who signed in
        scope = request.scope or request.client.scope
        if not scope_fits(owner, scope):
            raise InvalidScopeError("The scope does not fit who signed in.")
        with UnitOfWork() as uow:
            uow.session.add(OAuthAuthorizationCode(
                code_hash=digest(code), client_id=request.client.client_id,
                **_owner_ids(owner),
                redirect_uri=request.payload.redirect_uri,
                scope=scope, code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"], issued_at=now,
                expires_at=now + timedelta(seconds=lifetime),
            ))
            uow.commit()

    def query_authorization_code(self, code: str,
                                 client: ClientMixin) -> AuthorizationCode | None:
        with read() as session:
            row = session.scalar(select(OAuthAuthorizationCode).where(
                OAuthAuthorizationCode.code_hash == digest(code),
                OAuthAuthorizationCode.client_id == client.get_client_id()))
        if row is None:
            return None
        if row.used_at is not None:
            _revoke_after_replay(row)
            return None
        if row.expires_at <= utcnow():
            return None
        return AuthorizationCode(row.id, row.client_id, row.member_id, row.finance_user_id,
                                 row.partner_user_id, row.redirect_uri, row.scope,
                                 row.code_challenge, row.code_challenge_method)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Owner | None:
        return _owner(authorization_code)

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Codes are spent in :meth:`create_token_response`, with the token they buy."""

    # Authlib answers the token as a dict (its stub says a string)
    def create_token_response(self) -> TokenResponse:  # type: ignore[override]
        client = client_of(self.request)
        code = self.request.authorization_code
        assert isinstance(code, AuthorizationCode), "set by query_authorization_code"
        member = _signed_in(self.request, self.authenticate_user(code))
        token = self.generate_token(user=member, scope=code.scope, include_refresh_token=True)
        if not scope_fits(member, granted_scope(token)):
            raise InvalidGrantError("The code's scope does not fit who signed in.")
        c = OAuthAuthorizationCode.__table__.c
        now = utcnow()
        with UnitOfWork() as uow:
            spent = affected_rows(uow.session.execute(
                update(OAuthAuthorizationCode.__table__)
                .where(c.id == code.id, c.used_at.is_(None), c.expires_at > now)
                .values(used_at=now)
            ))
            if not spent:
                raise InvalidGrantError("The code was already used or has expired.")
            uow.session.add(_token_row(client, member, token))
            uow.commit()
        return 200, token, self.TOKEN_RESPONSE_HEADER


def successor_pair(refresh_token: str) -> tuple[str, str]:
    """The access and refresh token that replace ``refresh_token``: derived from it with
    the app's secret key (unguessable without both), so that a refresh repeated within the
    grace answers the very same pair."""
    key = current_app.config["SECRET_KEY"].encode()

    def derive(purpose: str) -> str:
        mac = hmac.new(key, f"{purpose}\0{refresh_token}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    return derive("coalition.refresh.access"), derive("coalition.refresh.refresh")


def _in_grace(rotated_at: datetime | None, now: datetime) -> bool:
    grace = int(current_app.config["REFRESH_GRACE"])
    return rotated_at is not None and now < rotated_at + timedelta(seconds=grace)


class MemberRefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = PUBLIC_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    # Authlib refuses the grant when this answers None; its stub says never None
    def authenticate_refresh_token(  # type: ignore[override]
            self, refresh_token: str) -> OAuthToken | None:
        with read() as session:
            row = session.scalar(select(OAuthToken).where(
                OAuthToken.refresh_token_hash == digest(refresh_token)))
        if row is None or (row.member_id is None and row.finance_user_id is None
                           and row.partner_user_id is None):
            return None
        if row.revoked_at is not None and not _in_grace(row.rotated_at, utcnow()):
            _revoke_after_replay(row)
            return None
        # (just rotated: create_token_response answers the pair it was rotated into)
        self.presented = refresh_token
        lifetime = int(current_app.config["REFRESH_TOKEN_LIFETIME"])
        if row.issued_at + timedelta(seconds=lifetime) <= utcnow():
            return None
        return row

    def authenticate_user(self, refresh_token: OAuthToken) -> Owner | None:
        return _owner(refresh_token)

    def revoke_old_credential(self, refresh_token: TokenMixin) -> None:
        """The old token is revoked in :meth:`create_token_response`, with the new one."""

    # Authlib answers the token as a dict (its stub says a string)
    def create_token_response(self) -> TokenResponse:  # type: ignore[override]
        old = self.request.refresh_token
        assert isinstance(old, OAuthToken), "set by authenticate_refresh_token"
        member = _signed_in(self.request, self.authenticate_user(old))
        token = self.issue_token(member, old)
        if not scope_fits(member, granted_scope(token)):
            raise InvalidGrantError("The scope does not fit who signed in.")
        access, refresh = successor_pair(self.presented)
        token["access_token"], token["refresh_token"] = access, refresh
        t = OAuthToken.__table__.c
        now = utcnow()
        with UnitOfWork() as uow:
            rotated = affected_rows(uow.session.execute(
                update(OAuthToken.__table__)
                .where(t.id == old.id, t.revoked_at.is_(None))
                .values(revoked_at=now, rotated_at=now)
            ))
            if rotated:
                uow.session.add(_token_row(client_of(self.request), member, token))
                uow.commit()
                return 200, token, self.TOKEN_RESPONSE_HEADER
            # rotated already (by a refresh in parallel, or a moment ago): within the grace,
            # the same pair again, if it is still live
            rotated_at = uow.session.scalar(select(t.rotated_at).where(t.id == old.id))
            successor = uow.session.execute(
                select(t.issued_at, t.expires_in, t.scope)
                .where(t.access_token_hash == digest(access),
                       t.revoked_at.is_(None))
            ).first()
        if successor is None or not _in_grace(rotated_at, now):
            _revoke_after_replay(old)
            raise InvalidGrantError("The refresh token was already used.")
        left = successor.issued_at + timedelta(seconds=successor.expires_in) - now
        token.update(scope=successor.scope, expires_in=max(0, int(left.total_seconds())))
        return 200, token, self.TOKEN_RESPONSE_HEADER


def register_member_grants(server: AuthorizationServer) -> None:
    server.register_grant(MemberAuthorizationCodeGrant, [S256CodeChallenge(required=True)])
    server.register_grant(MemberRefreshTokenGrant)
