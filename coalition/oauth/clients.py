"""Issuing, rotating and revoking OAuth clients."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import select

from coalition.audit.service import SYSTEM, Actor, record
from coalition.db import UnitOfWork, read, utcnow
from coalition.errors import InvalidRequest, NotFound
from coalition.models import Partner
from coalition.oauth.finance_users import FINANCE_SCOPES
from coalition.oauth.models import (
    MEMBER_SCOPES,
    OPERATOR_SCOPES,
    PARTNER_SCOPES,
    PORTAL_SCOPES,
    OAuthClient,
    OAuthToken,
    digest,
    revoke_tokens,
)


@dataclass(frozen=True)
class IssuedClient:
    """A client with its secret: shown once, never stored."""

    client_id: str
    client_secret: str
    kind: str
    scopes: list[str]
    partner_id: int | None


@dataclass(frozen=True)
class ClientView:
    client_id: str
    kind: str
    name: str
    scopes: list[str]
    partner_id: int | None
    created_at: object
    secret_rotated_at: object
    revoked_at: object
    #: public clients only: where the authorization endpoint may send codes (exact match)
    redirect_uris: list[str] = field(default_factory=list)


def _view(client: OAuthClient) -> ClientView:
    return ClientView(client.client_id, client.kind, client.name, client.scope.split(),
                      client.partner_id, client.created_at, client.secret_rotated_at,
                      client.revoked_at, (client.redirect_uris or "").split())


def check_scopes(kind: str, scopes: list[str]) -> list[str]:
    allowed = PARTNER_SCOPES if kind == "partner" else OPERATOR_SCOPES
    if not scopes:
        raise InvalidRequest("At least one scope is required.",
                             errors={"scopes": ["At least one scope is required."]})
    bad = [s for s in scopes if s not in allowed]
    if bad:
        article = "an" if kind == "operator" else "a"
        message = f"Not {article} {kind} scope: {', '.join(bad)}. Allowed: {', '.join(allowed)}."
        raise InvalidRequest(message, errors={"scopes": [message]})
    return sorted(set(scopes), key=scopes.index)


def issue_client(
    uow: UnitOfWork, kind: str, scopes: list[str], partner_id: int | None = None,
    name: str = "", *, actor: Actor, partner_code: str | None = None,
) -> IssuedClient:
    """Create a client inside the caller's unit of work (the caller commits)."""
    scopes = check_scopes(kind, scopes)
    client_id = ("op_" if kind == "operator" else "pt_") + secrets.token_urlsafe(12)
    secret = secrets.token_urlsafe(32)
    uow.session.add(OAuthClient(
        client_id=client_id, secret_hash=digest(secret), kind=kind, partner_id=partner_id,
        name=name, scope=" ".join(scopes),
    ))
    record(uow.session, actor, "client.issued", f"client:{client_id}",
           {"kind": kind, "partner": partner_code, "name": name, "scopes": scopes})
    return IssuedClient(client_id, secret, kind, scopes, partner_id)


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect_uris(uris: list[str]) -> list[str]:
    """Redirect URIs a public client may register: absolute, without a fragment, and
    ``https``, ``http`` on a loopback host (RFC 8252 7.3), or a private-use scheme with a
    dot in it (RFC 8252 7.1, e.g. ``com.example.app:/callback``)."""
    if not uris:
        message = "At least one redirect URI is required."
        raise InvalidRequest(message, errors={"redirect_uris": [message]})
    problems: dict[int, list[str]] = {}
    for index, uri in enumerate(uris):
        try:
            parts = urlsplit(uri)
        except ValueError:
            parts = None
        if parts is None or not parts.scheme or any(c.isspace() for c in uri) or len(uri) > 2000:
            problems[index] = ["Not an absolute URI."]
        elif parts.fragment or "#" in uri:
            problems[index] = ["A redirect URI must not have a fragment."]
        elif parts.scheme == "https":
            if not parts.hostname:
                problems[index] = ["An https redirect URI needs a host."]
        elif parts.scheme == "http":
            if not _loopback(parts.hostname):
                problems[index] = ["http is allowed only on a loopback host "
                                   "(127.0.0.1, [::1], localhost); use https."]
        elif "." not in parts.scheme:
            problems[index] = ["Use https, loopback http, or a private-use scheme in "
                               "reverse-domain form (com.example.app:/callback)."]
    if problems:
        raise InvalidRequest("Not a valid redirect URI.", errors={"redirect_uris": problems})
    return sorted(set(uris), key=uris.index)


#: what a public client may hold: members sign in through it, or finance users (the
#: finance page), or partner staff (the partner portal); never two of them, so that one
#: sign-in form always knows whom it asks for
PUBLIC_SCOPES = (MEMBER_SCOPES, FINANCE_SCOPES, PORTAL_SCOPES)


