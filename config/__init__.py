"""Coalition settings: defaults, then ``COALITION_*`` environment variables, then overrides.

Every setting is declared once in :data:`SETTINGS` with its parser, so a missing or
malformed value fails when the application starts, with a message naming the variable,
rather than at the first request that happens to need it.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PREFIX = "COALITION_"
ENVIRONMENTS = ("production", "development", "testing")


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


def _whole_number(value: Any) -> int:
    # int()'s own message ("invalid literal for int() with base 10") is Python's, not ours.
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _positive_int(value: Any) -> int:
    number = _whole_number(value)
    if number <= 0:
        raise ValueError("expected a number greater than zero")
    return number


def _positive_number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number greater than zero")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError("expected a number greater than zero") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError("expected a number greater than zero")
    return number


def _fraction(value: Any) -> str:
    """A decimal in [0, 1), kept as its text so that it stays exact."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError("expected a decimal at least 0 and below 1") from exc
    if not number.is_finite() or not 0 <= number < 1:
        raise ValueError("expected a decimal at least 0 and below 1")
    return str(number)


def _non_negative_int(value: Any) -> int:
    number = _whole_number(value)
    if number < 0:
        raise ValueError("expected zero or more")
    return number


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text

    return parse


def _bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _database_url(value: Any) -> str:
    text = str(value).strip()
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise ValueError("not a database URL") from exc
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        raise ValueError("PostgreSQL URLs must use the psycopg 3 driver: postgresql+psycopg://")
    return text


def _limit_storage(value: Any) -> str:
    text = str(value).strip()
    if text == "memory://":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError("expected memory:// or a Redis URL (redis://host:port/db, "
                         "rediss://…, unix:///path)")
    return text


