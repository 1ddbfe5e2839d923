"""The one error shape of the HTTP surface, and the API object that documents and renders it.

Every error, whatever raised it (a domain exception, webargs validation, routing, Authlib,
an unexpected crash), leaves as::

    {"code": 422, "status": "Unprocessable Entity", "message": "...",
     "error": "invalid_request", "errors": {"field": ["..."]}}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from apispec import BasePlugin
from flask import Flask, Response, current_app, g, jsonify, request
from flask_smorest import Api as _Api
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException, InternalServerError

from coalition.db import CommitOutcomeUnknown, is_unreachable
from coalition.errors import CoalitionError

log = logging.getLogger("coalition.http")

#: machine codes for errors that are not raised as domain exceptions
STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ErrorSchema(Schema):
    """The one error shape, as the API document describes it."""

    code = fields.Integer(required=True, metadata={"description": "HTTP status"})
    status = fields.String(required=True, metadata={"description": "HTTP reason"})
    message = fields.String(required=True)
    error = fields.String(required=True, metadata={"description": "stable machine code"})
    errors = fields.Dict(metadata={"description": "field errors"})


def error_body(
    status: int, message: str, error: str | None = None, errors: Any = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": status,
        "status": HTTPStatus(status).phrase,
        "message": message,
        "error": error or STATUS_CODES.get(status, "error"),
    }
    if errors:
        body["errors"] = errors
    return body


def error_response(
    status: int,
    message: str,
    error: str | None = None,
    errors: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify(error_body(status, message, error, errors))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten_locations(messages: Any) -> Any:
    """webargs nests field errors under their location (``json``, ``query``, …);
    partners see field names only."""
    if not isinstance(messages, dict):
        return messages
    locations = {"json", "query", "form", "headers", "files", "path", "view_args", "cookies"}
    if not set(messages) <= locations:
        return messages
    flat: dict[str, Any] = {}
    for located in messages.values():
        if isinstance(located, dict):
            flat.update(located)
        else:
            flat.setdefault("_schema", []).extend(located)
    return flat


class _BadRequestDoc(BasePlugin):
    """Any operation can answer 400 for a request it cannot read (a JSON body that does not
    parse, a NUL character anywhere; field errors are 422): the document says so."""

    def operation_helper(self, path: str | None = None,
                         operations: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for operation in (operations or {}).values():
            if isinstance(operation, dict):
                operation.setdefault("responses", {}).setdefault("400", "BAD_REQUEST")


class _ErrorBodiesDoc(BasePlugin):
    """Every error answer has the one error shape: a 4xx response documented by its
    description alone gets the ``Error`` schema, so that generated clients parse it (rather
    than typing the answer as anything)."""

    def operation_helper(self, path: str | None = None,
                         operations: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for operation in (operations or {}).values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if (str(status).startswith("4") and isinstance(response, dict)
                        and "content" not in response):
                    response["content"] = {"application/json": {"schema": "Error"}}


class Api(_Api):
    """flask-smorest's Api with Coalition's error shape for every HTTP exception."""

    ERROR_SCHEMA = ErrorSchema

    def _init_spec(self, **kwargs: Any) -> None:
        kwargs["extra_plugins"] = [*kwargs.get("extra_plugins", ()), _BadRequestDoc(),
                                   _ErrorBodiesDoc()]
        super()._init_spec(**kwargs)

    def handle_http_exception(self, error: HTTPException) -> Any:
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        if status >= 500:
            log.error("server error", exc_info=error.original_exception
                      if isinstance(error, InternalServerError) else None)
            return error_response(status, "The server could not complete the request.")
        errors = data.get("errors") or data.get("messages")
        if status == 422 or (status == 400 and errors):
            message = data.get("message") or "The request is not valid."
        else:
            message = data.get("message") or error.description or HTTPStatus(status).phrase
        headers = dict(data.get("headers") or {})
        valid_methods = getattr(error, "valid_methods", None)  # set on MethodNotAllowed
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        return error_response(
            status, message, data.get("error"), _flatten_locations(errors), headers
        )


def api_of(app: Flask) -> Api:
    """The app's API object, which every package registers its API blueprints with."""
    return app.extensions["coalition.api"]


def accepts(*mimetypes: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Let a view take request bodies other than JSON (e.g. ``text/csv``)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        # a mark on the view function itself, read by the media-type check below
        view._accepts = frozenset(mimetypes)  # type: ignore[attr-defined]
        return view

    return decorator


def _require_json_bodies() -> Response | None:
    """Refuse a body of the wrong media type with 415 before anything parses it."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.path.startswith("/v1/"):
        return None
    if not request.content_length and not request.headers.get("Transfer-Encoding"):
        return None
    view = current_app.view_functions.get(request.endpoint or "")
    allowed = getattr(view, "_accepts", None)
    if allowed is None and view is not None and hasattr(view, "view_class"):
        method = getattr(view.view_class, request.method.lower(), None)
        allowed = getattr(method, "_accepts", None)
    allowed = allowed or frozenset({"application/json"})
    if request.mimetype not in allowed:
        return error_response(
            415, f"Send the body as {' or '.join(sorted(allowed))}.", "unsupported_media_type"
        )
    return None


def _nul_in(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_nul_in(item) for item in value)
    return False


def _refuse_nul_characters() -> Response | None:
    """No name, reference, code or secret of the API holds a NUL character (U+0000), and
    PostgreSQL text cannot: a request with one in its path, query, credentials, form or
    JSON body is refused with 400 before anything looks it up or stores it."""
    auth = request.authorization
    places = {
        "path": _nul_in(request.path),
        "query": _nul_in(request.args.to_dict(flat=False)),
        "authorization": auth is not None and _nul_in([auth.username or "",
                                                       auth.password or ""]),
        "form": request.mimetype in ("application/x-www-form-urlencoded",
                                     "multipart/form-data")
        and _nul_in(request.form.to_dict(flat=False)),
        # the body as limits parsed it strictly (never parsed a second time here)
        "json": _nul_in(g.get("json_body")),
    }
    found = [place for place, nul in places.items() if nul]
    if not found:
        return None
    return error_response(400, "The request contains a NUL character (U+0000).",
                          "invalid_request", {found[0]: ["Must not contain U+0000."]})


def register_error_handlers(app: Flask) -> None:
    app.before_request(_require_json_bodies)
    app.before_request(_refuse_nul_characters)

    @app.errorhandler(CoalitionError)
    def _domain_error(exc: CoalitionError) -> Response:
        return error_response(exc.status, exc.message, exc.code, exc.errors, exc.headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # pragma: no cover - handled by Api
            raise exc
        if isinstance(exc, CommitOutcomeUnknown):
            # the booking may or may not have been made: its retry says which
            log.warning("database lost while committing: %s", exc.__cause__)
            return error_response(
                503, "The database was lost while this request was being committed. Send "
                "it again with the same partner_txn_id or Idempotency-Key: if it was done, "
                "the answer is a replay.", "unavailable",
                headers={"Retry-After": str(current_app.config["DB_RETRY_AFTER"])})
        if is_unreachable(exc):
            log.warning("database unreachable: %s", exc.orig)  # type: ignore[attr-defined]
            return error_response(
                503, "The service is briefly unavailable. Try again shortly; a request "
                "sent again with the same partner_txn_id or Idempotency-Key is never "
                "done twice.", "unavailable",
                headers={"Retry-After": str(current_app.config["DB_RETRY_AFTER"])})
        log.exception("unhandled error")
        return error_response(500, "The server could not complete the request.")
