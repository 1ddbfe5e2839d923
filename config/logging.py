"""Logging: one JSON object a line in production, readable text in development.

Every line logged while a request is being served carries that request's id
(``request_id``), added by :class:`RequestIdFilter` on the handler, so one request's lines
can be found together and matched with its access line and its ``X-Request-ID`` header.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from flask import has_request_context, request

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

#: where the request id of the request being served is kept (its WSGI environ)
REQUEST_ID_KEY = "coalition.request_id"


def current_request_id() -> str | None:
    """The id of the request being served, or ``None`` outside a request."""

    if not has_request_context():
        return None
    return request.environ.get(REQUEST_ID_KEY)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record logged while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = current_request_id()
            if request_id is not None:
                record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message``, then ``[request id]`` when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            return text
        head, newline, rest = text.partition("\n")
        return f"{head} [{request_id}]{newline}{rest}"


def configure_logging(level: str, fmt: str) -> None:
    formatter = {"()": JsonFormatter} if fmt == "json" else {"()": TextFormatter}
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default",
                                "filters": ["request_id"]}},
        "loggers": {"coalition": {"level": level.upper(), "handlers": ["stderr"],
                                  "propagate": False}},
    })
