"""Limits on what one caller may send: how often (rate limits, 429) and what (request
bodies: size 413, strict JSON 400).

Rate limits
    A moving window per caller, counted by the ``limits`` library: at most
    ``RATE_LIMIT_BURST`` requests in any ``RATE_LIMIT_BURST / RATE_LIMIT`` seconds (rounded
    up to a whole second, the library's unit, and at least one), per OAuth client (a member
    token's window is its member's, so that the members of one member app do not share
    one), checked once the bearer token is known and before the body is read. So a caller
    may send its whole burst at once, and ``RATE_LIMIT`` requests a second sustained; a
    request is granted again as soon as the one ``RATE_LIMIT_BURST`` requests before it is
    older than the window (a caller that used its burst at once waits for the window to
    pass; one that keeps to the rate never waits). The defaults are 400 requests in any 2
    s. A burst under the rate caps the rate at the burst a second. ``/oauth/token``,
    ``/oauth/revoke`` and ``/oauth/introspect``, where the caller is not known yet, are
    limited per remote address (``TOKEN_RATE_LIMIT``, ``TOKEN_RATE_LIMIT_BURST``: 100
    requests in any 10 s). A refused request is ``429`` with code ``rate_limited`` and
    ``Retry-After`` (the whole seconds until the window grants one again), and does
    nothing.

    Where the windows are counted is ``RATE_LIMIT_STORAGE``, given to the library's
    ``storage_from_string``. With ``memory://`` (the default, for ``make run`` and one
    process) each worker process keeps its own: with ``W`` gunicorn workers a client may
    get up to ``W`` times the configured rate. With a Redis URL every worker of every host
    counts in the same windows: the library's moving window is one Lua script per request,
    atomic in Redis, under the keys ``RATE_LIMIT_KEY_PREFIX`` + ``client/…`` and
    ``address/…``, each a list of the last ``BURST`` requests' times that expires a window
    after the last one. A request's time is its host's clock, so the hosts keep theirs in
    step (NTP). Keeping them in PostgreSQL instead would put one hot row per client on
    every earn and burn, which is what the ledger is designed to avoid. flask-limiter is
    not put on top: its check is a ``before_request`` hook or a decorator on the view,
    while the client's limit is taken where the bearer token has just been found
    (:mod:`coalition.oauth.server`), and the address's before the body is read.

    When Redis cannot be reached (down, or slower than :data:`STORE_TIMEOUT`; it is then
    not asked again for :data:`STORE_RETRY`), ``RATE_LIMIT_FAIL_OPEN`` decides: requests
    go through unlimited (the default: a coalition does not stop taking earns because its
    rate-limit store died), or are refused with ``503 unavailable`` and ``Retry-After``.
    The first failure and the recovery are logged with the choice, once per outage and
    worker.

    Behind a reverse proxy the remote address is the proxy's unless the proxy is trusted
    (``TRUSTED_PROXIES``, :mod:`coalition.http.proxy`), so the per-address limit would then
    be shared by everyone.

JSON bodies
    Before any view runs, a JSON body is parsed once, strictly; whatever is refused here is
    ``400 invalid_request`` and reaches neither authentication nor the database:

    * not UTF-8, not JSON, or JSON with ``NaN``/``Infinity``/``-Infinity`` (not JSON at all,
      although Python's parser takes them);
    * a number of more than :data:`MAX_NUMBER_CHARS` characters, or one whose value is not
      finite as a double (``1e309``); smaller out-of-range numbers (``2**64`` points) parse
      and are refused by the field they are in (``422`` naming it);
    * arrays and objects nested more than :data:`MAX_DEPTH` deep (the deepest body of the
      API is 4);
    * an object with the same key twice: parsers disagree on which one wins (first, last,
      error), so a payment system must not pick one silently;
    * a string with an unpaired UTF-16 surrogate escape (``"\\ud800"``), which no database
      text column can store (NUL characters are refused by :mod:`coalition.http.errors`, wherever
      they are).

    A body over ``MAX_CONTENT_LENGTH`` is ``413 payload_too_large`` in the same error shape
    wherever it is read (JSON, CSV uploads, ``/oauth/token`` forms). A chunked body (no
    ``Content-Length``) is read before any view runs and refused once it reaches the limit
    (so a chunked body of exactly the limit is refused too), never cut short.

    A body shorter than its ``Content-Length`` (the connection dropped before all of it
    arrived) is ``400 invalid_request`` wherever it is read, and nothing is done with the
    part that came: a cut CSV file is never reconciled as if it were whole. gunicorn tells
    the application that it ends the body itself (``wsgi.input_terminated``), and then
    werkzeug reads to the end of the stream without counting; so when a length is declared
    werkzeug is made to count (:class:`DeclaredLength`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from coalition.errors import CoalitionError
from coalition.http.errors import error_response

#: deepest nesting of arrays and objects accepted in a JSON body
MAX_DEPTH = 32
#: longest JSON number accepted, in characters (2**63 has 19 digits)
MAX_NUMBER_CHARS = 100
#: seconds to wait for Redis before it counts as unreachable
STORE_TIMEOUT = 0.5
#: seconds during which an unreachable Redis is not asked again
STORE_RETRY = 1.0

#: the endpoints limited per remote address
ADDRESS_LIMITED = frozenset({"/oauth/token", "/oauth/revoke", "/oauth/introspect"})


log = logging.getLogger("coalition.limits")


class RateLimited(CoalitionError):
    status, code = 429, "rate_limited"


class LimitsUnavailable(CoalitionError):
    status, code = 503, "unavailable"


# --------------------------------------------------------------------------- rate limits


def window(rate: float, burst: int, namespace: str) -> RateLimitItem:
    """The limit for ``rate`` requests a second and bursts of ``burst``: ``burst`` requests
    in any ``burst / rate`` seconds, rounded up to a whole second."""
    seconds = max(1, math.ceil(burst / rate))
    return RateLimitItemPerSecond(burst, seconds, namespace=namespace)


@dataclass
class Limits:
    enabled: bool
    limiter: MovingWindowRateLimiter
    clients: RateLimitItem
    addresses: RateLimitItem
    fail_open: bool = True
    #: where the windows are counted, for the log (no password)
    storage: str = "memory://"
    _down: bool = field(default=False, repr=False)
    _retry_at: float = field(default=0.0, repr=False)

    def wait(self, item: RateLimitItem, *key: str) -> float:
        """Count one request against ``item`` for ``key``: 0 if it is granted, else the
        seconds until the window grants one again. Raises
        :class:`~limits.errors.StorageError` when the storage cannot be reached."""
        if self.limiter.hit(item, *key):
            return 0.0
        reset_at = self.limiter.get_window_stats(item, *key).reset_time
        # refused is refused, even if the window moved on between the two calls
        return max(reset_at - time.time(), 0.001)

    def take(self, item: RateLimitItem, key: tuple[str, ...], who: str) -> None:
        """Count one request for ``key``, or raise :class:`RateLimited`; if the storage
        cannot be reached, let the request through or raise :class:`LimitsUnavailable`.
        Once it could not, it is not asked again for :data:`STORE_RETRY` seconds, so that
        a Redis that does not answer costs one request :data:`STORE_TIMEOUT`, not all."""
        wait: float | None = None
        if not self._down or time.monotonic() >= self._retry_at:
            try:
                wait = self.wait(item, *key)
            except StorageError as exc:
                self._went_down(exc.storage_error)
                self._retry_at = time.monotonic() + STORE_RETRY
        if wait is None:
            if self.fail_open:
                return
            raise LimitsUnavailable(
                "Rate limits cannot be checked at the moment; nothing was done. "
                "Retry after 1 s.", headers={"Retry-After": "1"})
        if self._down:
            self._down = False
            log.warning("rate limit storage %s answers again: limits apply", self.storage)
        if wait:
            raise _refuse(wait, who)

    def _went_down(self, exc: Exception) -> None:
        if self._down:
            return
        self._down = True
        if self.fail_open:
            choice = "requests go through unlimited (RATE_LIMIT_FAIL_OPEN=true)"
        else:
            choice = "requests are refused with 503 (RATE_LIMIT_FAIL_OPEN=false)"
        log.error("rate limit storage %s unreachable (%s: %s): %s until it answers",
                  self.storage, type(exc).__name__, exc, choice)


def _limits() -> Limits:
    return current_app.extensions["coalition.limits"]


def _refuse(wait: float, who: str) -> RateLimited:
    seconds = max(1, math.ceil(wait))
    return RateLimited(f"Too many requests from this {who}. Retry after {seconds} s.",
                       headers={"Retry-After": str(seconds)})


def limit_client(client_id: str, member_id: int | None = None) -> None:
    """Count one request of an authenticated caller, or raise :class:`RateLimited`."""
    limits = _limits()
    if not limits.enabled:
        return
    key = (client_id,) if member_id is None else (client_id, "member", str(member_id))
    limits.take(limits.clients, key, "client")


def _limit_address() -> None:
    if request.method != "POST" or request.path not in ADDRESS_LIMITED:
        return
    limits = _limits()
    if not limits.enabled:
        return
    limits.take(limits.addresses, (request.remote_addr or "",), "address")


def _shown(url: str) -> str:
    """A Redis URL as the log shows it: without its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}/{parts.path[1:] or 0}"