def _addresses(value: Any) -> tuple[str, ...]:
    networks = []
    for item in str(value).replace(",", " ").split():
        try:
            networks.append(str(ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


SMTP_SCHEMES = ("smtp", "smtps", "smtp+starttls")


def _smtp_url(value: Any) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise ValueError("the port is not a number") from None
    if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
        raise ValueError("expected smtp://host:port, smtps://host:port or "
                         "smtp+starttls://host:port (user:password@ before the host)")
    return text


def _http_url(value: Any) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return text


def _mail_address(value: Any) -> str:
    text = str(value).strip()
    if "@" not in text or "\n" in text or "\r" in text:
        raise ValueError("expected an e-mail address, e.g. Coalition <no-reply@example.com>")
    return text


def _secret(value: Any) -> str:
    text = str(value)
    if len(text) < 16:
        raise ValueError("must be at least 16 characters")
    return text


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("ENV", _choice(*ENVIRONMENTS), "production",
            "production, development or testing"),
    Setting("DATABASE_URL", _database_url, None,
            "SQLAlchemy URL; default: SQLite in the instance folder"),
    Setting("SECRET_KEY", _secret, None,
            "signs sessions; required in production, generated per instance in development"),
    Setting("ACCESS_TOKEN_LIFETIME", _positive_int, 900,
            "seconds an access token lives"),
    Setting("REFRESH_TOKEN_LIFETIME", _positive_int, 30 * 24 * 3600,
            "seconds a member refresh token lives"),
    Setting("REFRESH_GRACE", _non_negative_int, 5,
            "seconds a just-rotated refresh token still answers the same new pair (two "
            "page views refreshing at once); 0: never"),
    Setting("AUTHORIZATION_CODE_LIFETIME", _positive_int, 60,
            "seconds an authorization code lives"),
    Setting("DATABASE_REPLICA_URL", _database_url, None,
            "a PostgreSQL hot standby for balance, history, statement and program reads; "
            "default: none, every read goes to DATABASE_URL"),
    Setting("DB_REPLICA_MAX_LAG", _positive_number, 5,
            "seconds a replica may be behind the primary before its reads go to the "
            "primary instead (checked at most once a second per process)"),
    Setting("DB_CONNECT_TIMEOUT", _positive_int, 5,
            "seconds to wait for each PostgreSQL host when connecting (libpq "
            "connect_timeout; with a multi-host URL, per host)"),
    Setting("DB_FAILOVER_WAIT", _non_negative_int, 3,
            "seconds a request keeps trying to reach a primary (a failover under way) "
            "before it answers 503"),
    Setting("DB_RETRY_AFTER", _positive_int, 5,
            "the Retry-After, in seconds, of a 503 answered while no primary is reachable"),
    Setting("DB_POOL_SIZE", _positive_int, 10, "connections per process (PostgreSQL)"),
    Setting("DB_MAX_OVERFLOW", _non_negative_int, 10, "extra connections under load"),
    Setting("DB_BUSY_TIMEOUT_MS", _positive_int, 10000, "SQLite lock wait, milliseconds"),
    Setting("DB_PRE_PING", _bool, False,
            "test each pooled connection before use (a round trip per request); without "
            "it a dropped connection fails one request and the pool is replaced"),
    Setting("TX_RETRIES", _positive_int, 8,
            "attempts for a transaction that hits a deadlock or serialization failure"),
    Setting("MAX_CONTENT_LENGTH", _positive_int, 1024 * 1024, "largest request body, bytes"),
    Setting("RATE_LIMIT_ENABLED", _bool, None,
            "rate limiting on or off; default: off in testing, on otherwise"),
    Setting("RATE_LIMIT_STORAGE", _limit_storage, "memory://",
            "where the rate limits count: memory:// (each worker process counts on its own) "
            "or a Redis URL shared by every worker and host (redis://host:6379/0)"),
    Setting("RATE_LIMIT_FAIL_OPEN", _bool, True,
            "when the Redis of RATE_LIMIT_STORAGE cannot be reached: true lets requests "
            "through unlimited, false refuses them (503); either way it is logged"),
    Setting("RATE_LIMIT_KEY_PREFIX", str, "coalition:ratelimit:",
            "prefix of the rate limits' keys in Redis"),
    Setting("TRUSTED_PROXIES", _addresses, (),
            "addresses or networks of the reverse proxies (nginx) whose X-Forwarded-For "
            "and X-Forwarded-Proto are believed; from anyone else they are ignored"),
    Setting("RATE_LIMIT", _positive_number, 200,
            "requests per second sustained per OAuth client (member tokens: per member), "
            "per worker process with memory://, in all with Redis"),
    Setting("RATE_LIMIT_BURST", _positive_int, 400,
            "requests a client may send at once: at most this many in any "
            "RATE_LIMIT_BURST / RATE_LIMIT seconds (a moving window, whole seconds)"),
    Setting("TOKEN_RATE_LIMIT", _positive_number, 10,
            "requests per second sustained per remote address to /oauth/token, /oauth/revoke and "
            "/oauth/introspect, per worker process with memory://, in all with Redis"),
    Setting("TOKEN_RATE_LIMIT_BURST", _positive_int, 100,
            "requests at once per remote address: at most this many in any "
            "TOKEN_RATE_LIMIT_BURST / TOKEN_RATE_LIMIT seconds"),
    Setting("BREAKAGE_PRIOR", _fraction, "0.2",
            "share of points expected never to be redeemed, used for the points liability "
            "until enough cohorts are closed to measure it (a decimal in [0, 1))"),
    Setting("BREAKAGE_MIN_COHORTS", _positive_int, 6,
            "closed cohorts (origin partner and month earned) needed before the points "
            "liability measures breakage from the program's own history"),
    Setting("LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Setting("LOG_FORMAT", _choice("json", "text"), None,
            "log line format; default: text in development, json otherwise"),
    Setting("SQL_ECHO", _bool, False, "log every SQL statement"),
    Setting("WEBHOOK_RETRY_FOR", _positive_int, 3 * 24 * 3600,
            "seconds a webhook delivery is retried before it is given up as failed"),
    Setting("WEBHOOK_BACKOFF", _positive_number, 10,
            "seconds before a webhook's first retry; each retry waits about twice as long "
            "as the one before (with jitter)"),
    Setting("WEBHOOK_MAX_BACKOFF", _positive_number, 3600,
            "the longest wait between two attempts of one webhook delivery, seconds"),
    Setting("WEBHOOK_TIMEOUT", _positive_number, 10,
            "seconds a receiver has to answer a webhook delivery"),
    Setting("WEBHOOK_CONCURRENCY", _positive_int, 8,
            "webhook deliveries the worker sends at once"),
    Setting("SMTP_URL", _smtp_url, None,
            "the SMTP relay of members' e-mails: smtp://host:port, smtps://host:port "
            "(TLS) or smtp+starttls://host:port, with user:password@ before the host when "
            "it needs them; default: none, members are told in their inbox only"),
    Setting("MAIL_FROM", _mail_address, "Coalition <no-reply@coalition.example>",
            "the From of members' e-mails (its domain ends every Message-ID)"),
    Setting("PUBLIC_URL", _http_url, "http://127.0.0.1:5000",
            "where members reach this service, for the links in e-mails (unsubscribe)"),
    Setting("MAIL_RETRY_FOR", _positive_int, 2 * 24 * 3600,
            "seconds an e-mail is retried before it is given up as failed"),
    Setting("MAIL_BACKOFF", _positive_number, 30,
            "seconds before an e-mail's first retry; each retry waits about twice as long "
            "as the one before (with jitter)"),
    Setting("MAIL_MAX_BACKOFF", _positive_number, 3600,
            "the longest wait between two attempts of one e-mail, seconds"),
    Setting("SMTP_TIMEOUT", _positive_number, 20,
            "seconds the SMTP relay has to take one e-mail"),
    Setting("MAIL_BATCH", _positive_int, 20,
            "e-mails the worker takes at once (sent over one SMTP connection)"),
    Setting("BATCH_MAX_BYTES", _positive_int, 64 * 1024 * 1024,
            "largest batch file, bytes (other request bodies: MAX_CONTENT_LENGTH)"),
    Setting("BATCH_CONCURRENCY", _positive_int, 8,
            "batch rows the worker books at once (one member's rows always in file order)"),
    Setting("WORKER_POLL", _positive_number, 1,
            "seconds the worker waits when it finds nothing to do"),
    Setting("PASSWORD_HASHING", _choice("full", "minimal"), "full",
            "Argon2id cost of password hashes: full (RFC 9106's low-memory profile), or "
            "minimal for a test suite only (refused in production)"),
    Setting("METRICS", _bool, True,
            "serve Prometheus metrics at /metrics (no token: keep it off the public edge)"),
)


_SECRET_SETTINGS = {"SECRET_KEY", "DATABASE_URL", "DATABASE_REPLICA_URL", "RATE_LIMIT_STORAGE",
                    "SMTP_URL"}


def source_checkout() -> Path | None:
    """The Git checkout Coalition runs from (``make run``), or None when it is installed."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / ".git").exists():
        return root
    return None


def _default_env(instance_path: Path, environ: Mapping[str, str],
                 overrides: Mapping[str, Any], checkout: Path | None) -> str:
    """``development`` for the embedded database of a source checkout, else ``production``.

    So that the commands of a checkout work as typed after ``make run``, its own instance
    folder (``./instance``) is a development instance when nothing says otherwise. Any sign
    of a deployment — an instance folder elsewhere, a database URL or a secret key given —
    keeps the default at production, as does an installed package (no checkout at all).
    """
    given = {name for name in ("DATABASE_URL", "SECRET_KEY")
             if name in overrides or PREFIX + name in environ}
    if (checkout is not None and not given
            and instance_path.resolve() == (checkout / "instance").resolve()):
        return "development"
    return "production"


def load_settings(
    instance_path: Path,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    checkout: Path | None = None,
) -> dict[str, Any]:
    """Resolve every setting, or raise :class:`ConfigError` naming all the bad ones.

    ``checkout`` is the source checkout the code runs from (:func:`source_checkout`), if
    any: its own instance folder defaults to development."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    unknown = sorted(k for k in overrides if k not in {s.name for s in SETTINGS})
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        if setting.name in overrides:
            raw, source = overrides[setting.name], f"setting {setting.name}"
        elif PREFIX + setting.name in environ:
            raw, source = environ[PREFIX + setting.name], PREFIX + setting.name
        elif setting.name == "ENV":
            values["ENV"] = _default_env(instance_path, environ, overrides, checkout)
            continue
        else:
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except (TypeError, ValueError) as exc:
            # never echo a secret or a database URL (it may carry a password) into logs
            shown = "(hidden)" if setting.name in _SECRET_SETTINGS else repr(raw)
            problems.append(f"{source}={shown}: {exc}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))

    if values["ENV"] == "production" and values["PASSWORD_HASHING"] != "full":
        raise ConfigError("invalid configuration: PASSWORD_HASHING must be full in production")
    if values["LOG_FORMAT"] is None:
        values["LOG_FORMAT"] = "text" if values["ENV"] == "development" else "json"
    if values["RATE_LIMIT_ENABLED"] is None:
        values["RATE_LIMIT_ENABLED"] = values["ENV"] != "testing"
    if values["DATABASE_URL"] is None:
        values["DATABASE_URL"] = f"sqlite:///{instance_path / 'coalition.sqlite3'}"
    if values["DATABASE_REPLICA_URL"] is not None and not all(
            make_url(values[name]).get_backend_name() == "postgresql"
            for name in ("DATABASE_URL", "DATABASE_REPLICA_URL")):
        raise ConfigError("invalid configuration: COALITION_DATABASE_REPLICA_URL needs "
                          "PostgreSQL for both COALITION_DATABASE_URL and the replica")
    if values["SECRET_KEY"] is None:
        if values["ENV"] == "production":
            raise ConfigError(
                "COALITION_SECRET_KEY is required in production "
                "(set COALITION_ENV=development for a local instance)"
            )
        values["SECRET_KEY"] = _instance_secret(instance_path)
    return values


def _instance_secret(instance_path: Path) -> str:
    """A development secret kept in the instance folder so sessions survive restarts."""
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting, for the README and ``--help``."""
    return [(PREFIX + s.name, repr(s.default), s.help) for s in SETTINGS]
