"""Issuing, rotating and revoking OAuth clients."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from coalition.db import UnitOfWork, read, utcnow
from coalition.errors import InvalidRequest, NotFound
from coalition.oauth.models import (
    OPERATOR_SCOPES,
    PARTNER_SCOPES,
    OAuthClient,
    OAuthToken,
    digest,
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


def _view(client: OAuthClient) -> ClientView:
    return ClientView(client.client_id, client.kind, client.name, client.scope.split(),
                      client.partner_id, client.created_at, client.secret_rotated_at,
                      client.revoked_at)


def check_scopes(kind: str, scopes: list[str]) -> list[str]:
    allowed = PARTNER_SCOPES if kind == "partner" else OPERATOR_SCOPES
    if not scopes:
        raise InvalidRequest("At least one scope is required.",
                             errors={"scopes": ["At least one scope is required."]})
    bad = [s for s in scopes if s not in allowed]
    if bad:
        message = f"Not a {kind} scope: {', '.join(bad)}. Allowed: {', '.join(allowed)}."
        raise InvalidRequest(message, errors={"scopes": [message]})
    return sorted(set(scopes), key=scopes.index)


def issue_client(
    uow: UnitOfWork, kind: str, scopes: list[str], partner_id: int | None = None,
    name: str = "",
) -> IssuedClient:
    """Create a client inside the caller's unit of work (the caller commits)."""
    scopes = check_scopes(kind, scopes)
    client_id = ("op_" if kind == "operator" else "pt_") + secrets.token_urlsafe(12)
    secret = secrets.token_urlsafe(32)
    uow.session.add(OAuthClient(
        client_id=client_id, secret_hash=digest(secret), kind=kind, partner_id=partner_id,
        name=name, scope=" ".join(scopes),
    ))
    return IssuedClient(client_id, secret, kind, scopes, partner_id)


def create_operator_client(scopes: list[str], name: str = "") -> IssuedClient:
    with UnitOfWork() as uow:
        issued = issue_client(uow, "operator", scopes, name=name)
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


def _revoke_tokens(uow: UnitOfWork, client: OAuthClient) -> None:
    uow.session.execute(
        update(OAuthToken)
        .where(OAuthToken.client_pk == client.id, OAuthToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def rotate_secret(client_id: str, partner_id: int | None = None) -> IssuedClient:
    """A new secret; the old one and every token issued with it stop working at once."""
    with UnitOfWork() as uow:
        client = _load(uow, client_id, partner_id)
        secret = secrets.token_urlsafe(32)
        client.secret_hash = digest(secret)
        client.secret_rotated_at = utcnow()
        _revoke_tokens(uow, client)
        uow.commit()
        return IssuedClient(client.client_id, secret, client.kind, client.scope.split(),
                            client.partner_id)


def revoke_client(client_id: str, partner_id: int | None = None) -> ClientView:
    with UnitOfWork() as uow:
        client = _load(uow, client_id, partner_id)
        client.revoked_at = utcnow()
        _revoke_tokens(uow, client)
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