def _make_limits(config: dict[str, Any]) -> Limits:
    """The limits as configured: counted in this process, or in Redis."""
    enabled = bool(config["RATE_LIMIT_ENABLED"])
    url = config["RATE_LIMIT_STORAGE"]
    clients = window(config["RATE_LIMIT"], config["RATE_LIMIT_BURST"], "client")
    addresses = window(config["TOKEN_RATE_LIMIT"], config["TOKEN_RATE_LIMIT_BURST"],
                       "address")
    if url == "memory://":
        storage = storage_from_string(url, wrap_exceptions=True)
        return Limits(enabled, MovingWindowRateLimiter(storage), clients, addresses)
    # the library names a Redis socket redis+unix://; the storage adds ":" after the prefix
    storage = storage_from_string(
        "redis+" + url if url.startswith("unix://") else url, wrap_exceptions=True,
        key_prefix=config["RATE_LIMIT_KEY_PREFIX"].removesuffix(":"),
        socket_timeout=STORE_TIMEOUT, socket_connect_timeout=STORE_TIMEOUT)
    fail_open = bool(config["RATE_LIMIT_FAIL_OPEN"])
    shown = _shown(url)
    if enabled:
        log.info("rate limits counted in %s (keys %s…); if it cannot be reached, requests %s",
                 shown, config["RATE_LIMIT_KEY_PREFIX"],
                 "go through unlimited" if fail_open else "are refused (503)")
    return Limits(enabled, MovingWindowRateLimiter(storage), clients, addresses,
                  fail_open=fail_open, storage=shown)


