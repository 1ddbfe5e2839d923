"""Authlib wiring: the token, revocation and introspection endpoints and the bearer-token
check that every protected view goes through.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer as _AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskJsonRequest
from authlib.oauth2 import OAuth2Error, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from flask import Flask, Response, current_app, g, json
from flask import request as flask_request
from sqlalchemy import bindparam, or_, select, update

from coalition.db import UnitOfWork, read, read_once, utcnow
from coalition.errors import Forbidden, InsufficientScope, InvalidRequest, Unauthorized
from coalition.http.errors import error_body
from coalition.http.limits import limit_client
from coalition.ledger.models import Member
from coalition.models import Partner
from coalition.oauth.grant_request import held_scopes
from coalition.oauth.member_grants import register_member_grants
from coalition.oauth.models import (
    ALL_SCOPES,
    FinanceUser,
    OAuthClient,
    OAuthToken,
    PartnerUser,
    TokenState,
    digest,
)
from coalition.prepared import Prepared

REALM = "coalition"
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


# --------------------------------------------------------------------------- token endpoint


class AuthorizationServer(_AuthorizationServer):
    def create_bearer_token_generator(self, config: Any) -> Any:
        # This one server object serves every app in the process, and each init_app replaces
        # its generator: take the lifetime from the app answering the request, not from the
        # app that happened to be initialised last.
        generator = super().create_bearer_token_generator(config)
        generator.expires_generator = _access_token_lifetime
        # refresh tokens only where a grant asks for one (member grants; never client
        # credentials)
        generator.refresh_token_generator = lambda **_: generate_token(48)
        return generator

    def authenticate_client(self, request: Any, methods: Collection[str],
                            endpoint: str = "token") -> ClientMixin:
        if not _readable_authorization(request.headers.get("Authorization")):
            raise InvalidClientError(
                status_code=401, description="The client credentials cannot be read: HTTP "
                "Basic takes base64 of the UTF-8 text client_id:client_secret.")
        return super().authenticate_client(request, methods, endpoint)

    # Authlib answers an unknown client (None) with invalid_client; the stub says never None
    def query_client(self, client_id: str) -> OAuthClient | None:  # type: ignore[override]
        with read() as session:
            return session.scalar(
                select(OAuthClient).where(
                    OAuthClient.client_id == client_id, OAuthClient.revoked_at.is_(None)
                )
            )

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        client: OAuthClient = request.client
        refresh = token.get("refresh_token")
        with UnitOfWork() as uow:
            uow.session.add(
                OAuthToken(
                    client_pk=client.id,
                    client_id=client.client_id,
                    kind=client.kind,
                    partner_id=client.partner_id,
                    access_token_hash=digest(token["access_token"]),
                    refresh_token_hash=digest(refresh) if refresh else None,
                    scope=token.get("scope", ""),
                    expires_in=int(token["expires_in"]),
                    client_generation=client.generation,
                )
            )
            uow.commit()

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Response:
        """RFC 6749 error fields, inside Coalition's one error shape."""
        if status_code >= 400:
            fields = dict(payload)
            description = fields.get("error_description") or fields.get("error", "")
            body = error_body(status_code, description, fields.get("error"))
            body.update(fields)
            payload = body
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        return Response(payload, status=status_code, headers=headers,
                        content_type="application/json")


def _readable_authorization(header: str | None) -> bool:
    """Whether Authlib can read the ``Authorization`` header of a token, revocation or
    introspection request without failing: it lets a scheme followed by nothing but blanks
    (``ValueError``) and Basic credentials that are not UTF-8 (``UnicodeDecodeError``)
    through as server errors. Anything else it reads, or ignores as no credentials."""
    if not header or " " not in header:
        return True
    parts = header.split(None, 1)
    if len(parts) < 2:
        return False
    scheme, credentials = parts
    if scheme.lower() != "basic":
        return True
    try:
        base64.b64decode(credentials).decode("utf-8")
    except binascii.Error:
        return True  # not base64: no credentials to Authlib, then 401 invalid_client
    except UnicodeDecodeError:
        return False
    return True


def _access_token_lifetime(client: ClientMixin, grant_type: str) -> int:
    return int(current_app.config["ACCESS_TOKEN_LIFETIME"])


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def validate_token_request(self) -> None:
        super().validate_token_request()
        held_scopes(self.request)


class _TokenLookup:
    """Finds a token by the digest of an access or refresh token."""

    def query_token(self, token_string: str, token_type_hint: str | None) -> OAuthToken | None:
        hashed = digest(token_string)
        if token_type_hint == "access_token":
            condition = OAuthToken.access_token_hash == hashed
        elif token_type_hint == "refresh_token":
            condition = OAuthToken.refresh_token_hash == hashed
        else:
            condition = or_(
                OAuthToken.access_token_hash == hashed, OAuthToken.refresh_token_hash == hashed
            )
        with read() as session:
            return session.scalar(select(OAuthToken).where(condition))


