"""The guard of the API's views: ``protected`` asks the token check of
:mod:`coalition.oauth.server` for a bearer token with the scopes a view needs."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask_smorest import Blueprint

from coalition.oauth.server import require_token


def protected(*scopes: str, kinds: tuple[str, ...] | None = None,
              any_of: bool = False) -> Callable[..., Any]:
    """Require a bearer token with every one of ``scopes`` (with ``any_of``, at least one;
    the view then checks which it needs) and, if given, a client of one of ``kinds``.
    Put it above ``@blp.arguments`` so that an anonymous request is refused with 401
    before its body is validated."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            require_token(list(scopes), kinds, any_of)
            return view(*args, **kwargs)

        doc = Blueprint.doc(
            # OpenAPI: scopes in one requirement are all needed; alternatives are a list
            security=[{"oauth2": [scope]} for scope in scopes] if any_of
            else [{"oauth2": list(scopes)}],
            # by name, so that flask-smorest registers the components (a bare $ref would
            # point at nothing unless some other operation named them)
            responses={"401": "UNAUTHORIZED", "403": "FORBIDDEN"},
        )
        return doc(wrapper)

    return decorator
