"""``/oauth/token``, ``/oauth/revoke`` and ``/oauth/introspect`` (RFC 6749, 7009, 7662)."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response
from flask_smorest import Blueprint
from marshmallow import fields

from coalition.http.errors import ErrorSchema
from coalition.oauth.server import IntrospectionEndpoint, RevocationEndpoint, authorization

blp = Blueprint("oauth", __name__, url_prefix="/oauth", description="OAuth 2.0")

_CLIENT_AUTH: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]


def _form(properties: Mapping[str, Mapping[str, object]], required: list[str]) -> dict[str, object]:
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": properties, "required": required}
            }
        },
    }


_STRING = {"type": "string"}
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}


class OAuthErrorSchema(ErrorSchema):
    """The one error shape with RFC 6749's own fields beside it."""

    error_description = fields.String(metadata={"description": "RFC 6749 5.2"})
    error_uri = fields.String(metadata={"description": "RFC 6749 5.2"})
    state = fields.String(metadata={"description": "RFC 6749 4.1.2.1"})


def _oauth_error(description: str) -> dict[str, object]:
    return {"description": description,
            "content": {"application/json": {"schema": OAuthErrorSchema}}}


_ERRORS = {"400": _oauth_error("Bad Request"), "401": _oauth_error("Unauthorized")}


@blp.route("/token", methods=["POST"])
@blp.doc(
    summary="Issue an access token: client credentials (partners, operators), or for "
            "members an authorization code with its PKCE verifier, or a refresh token "
            "(public clients, by client_id; a refresh token works once and is rotated).",
    security=_CLIENT_AUTH,
    requestBody=_form(
        {"grant_type": {"type": "string",
                        "enum": ["client_credentials", "authorization_code", "refresh_token"]},
         "scope": _STRING, "client_id": _STRING, "client_secret": _STRING,
         "code": _STRING, "redirect_uri": _STRING, "code_verifier": _STRING,
         "refresh_token": _STRING},
        ["grant_type"],
    ),
    responses={"200": {"description": "Token", "content": _JSON_OBJECT}, **_ERRORS},
)
def issue_token() -> Response:
    """Issue an access token."""
    # the stubs give the framework-neutral (status, body, headers); the Flask server
    # passes them through handle_response, which makes the Response
    return authorization.create_token_response()  # type: ignore[return-value]


@blp.route("/revoke", methods=["POST"])
@blp.doc(
    summary="Revoke a token (RFC 7009).",
    security=_CLIENT_AUTH,
    requestBody=_form({"token": _STRING, "token_type_hint": _STRING}, ["token"]),
    responses={"200": {"description": "Revoked (or unknown)", "content": _JSON_OBJECT},
               **_ERRORS},
)
def revoke_token() -> Response:
    """Revoke a token."""
    return authorization.create_endpoint_response(RevocationEndpoint.ENDPOINT_NAME)


@blp.route("/introspect", methods=["POST"])
@blp.doc(
    summary="Introspect a token (RFC 7662); operator clients only.",
    security=_CLIENT_AUTH,
    requestBody=_form({"token": _STRING, "token_type_hint": _STRING}, ["token"]),
    responses={"200": {"description": "Token state", "content": _JSON_OBJECT}, **_ERRORS,
               "403": _oauth_error("Forbidden")},
)
def introspect_token() -> Response:
    """Introspect a token."""
    return authorization.create_endpoint_response(IntrospectionEndpoint.ENDPOINT_NAME)
