"""What Coalition's grants read from Authlib's request: the client it authenticated and
the scopes asked for, typed (Authlib's request holds any :class:`ClientMixin`, and a
payload that is set before any grant runs)."""

from __future__ import annotations

from authlib.oauth2 import OAuth2Request
from authlib.oauth2.rfc6749 import InvalidScopeError
from authlib.oauth2.rfc6749.util import scope_to_list

from coalition.oauth.models import OAuthClient


def client_of(request: OAuth2Request) -> OAuthClient:
    """The client Authlib authenticated for this request (found by the server's
    ``query_client``, so always one of Coalition's)."""
    client = request.client
    assert isinstance(client, OAuthClient), "a grant runs only for an authenticated client"
    return client


def requested_scopes(request: OAuth2Request) -> set[str]:
    """The scopes the request asks for (none when it sends no ``scope``)."""
    scope = request.payload.scope if request.payload is not None else None
    return set(scope_to_list(scope) or [])


def held_scopes(request: OAuth2Request) -> tuple[set[str], set[str]]:
    """The scopes asked for and those the client holds; refuses scopes it does not hold."""
    requested = requested_scopes(request)
    held = set(client_of(request).scope.split())
    if not requested <= held:
        raise InvalidScopeError(f"The client may not request: "
                                f"{' '.join(sorted(requested - held))}")
    return requested, held