class RevocationEndpoint(_TokenLookup, _RevocationEndpoint):
    """RFC 7009: a client revokes its own tokens (public clients by client_id alone).
    Revoking either token of a pair revokes both."""

    CLIENT_AUTH_METHODS = [*CLIENT_AUTH_METHODS, "none"]

    def revoke_token(self, token: OAuthToken, request: Any) -> None:
        with UnitOfWork() as uow:
            uow.session.execute(
                update(OAuthToken)
                .where(OAuthToken.id == token.id, OAuthToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            uow.commit()


class IntrospectionForbidden(OAuth2Error):
    error = "unauthorized_client"
    description = "Only operator clients may introspect tokens."
    status_code = 403


class IntrospectionEndpoint(_TokenLookup, _IntrospectionEndpoint):
    """RFC 7662, for operator clients."""

    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def authenticate_endpoint_client(self, request: Any) -> OAuthClient:
        client = super().authenticate_endpoint_client(request)
        if client.kind != "operator":
            raise IntrospectionForbidden()
        return client

    def query_token(self, token_string: str, token_type_hint: str | None) -> OAuthToken | None:
        """A token of a client rotated or revoked since its issue is unknown (inactive)."""
        token = super().query_token(token_string, token_type_hint)
        if token is None:
            return None
        with read() as session:
            current = session.scalar(
                select(_current_client()).select_from(OAuthToken.__table__)
                .where(OAuthToken.__table__.c.id == token.id))
        return token if current else None

    def check_permission(self, token: OAuthToken, client: OAuthClient, request: Any) -> bool:
        return True

    def introspect_token(self, token: OAuthToken) -> dict[str, Any]:
        answer = {
            "active": True,
            "client_id": token.client_id,
            "scope": token.scope,
            "token_type": "Bearer",
            "exp": int(token.expires_at.timestamp()),
            "iat": int(token.issued_at.timestamp()),
            "sub": token.client_id,
            "kind": token.kind,
        }
        if token.finance_user_id is not None:
            # a finance user's token: its subject is the user it acts for
            with read() as session:
                answer["sub"] = answer["username"] = session.scalar(
                    select(FinanceUser.username).where(FinanceUser.id == token.finance_user_id))
        if token.partner_user_id is not None:
            # a partner staff member's token: its subject is the login it acts for
            with read() as session:
                answer["sub"] = answer["username"] = session.scalar(
                    select(PartnerUser.login).where(PartnerUser.id == token.partner_user_id))
        if token.member_id is not None:
            # a member token's subject is the member it acts for

            with read() as session:
                answer["sub"] = answer["member_number"] = session.scalar(
                    select(Member.member_number).where(Member.id == token.member_id))
        return answer


def _server() -> AuthorizationServer:
    """The process's one authorization server with its grants and endpoints; each app
    binds it with :func:`init_oauth`."""
    server = AuthorizationServer()
    server.register_grant(ClientCredentialsGrant)
    register_member_grants(server)
    server.register_endpoint(RevocationEndpoint)
    server.register_endpoint(IntrospectionEndpoint)
    return server


authorization = _server()


def init_oauth(app: Flask) -> None:
    authorization.init_app(app)
    authorization.scopes_supported = list(ALL_SCOPES)


# --------------------------------------------------------------------------- resource side


@dataclass(frozen=True)
class Principal:
    """Who is calling: the client behind a valid bearer token (with its partner's code and
    currency, which never change, so that partner calls need no further lookup)."""

    client_id: str
    kind: str
    partner_id: int | None
    scopes: frozenset[str]
    partner_code: str | None = None
    partner_currency: str | None = None
    #: the member a member token (scope ``member``) acts for
    member_id: int | None = None
    #: the username of the finance user a finance token (scope ``settlement:run``, through
    #: the finance page) acts for: who resolves breaks and closes runs
    finance_user: str | None = None
    #: the id of the partner staff member a portal token (scope ``partner:portal``, through
    #: the partner portal) acts for
    partner_user_id: int | None = None


@dataclass(frozen=True)
class _ValidatedToken(TokenState):
    client_id: str
    kind: str
    partner_id: int | None
    member_id: int | None
    scope: str
    issued_at: datetime
    expires_in: int
    revoked_at: datetime | None
    partner_code: str | None
    partner_currency: str | None
    finance_user: str | None = None
    partner_user_id: int | None = None


def _current_client() -> Any:
    """The condition that a token's client is still active and has not been rotated or
    revoked since the token was issued (the client's generation is bumped by both, in the
    transaction that does it, so whatever the timing of a token request, a token whose
    credentials were checked before that transaction committed is dead once it has)."""
    t, c = OAuthToken.__table__.c, OAuthClient.__table__.c
    return (select(c.id)
            .where(c.id == t.client_pk, c.revoked_at.is_(None),
                   c.generation == t.client_generation)
            .exists())


def _token_read() -> Any:
    """The token by its digest, with its partner (or finance user, or partner staff
    member), if its client is still current: built once, run with the digest as its one
    parameter."""
    t, p, f = OAuthToken.__table__.c, Partner.__table__.c, FinanceUser.__table__.c
    u = PartnerUser.__table__.c
    return (select(t.client_id, t.kind, t.partner_id, t.member_id, t.scope, t.issued_at,
                   t.expires_in, t.revoked_at, p.code, p.currency, f.username,
                   t.partner_user_id, f.active, u.active.label("staff_active"))
            .outerjoin(Partner.__table__, p.id == t.partner_id)
            .outerjoin(FinanceUser.__table__, f.id == t.finance_user_id)
            .outerjoin(PartnerUser.__table__, u.id == t.partner_user_id)
            .where(t.access_token_hash == bindparam("digest"), _current_client()))


_TOKEN_READ = Prepared(_token_read())


class _BearerValidator(BearerTokenValidator):
    def authenticate_token(self, token_string: str) -> _ValidatedToken | None:
        """One indexed read, in autocommit (no transaction of its own) and afresh on every
        request: a revocation is seen by the very next request on every worker."""
        with read_once() as connection:
            row = _TOKEN_READ.first(connection, {"digest": digest(token_string)})
        if row is None or (row.username is not None and not row.active):
            return None  # a disabled finance user's tokens are dead
        if row.partner_user_id is not None and not row.staff_active:
            return None  # and so are a disabled partner staff member's
        return _ValidatedToken(*row[:-2])


_protector = ResourceProtector()
_protector.register_token_validator(_BearerValidator(realm=REALM))


def require_token(scopes: list[str], kinds: tuple[str, ...] | None = None,
                  any_of: bool = False) -> Principal:
    """Check the request's bearer token, or raise the matching 401/403: first the scopes
    (every one of them, or with ``any_of`` at least one), then the kind of client."""
    try:
        token = _protector.validate_request([] if any_of else scopes,
                                            FlaskJsonRequest(flask_request))
    except OAuth2Error as error:
        headers = dict(error.get_headers())
        headers.pop("Content-Type", None)
        headers.setdefault("WWW-Authenticate", f'Bearer realm="{REALM}"')
        if error.status_code == 403:
            # RFC 6750 3.1: name the error and the scope the call needs
            headers["WWW-Authenticate"] = (f'Bearer realm="{REALM}", error="insufficient_scope", '
                                           f'scope="{" ".join(scopes)}"')
            raise InsufficientScope(
                f"This call needs the scope(s): {' '.join(scopes)}", headers=headers
            ) from None
        if error.status_code == 401:
            if error.error in ("missing_authorization", "unsupported_token_type"):
                # RFC 6750 3: no bearer token at all is a bare challenge, without Authlib's
                # non-standard error codes
                headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
            message = (
                "An access token is required."
                if error.error == "missing_authorization"
                else "The access token is invalid, expired or revoked."
            )
            raise Unauthorized(message, headers=headers) from None
        raise InvalidRequest(error.get_error_description() or error.error
                             or "invalid_request") from None
    if any_of and not set(token.scope.split()) & set(scopes):
        raise InsufficientScope(f"This call needs one of the scopes: {' '.join(scopes)}")
    # "finance" in kinds admits finance users' tokens (kind public, through the finance page)
    if kinds and token.kind not in kinds and not (token.finance_user and "finance" in kinds):
        raise Forbidden(f"This call is not available to {token.kind} clients.")
    principal = Principal(token.client_id, token.kind, token.partner_id,
                          frozenset(token.scope.split()), token.partner_code,
                          token.partner_currency, token.member_id, token.finance_user,
                          token.partner_user_id)
    limit_client(principal.client_id, principal.member_id)  # 429 before the body is read
    g.principal = principal
    return principal


def current_principal() -> Principal:
    return g.principal


def principal_for(token_string: str) -> Principal | None:
    """The principal behind a live access token held server-side (the member page keeps
    its tokens in the session), or ``None`` if it is unknown, expired or revoked."""
    token = _BearerValidator(realm=REALM).authenticate_token(token_string)
    if token is None or token.is_expired() or token.is_revoked():
        return None
    return Principal(token.client_id, token.kind, token.partner_id,
                     frozenset(token.scope.split()), token.partner_code,
                     token.partner_currency, token.member_id, token.finance_user,
                     token.partner_user_id)