def create_public_client(name: str, redirect_uris: list[str], *,
                         trusted: bool = False, actor: Actor = SYSTEM,
                         scopes: tuple[str, ...] = MEMBER_SCOPES) -> ClientView:
    """Register a public client (a member app or page): no secret, PKCE, scope
    ``member`` (or ``settlement:run`` for the finance page, where finance users sign in).
    ``trusted`` skips the redirect URI rules (the app's own pages, whose URI comes from
    its own configuration)."""
    if tuple(scopes) not in PUBLIC_SCOPES:
        message = ("A public client has the scope member, or settlement:run (finance page), "
                   "or partner:portal (partner portal).")
        raise InvalidRequest(message, errors={"scopes": [message]})
    uris = redirect_uris if trusted else check_redirect_uris(redirect_uris)
    if not name.strip():
        raise InvalidRequest("A public client needs a name (members see it when they sign "
                             "in).", errors={"name": ["Required."]})
    with UnitOfWork() as uow:
        client = OAuthClient(
            client_id="pub_" + secrets.token_urlsafe(12), secret_hash=None, kind="public",
            partner_id=None, name=name.strip(), scope=" ".join(scopes),
            redirect_uris=" ".join(uris), created_at=utcnow(),
        )
        uow.session.add(client)
        record(uow.session, actor, "client.issued", f"client:{client.client_id}",
               {"kind": "public", "name": client.name, "scopes": client.scope.split(),
                "redirect_uris": uris})
        uow.commit()
        return _view(client)


def find_public_client(redirect_uri: str, scope: str | None = None) -> str | None:
    """The oldest active public client registered with exactly this redirect URI (and,
    if given, exactly this scope)."""
    with read() as session:
        query = (select(OAuthClient.client_id, OAuthClient.redirect_uris)
                 .where(OAuthClient.kind == "public", OAuthClient.revoked_at.is_(None),
                        OAuthClient.redirect_uris.contains(redirect_uri, autoescape=True))
                 .order_by(OAuthClient.id))
        if scope is not None:
            query = query.where(OAuthClient.scope == scope)
        candidates = session.execute(query).all()
    for client_id, uris in candidates:
        if redirect_uri in (uris or "").split():
            return client_id
    return None


def create_operator_client(scopes: list[str], name: str = "", *,
                           actor: Actor = SYSTEM) -> IssuedClient:
    with UnitOfWork() as uow:
        issued = issue_client(uow, "operator", scopes, name=name, actor=actor)
        uow.commit()
    return issued


def _load(uow: UnitOfWork, client_id: str, partner_id: int | None) -> OAuthClient:
    query = select(OAuthClient).where(OAuthClient.client_id == client_id)
    if partner_id is not None:
        query = query.where(OAuthClient.partner_id == partner_id)
    client = uow.session.scalar(query.with_for_update())
    if client is None or client.revoked_at is not None:
        raise NotFound(f"No active client {client_id}.")
    return client


def _revoke_tokens(uow: UnitOfWork, client: OAuthClient) -> int:
    return revoke_tokens(uow.session, OAuthToken.__table__.c.client_pk == client.id)


def _audit(uow: UnitOfWork, actor: Actor, action: str, client: OAuthClient,
           tokens_revoked: int) -> None:

    partner = (uow.session.scalar(select(Partner.code).where(Partner.id == client.partner_id))
               if client.partner_id is not None else None)
    record(uow.session, actor, action, f"client:{client.client_id}",
           {"kind": client.kind, "partner": partner, "name": client.name,
            "tokens_revoked": tokens_revoked})


def rotate_secret(client_id: str, partner_id: int | None = None, *,
                  actor: Actor = SYSTEM) -> IssuedClient:
    """A new secret; the old one and every token issued with it stop working at once."""
    with UnitOfWork() as uow:
        client = _load(uow, client_id, partner_id)
        secret = secrets.token_urlsafe(32)
        client.secret_hash = digest(secret)
        client.secret_rotated_at = utcnow()
        client.generation += 1  # every token issued with the old secret dies
        _audit(uow, actor, "client.rotated", client, _revoke_tokens(uow, client))
        uow.commit()
        return IssuedClient(client.client_id, secret, client.kind, client.scope.split(),
                            client.partner_id)


def revoke_client(client_id: str, partner_id: int | None = None, *,
                  actor: Actor = SYSTEM) -> ClientView:
    with UnitOfWork() as uow:
        client = _load(uow, client_id, partner_id)
        client.revoked_at = utcnow()
        client.generation += 1
        _audit(uow, actor, "client.revoked", client, _revoke_tokens(uow, client))
        uow.commit()
        return _view(client)


def list_clients(partner_id: int | None = None, kind: str | None = None) -> list[ClientView]:
    with read() as session:
        query = select(OAuthClient).order_by(OAuthClient.id)
        if partner_id is not None:
            query = query.where(OAuthClient.partner_id == partner_id)
        if kind is not None:
            query = query.where(OAuthClient.kind == kind)
        return [_view(c) for c in session.scalars(query)]
