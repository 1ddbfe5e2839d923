"""Request ids, the access log and Prometheus metrics.

Every request gets an id: the caller's ``X-Request-ID`` when it is a sane token (1 to 128
of ``A-Z a-z 0-9 . _ -``), otherwise a new one. It is echoed in the ``X-Request-ID``
response header, added to every log line of the request (:class:`config.logging.
RequestIdFilter`) and written on the audit events the request records. Each request ends
with one access line on the ``coalition.access`` logger::

    {"message": "POST /v1/earn 201", "request_id": "…", "method": "POST",
     "path": "/v1/earn", "status": 201, "duration_ms": 3.2, "client_id": "pt_…",
     "partner": "acme", "outcome": "ok", "remote_addr": "203.0.113.7"}

``path`` is the URL rule (``/v1/settlement/runs/<int:run_id>``), never the raw path, so
ids and member numbers stay out of the log and metric labels stay few; ``outcome`` is
``ok`` or the error's machine code; ``remote_addr`` is the client's address (behind
nginx, the one nginx saw: :mod:`coalition.http.proxy`). Nothing else of the request is
logged: no headers, query string or body, so no token, secret or password.

Metrics (``prometheus_client``) are served at ``/metrics`` without a token unless
``COALITION_METRICS=false``. Under a pre-forking server (gunicorn) set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory, the same for every worker, before the
server starts: each worker then writes its samples there and ``/metrics`` adds up all of
them; without it the samples are the answering process's own.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from coalition.http.errors import STATUS_CODES
from config.logging import REQUEST_ID_KEY

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_STARTED_KEY = "coalition.request_started"
_OUTER_PRINCIPAL_KEY = "coalition.outer_principal"
#: kinds of the entries booked in a session's current transaction (see ``note_booked``)
_BOOKED_KEY = "coalition.booked_kinds"

access_log = logging.getLogger("coalition.access")

REQUESTS = Counter(
    "coalition_http_requests", "HTTP requests answered, by method, URL rule and status",
    ["method", "endpoint", "status"])
LATENCY = Histogram(
    "coalition_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, URL rule and status",
    ["method", "endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
LEDGER_ENTRIES = Counter(
    "coalition_ledger_entries", "Journal entries committed, by kind", ["kind"])


# --------------------------------------------------------------------------- requests


def init_observability(app: Flask) -> None:
    # first in, last out: the request id and the clock exist before any other hook runs
    # (one that answers early, such as a 415 or a rate limit, is still logged), and the
    # access line sees the response as it finally leaves
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request_funcs.setdefault(None, []).insert(0, _finish)
    if app.config["METRICS"]:
        app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    _listen_for_commits()


def _request_id() -> str:
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    if _SANE_REQUEST_ID.fullmatch(offered):
        return offered
    return secrets.token_hex(16)


def _begin() -> None:
    request.environ[_STARTED_KEY] = time.perf_counter()
    request.environ[REQUEST_ID_KEY] = _request_id()
    # ``g`` belongs to the app context, which a request made inside another request (the
    # member page calling the token endpoint) or a test shares: the caller's principal is
    # put aside, so that this request logs only its own
    request.environ[_OUTER_PRINCIPAL_KEY] = g.pop("principal", None)


def _outcome(response: Response) -> str:
    if response.status_code < 400:
        return "ok"
    if response.is_json and not response.is_streamed:
        body = response.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"][:64]
    return STATUS_CODES.get(response.status_code, "error")


def _finish(response: Response) -> Response:
    environ = request.environ
    started = environ.get(_STARTED_KEY)
    if started is None:  # the request never reached the first hook
        return response
    seconds = time.perf_counter() - started
    request_id = environ[REQUEST_ID_KEY]
    response.headers[REQUEST_ID_HEADER] = request_id
    endpoint = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    status = response.status_code
    principal = g.get("principal")
    outcome = _outcome(response)
    access_log.info(
        "%s %s %s", request.method, endpoint, status,
        extra={"request_id": request_id, "method": request.method, "path": endpoint,
               "status": status, "duration_ms": round(seconds * 1000, 2),
               "remote_addr": request.remote_addr,
               "client_id": principal.client_id if principal else None,
               "partner": principal.partner_code if principal else None,
               "outcome": outcome})
    if current_app.config["METRICS"]:
        labels = (request.method, endpoint, str(status))
        REQUESTS.labels(*labels).inc()
        LATENCY.labels(*labels).observe(seconds)
    outer = environ.pop(_OUTER_PRINCIPAL_KEY, None)
    if outer is not None:
        g.principal = outer
    return response


def metrics_view() -> Response:
    """Prometheus exposition (not part of the API, so not in its OpenAPI document)."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry),
                    headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


# --------------------------------------------------------------------------- ledger


def note_booked(session: Session, kind: str) -> None:
    """Remember that an entry of ``kind`` was written in ``session``'s transaction; it is
    counted once that transaction commits, and forgotten if it does not."""
    session.info.setdefault(_BOOKED_KEY, []).append(kind)


def _count_committed(session: Session) -> None:
    kinds = session.info.pop(_BOOKED_KEY, None)
    for kind in kinds or ():
        LEDGER_ENTRIES.labels(kind).inc()


def _forget_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # after a commit this finds nothing left; after a rollback (or a close without a
    # commit) it drops what the transaction booked
    if transaction.parent is None:
        session.info.pop(_BOOKED_KEY, None)


def _listen_for_commits() -> None:
    if not event.contains(Session, "after_commit", _count_committed):
        event.listen(Session, "after_commit", _count_committed)
        event.listen(Session, "after_transaction_end", _forget_uncommitted)


def sample(name: str, labels: dict[str, Any] | None = None) -> float:
    """A metric's current value in this process (0 when never observed); for tests."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0
