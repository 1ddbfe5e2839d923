"""OAuth clients and tokens.

Client secrets and tokens are stored as SHA-256 digests only: they are 256-bit random
values, so a fast digest is as strong as a slow password hash, and a leaked table gives
away no credential. Secrets are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Protocol

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import CheckConstraint, ColumnElement, ForeignKey, Integer, String, Text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from coalition.db import PK, Base, BigId, Timestamp, affected_rows, utcnow

#: scopes a partner client may hold
PARTNER_SCOPES = (
    "points:earn",
    "points:burn",
    "members:read",
    "members:write",
    "transactions:read",
    "settlement:read",
)
#: scopes an operator client may hold
OPERATOR_SCOPES = ("admin", "settlement:run")
MEMBER_SCOPES = ("member",)
#: the only scope a partner staff member's token carries (the partner portal)
PORTAL_SCOPES = ("partner:portal",)
ALL_SCOPES = PARTNER_SCOPES + OPERATOR_SCOPES + MEMBER_SCOPES + PORTAL_SCOPES

CLIENT_KINDS = ("operator", "partner", "public")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class OAuthClient(Base, ClientMixin):
    __tablename__ = "oauth_client"
    __table_args__ = (
        CheckConstraint("kind IN ('operator', 'partner', 'public')", name="kind"),
        CheckConstraint("kind = 'public' OR secret_hash IS NOT NULL", name="secret"),
    )

    id: Mapped[PK]
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: NULL for public clients (a member app, the member page), which use PKCE instead
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    #: space-separated; exact match required (public clients)
    redirect_uris: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    secret_rotated_at: Mapped[Timestamp | None]
    revoked_at: Mapped[Timestamp | None]
    #: bumped when the secret is rotated or the client revoked: a token is valid only while
    #: its ``client_generation`` equals this (checked in the query that reads the token), so
    #: a token issued concurrently with a rotation or a revocation dies with the others
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # -- Authlib ClientMixin
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        # none: a request must name its redirect URI (Authlib refuses an empty default)
        return ""

    def get_allowed_scope(self, scope: Collection[str] | str | None) -> str:
        """The requested scopes this client holds; all of its scopes when none are asked.

        Scopes it does not hold were already refused by the grant, so this only orders them.
        """
        allowed = self.scope.split()
        if not scope:
            return " ".join(allowed)
        requested = set(scope_to_list(scope))
        return " ".join(s for s in allowed if s in requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # exact string match against a registered URI (no prefix or pattern matching)
        if self.kind != "public" or not self.redirect_uris:
            return False
        return redirect_uri in self.redirect_uris.split()

    def check_client_secret(self, client_secret: str) -> bool:
        if self.revoked_at is not None or self.secret_hash is None:
            return False
        return hmac.compare_digest(self.secret_hash, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.kind == "public":
            # a public client has no secret; PKCE binds its codes instead
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return self.kind == "public" and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if self.kind == "public":
            return grant_type in ("authorization_code", "refresh_token")
        return grant_type == "client_credentials"


class _TokenFields(Protocol):
    """What :class:`TokenState` reads: a stored token row, or a token as validated."""

    @property
    def client_id(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def issued_at(self) -> datetime: ...
    @property
    def expires_in(self) -> int: ...
    @property
    def revoked_at(self) -> datetime | None: ...


class TokenState(TokenMixin):
    """Authlib's :class:`TokenMixin` over a token's client, scope, lifetime and revocation."""

    def check_client(self: _TokenFields, client: ClientMixin) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self: _TokenFields) -> str:
        return self.scope

    def get_expires_in(self: _TokenFields) -> int:
        return self.expires_in

    def is_expired(self: _TokenFields) -> bool:
        return utcnow() >= self.issued_at + timedelta(seconds=self.expires_in)

    def is_revoked(self: _TokenFields) -> bool:
        return self.revoked_at is not None


class OAuthToken(Base, TokenState):
    __tablename__ = "oauth_token"

    id: Mapped[PK]
    client_pk: Mapped[int] = mapped_column(BigId, ForeignKey("oauth_client.id"), index=True)
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # denormalised from the client so that checking a token is one indexed read
    client_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partner.id"))
    #: the member a member token acts for (authorization-code grant)
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("member.id"), index=True)
    #: the finance user a finance token acts for (authorization-code grant)
    finance_user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("finance_user.id"))
    #: the partner staff member a portal token acts for (authorization-code grant)
    partner_user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner_user.id"))
    scope: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    expires_in: Mapped[int] = mapped_column(Integer)
    revoked_at: Mapped[Timestamp | None]
    #: the client's generation when its credentials were checked for this token
    client_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: when this refresh token was exchanged for a new pair (it is revoked then too); for a
    #: short grace after it, presenting it again answers that same pair
    rotated_at: Mapped[Timestamp | None]

    @property
    def expires_at(self) -> datetime:
        return self.issued_at + timedelta(seconds=self.expires_in)


def revoke_tokens(session: Session, owner: ColumnElement[bool],
                  client_id: str | None = None) -> int:
    """Revoke the live tokens that ``owner`` (a condition on the token: its member,
    finance user or client) selects, at one client or everywhere, in the caller's
    transaction. Returns how many."""
    t = OAuthToken.__table__.c
    query = update(OAuthToken.__table__).where(owner, t.revoked_at.is_(None))
    if client_id is not None:
        query = query.where(t.client_id == client_id)
    return affected_rows(session.execute(query.values(revoked_at=utcnow())))


class OAuthAuthorizationCode(Base):
    """A one-time, short-lived authorization code (stored as a digest), bound to its PKCE
    challenge and exact redirect URI."""

    __tablename__ = "oauth_authorization_code"

    id: Mapped[PK]
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    #: exactly one of member_id (a member signing in), finance_user_id and partner_user_id
    member_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("member.id"), index=True)
    finance_user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("finance_user.id"))
    partner_user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("partner_user.id"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    issued_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    expires_at: Mapped[Timestamp]
    used_at: Mapped[Timestamp | None]


class FinanceUser(Base):
    """A person in the coalition's finance team: signs in to the finance page through the
    authorization-code flow and acts with ``settlement:run``, named in what they resolve."""

    __tablename__ = "finance_user"

    id: Mapped[PK]
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[Timestamp | None]
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)


#: what a partner staff member may do in the portal, each role allowing what the ones
#: before it do (:mod:`coalition.oauth.partner_users`)
PARTNER_ROLES = ("viewer", "operator", "admin")


class PartnerUser(Base):
    """A partner's staff member (its loyalty manager, its accountant): signs in to the
    partner portal through the authorization-code flow and sees that partner alone.

    Created by the operator with a one-time activation code (stored as a digest), with
    which the person chooses a password."""

    __tablename__ = "partner_user"
    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),
    )

    id: Mapped[PK]
    partner_id: Mapped[int] = mapped_column(BigId, ForeignKey("partner.id"), index=True)
    #: what the person signs in with; unique across partners
    login: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    activation_hash: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(default=True)
    #: what the person may do in the portal: ``viewer`` reads everything of its partner,
    #: ``operator`` also uploads batches, replays deliveries and manages webhook endpoints,
    #: ``admin`` also manages the partner's other staff accounts
    role: Mapped[str] = mapped_column(String(16), default="viewer", server_default="viewer")
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[Timestamp | None]
    created_at: Mapped[Timestamp] = mapped_column(default=utcnow)
    activated_at: Mapped[Timestamp | None]