# --------------------------------------------------------------------------- JSON bodies


class BodyRefused(ValueError):
    """A JSON body that is refused before it is looked at."""


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKETS = str.maketrans("[{]}", "(())")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _too_deep(text: str) -> bool:
    """Whether arrays and objects nest more than MAX_DEPTH deep (brackets inside strings
    do not count). Linear: at most MAX_DEPTH passes of ``str.replace``."""
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_BRACKETS)
    for _ in range(MAX_DEPTH):
        if not skeleton:
            return False
        skeleton = skeleton.replace("()", "")
    # what is left is either nested deeper, or unbalanced (malformed: json.loads says so)
    return "()" in skeleton


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BodyRefused(f"Invalid JSON body: the key {key!r} appears twice in one "
                                  "object.")
            seen.add(key)
    return obj


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BodyRefused("Invalid JSON body: a number is out of range.")
    return int(text)


def _real(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BodyRefused("Invalid JSON body: a number is out of range.")
    value = float(text)
    if not math.isfinite(value):
        raise BodyRefused("Invalid JSON body: a number is out of range.")
    return value


def _constant(name: str) -> Any:
    raise BodyRefused(f"Invalid JSON body: {name} is not a JSON value.")


def parse_json(data: bytes) -> Any:
    """Parse a request body as strict JSON, or raise :class:`BodyRefused` saying why."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyRefused("Invalid JSON body: not UTF-8.") from None
    if (text.count("[") + text.count("{") > MAX_DEPTH) and _too_deep(text):
        raise BodyRefused(f"Invalid JSON body: nested more than {MAX_DEPTH} levels deep.")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_integer,
                           parse_float=_real, parse_constant=_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        if isinstance(exc, BodyRefused):
            raise
        raise BodyRefused("Invalid JSON body.") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BodyRefused("Invalid JSON body: a string has an unpaired surrogate "
                              "escape.") from None
    return value


def _check_body() -> Response | None:
    g.json_body = None  # g can outlive a request (an app context pushed around several)
    chunked = not request.content_length and bool(request.headers.get("Transfer-Encoding"))
    if chunked:
        # Without a Content-Length werkzeug stops reading at MAX_CONTENT_LENGTH and hands
        # over what it has: the body would be silently cut short (a truncated CSV file
        # reconciled as if it were whole). Read it here, once (views get it from the
        # cache), and refuse it if it reached the limit.
        data = request.get_data(cache=True)
        limit = request.max_content_length
        if limit is not None and len(data) >= limit:
            raise RequestEntityTooLarge()
    if not request.is_json or not (request.content_length or chunked):
        return None
    data = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413
    if not data:
        return None
    try:
        g.json_body = parse_json(data)  # later checks read it rather than parse again
    except BodyRefused as exc:
        return error_response(400, "The request is not valid.", "invalid_request",
                              {"_schema": [str(exc)]})
    return None


class DeclaredLength:
    """WSGI middleware: a request that declares its ``Content-Length`` is read against it,
    so that a body cut short raises :class:`~werkzeug.exceptions.ClientDisconnected` (400)
    when it is read, under any server."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("CONTENT_LENGTH"):
            environ.pop("wsgi.input_terminated", None)
        return self.wsgi_app(environ, start_response)


def _cut_short(error: ClientDisconnected) -> Response:
    return error_response(400, "The request body is shorter than its Content-Length: the "
                               "connection was cut before all of it arrived. Nothing was "
                               "done; send it again.", "invalid_request")


def _too_large(error: RequestEntityTooLarge) -> Response:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return error_response(413, f"The request body is larger than {limit} bytes.",
                          "payload_too_large")


# --------------------------------------------------------------------------- wiring


def init_limits(app: Flask) -> None:
    """Install the limits. Their hooks go before every ``before_request`` hook registered
    so far: a rate-limited caller costs nothing more, and no other hook reads a body before
    its size is checked and it is parsed strictly (a lenient ``json.loads`` of a deeply
    nested body raises ``RecursionError``)."""
    app.extensions["coalition.limits"] = _make_limits(app.config)
    hooks = app.before_request_funcs.setdefault(None, [])
    hooks[:0] = [_limit_address, _check_body]
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(ClientDisconnected, _cut_short)
    # Flask's documented way to wrap its WSGI app in middleware; mypy sees a method there
    app.wsgi_app = DeclaredLength(app.wsgi_app)  # type: ignore[method-assign]
