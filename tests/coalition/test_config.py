"""Settings: defaults, ``COALITION_*`` overrides, and a clear failure at start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from coalition.app import create_app
from config import SETTINGS, ConfigError, describe, load_settings
from tests.conftest import TEST_SECRET

DEV = {"COALITION_ENV": "development"}
PG = "postgresql+psycopg://coalition:pw@db.internal:5432/coalition"
REPLICA = "postgresql+psycopg://coalition:pw@replica.internal:5432/coalition"


@pytest.fixture
def clean_environ(monkeypatch):
    """No COALITION_* setting inherited from the shell that runs the tests."""
    for setting in SETTINGS:
        monkeypatch.delenv(f"COALITION_{setting.name}", raising=False)
    return monkeypatch


def test_defaults(tmp_path):
    settings = load_settings(tmp_path, environ=DEV)
    expected = {
        "ENV": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'coalition.sqlite3'}",
        "ACCESS_TOKEN_LIFETIME": 900,
        "REFRESH_TOKEN_LIFETIME": 30 * 24 * 3600,
        "REFRESH_GRACE": 5,
        "AUTHORIZATION_CODE_LIFETIME": 60,
        "DATABASE_REPLICA_URL": None,
        "DB_REPLICA_MAX_LAG": 5,
        "DB_CONNECT_TIMEOUT": 5,
        "DB_FAILOVER_WAIT": 3,
        "DB_RETRY_AFTER": 5,
        "DB_POOL_SIZE": 10,
        "DB_MAX_OVERFLOW": 10,
        "DB_BUSY_TIMEOUT_MS": 10000,
        "DB_PRE_PING": False,
        "TX_RETRIES": 8,
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "RATE_LIMIT_ENABLED": True,  # on everywhere but in testing
        "RATE_LIMIT": 200,
        "RATE_LIMIT_BURST": 400,
        "TOKEN_RATE_LIMIT": 10,
        "TOKEN_RATE_LIMIT_BURST": 100,
        "BREAKAGE_PRIOR": "0.2",
        "BREAKAGE_MIN_COHORTS": 6,
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "text",  # readable lines for a developer; json elsewhere
        "SQL_ECHO": False,
        "PASSWORD_HASHING": "full",
    }
    assert {name: settings[name] for name in expected} == expected
    assert set(settings) == {s.name for s in SETTINGS}


def test_development_secret_is_generated_once_and_kept_private(tmp_path):
    first = load_settings(tmp_path, environ=DEV)["SECRET_KEY"]
    second = load_settings(tmp_path, environ=DEV)["SECRET_KEY"]
    assert len(first) >= 32
    assert first == second == (tmp_path / "secret_key").read_text()
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_production_is_the_default_and_needs_a_secret_key(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert str(caught.value) == (
        "COALITION_SECRET_KEY is required in production "
        "(set COALITION_ENV=development for a local instance)")
    assert not (tmp_path / "secret_key").exists()


def test_environment_overrides_every_default(tmp_path):
    environ = {
        "COALITION_ENV": "Production",
        "COALITION_DATABASE_URL": PG,
        "COALITION_SECRET_KEY": TEST_SECRET,
        "COALITION_ACCESS_TOKEN_LIFETIME": " 300 ",
        "COALITION_REFRESH_TOKEN_LIFETIME": "3600",
        "COALITION_REFRESH_GRACE": "0",
        "COALITION_AUTHORIZATION_CODE_LIFETIME": "30",
        "COALITION_DATABASE_REPLICA_URL": REPLICA,
        "COALITION_DB_REPLICA_MAX_LAG": "0.5",
        "COALITION_DB_CONNECT_TIMEOUT": "2",
        "COALITION_DB_FAILOVER_WAIT": "0",
        "COALITION_DB_RETRY_AFTER": "9",
        "COALITION_DB_POOL_SIZE": "20",
        "COALITION_DB_MAX_OVERFLOW": "0",
        "COALITION_DB_BUSY_TIMEOUT_MS": "500",
        "COALITION_DB_PRE_PING": "true",
        "COALITION_TX_RETRIES": "3",
        "COALITION_MAX_CONTENT_LENGTH": "2048",
        "COALITION_RATE_LIMIT_ENABLED": "off",
        "COALITION_RATE_LIMIT": "2.5",
        "COALITION_RATE_LIMIT_BURST": "5",
        "COALITION_TOKEN_RATE_LIMIT": "0.5",
        "COALITION_TOKEN_RATE_LIMIT_BURST": "3",
        "COALITION_RATE_LIMIT_STORAGE": " redis://cache.internal:6379/2 ",
        "COALITION_RATE_LIMIT_FAIL_OPEN": "no",
        "COALITION_RATE_LIMIT_KEY_PREFIX": "eu:limits:",
        "COALITION_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16,::1",
        "COALITION_BREAKAGE_PRIOR": " 0.150 ",
        "COALITION_BREAKAGE_MIN_COHORTS": "2",
        "COALITION_LOG_LEVEL": "DEBUG",
        "COALITION_LOG_FORMAT": "text",
        "COALITION_SQL_ECHO": "yes",
        "COALITION_METRICS": "false",
        "COALITION_WEBHOOK_RETRY_FOR": "600",
        "COALITION_WEBHOOK_BACKOFF": "0.5",
        "COALITION_WEBHOOK_MAX_BACKOFF": "60",
        "COALITION_WEBHOOK_TIMEOUT": "2",
        "COALITION_WEBHOOK_CONCURRENCY": "3",
        "COALITION_BATCH_MAX_BYTES": "4096",
        "COALITION_BATCH_CONCURRENCY": "2",
        "COALITION_WORKER_POLL": "0.25",
        "COALITION_SMTP_URL": "smtp+starttls://mailer:pw@smtp.internal:587",
        "COALITION_MAIL_FROM": "Points <points@example.com>",
        "COALITION_PUBLIC_URL": "https://points.example.com/",
        "COALITION_MAIL_RETRY_FOR": "3600",
        "COALITION_MAIL_BACKOFF": "5",
        "COALITION_MAIL_MAX_BACKOFF": "120",
        "COALITION_SMTP_TIMEOUT": "7",
        "COALITION_MAIL_BATCH": "4",
        "ACCESS_TOKEN_LIFETIME": "1",  # not prefixed: ignored
    }
    assert load_settings(tmp_path, environ=environ) == {
        "ENV": "production",
        "DATABASE_URL": PG,
        "SECRET_KEY": TEST_SECRET,
        "ACCESS_TOKEN_LIFETIME": 300,
        "REFRESH_TOKEN_LIFETIME": 3600,
        "REFRESH_GRACE": 0,
        "AUTHORIZATION_CODE_LIFETIME": 30,
        "DATABASE_REPLICA_URL": REPLICA,
        "DB_REPLICA_MAX_LAG": 0.5,
        "DB_CONNECT_TIMEOUT": 2,
        "DB_FAILOVER_WAIT": 0,
        "DB_RETRY_AFTER": 9,
        "DB_POOL_SIZE": 20,
        "DB_MAX_OVERFLOW": 0,
        "DB_BUSY_TIMEOUT_MS": 500,
        "DB_PRE_PING": True,
        "TX_RETRIES": 3,
        "MAX_CONTENT_LENGTH": 2048,
        "RATE_LIMIT_ENABLED": False,
        "RATE_LIMIT": 2.5,
        "RATE_LIMIT_BURST": 5,
        "TOKEN_RATE_LIMIT": 0.5,
        "TOKEN_RATE_LIMIT_BURST": 3,
        "RATE_LIMIT_STORAGE": "redis://cache.internal:6379/2",
        "RATE_LIMIT_FAIL_OPEN": False,
        "RATE_LIMIT_KEY_PREFIX": "eu:limits:",
        "TRUSTED_PROXIES": ("10.0.0.5/32", "10.1.0.0/16", "::1/128"),
        "BREAKAGE_PRIOR": "0.150",
        "BREAKAGE_MIN_COHORTS": 2,
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "text",
        "SQL_ECHO": True,
        "METRICS": False,
        "WEBHOOK_RETRY_FOR": 600,
        "WEBHOOK_BACKOFF": 0.5,
        "WEBHOOK_MAX_BACKOFF": 60,
        "WEBHOOK_TIMEOUT": 2,
        "WEBHOOK_CONCURRENCY": 3,
        "BATCH_MAX_BYTES": 4096,
        "BATCH_CONCURRENCY": 2,
        "WORKER_POLL": 0.25,
        "SMTP_URL": "smtp+starttls://mailer:pw@smtp.internal:587",
        "MAIL_FROM": "Points <points@example.com>",
        "PUBLIC_URL": "https://points.example.com",
        "MAIL_RETRY_FOR": 3600,
        "MAIL_BACKOFF": 5,
        "MAIL_MAX_BACKOFF": 120,
        "SMTP_TIMEOUT": 7,
        "MAIL_BATCH": 4,
        "PASSWORD_HASHING": "full",  # production takes no other (test_passwords.py)
    }


def test_explicit_overrides_beat_the_environment(tmp_path):
    environ = {**DEV, "COALITION_ACCESS_TOKEN_LIFETIME": "300", "COALITION_SQL_ECHO": "on"}
    settings = load_settings(tmp_path, environ=environ,
                             overrides={"ACCESS_TOKEN_LIFETIME": 60, "SQL_ECHO": False})
    assert settings["ACCESS_TOKEN_LIFETIME"] == 60
    assert settings["SQL_ECHO"] is False


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("ENV", "staging", "expected one of production, development, testing"),
    ("DATABASE_URL", "not a url", "not a database URL"),
    ("DATABASE_URL", "mysql://u@h/db", "only sqlite:/// and postgresql+psycopg:// URLs are "
                                       "supported"),
    ("DATABASE_URL", "postgresql+psycopg2://u@h/db",
     "PostgreSQL URLs must use the psycopg 3 driver: postgresql+psycopg://"),
    ("SECRET_KEY", "short", "must be at least 16 characters"),
    ("SMTP_URL", "http://mail:25", "expected smtp://host:port, smtps://host:port or "
                                   "smtp+starttls://host:port (user:password@ before the "
                                   "host)"),
    ("SMTP_URL", "smtp://mail:x", "the port is not a number"),
    ("MAIL_FROM", "nobody", "expected an e-mail address, e.g. Coalition "
                            "<no-reply@example.com>"),
    ("PUBLIC_URL", "points.example.com", "expected an http:// or https:// URL"),
    ("ACCESS_TOKEN_LIFETIME", "abc", "expected a whole number"),
    ("ACCESS_TOKEN_LIFETIME", "1.5", "expected a whole number"),
    ("ACCESS_TOKEN_LIFETIME", "", "expected a whole number"),
    ("ACCESS_TOKEN_LIFETIME", "0", "expected a number greater than zero"),
    ("DB_POOL_SIZE", "-3", "expected a number greater than zero"),
    ("DB_MAX_OVERFLOW", "-1", "expected zero or more"),
    ("LOG_LEVEL", "loud", "expected one of debug, info, warning, error"),
    ("LOG_FORMAT", "xml", "expected one of json, text"),
    ("SQL_ECHO", "maybe", "expected true or false"),
    ("RATE_LIMIT_ENABLED", "sometimes", "expected true or false"),
    ("RATE_LIMIT", "0", "expected a number greater than zero"),
    ("RATE_LIMIT", "fast", "expected a number greater than zero"),
    ("RATE_LIMIT", "inf", "expected a number greater than zero"),
    ("RATE_LIMIT_BURST", "1.5", "expected a whole number"),
    ("TOKEN_RATE_LIMIT", "-1", "expected a number greater than zero"),
    ("TOKEN_RATE_LIMIT_BURST", "0", "expected a number greater than zero"),
    ("RATE_LIMIT_STORAGE", "memcached://h:11211", "expected memory:// or a Redis URL "
                                                  "(redis://host:port/db, rediss://…, "
                                                  "unix:///path)"),
    ("RATE_LIMIT_STORAGE", "redis://", "expected memory:// or a Redis URL "
                                       "(redis://host:port/db, rediss://…, unix:///path)"),
    ("RATE_LIMIT_FAIL_OPEN", "perhaps", "expected true or false"),
    ("TRUSTED_PROXIES", "10.0.0.1, nginx", "'nginx' is not an IP address or network"),
    ("BREAKAGE_PRIOR", "1", "expected a decimal at least 0 and below 1"),
    ("BREAKAGE_PRIOR", "a fifth", "expected a decimal at least 0 and below 1"),
    ("BREAKAGE_PRIOR", "NaN", "expected a decimal at least 0 and below 1"),
    ("BREAKAGE_MIN_COHORTS", "0", "expected a number greater than zero"),
])
def test_malformed_environment_variable_is_named(tmp_path, name, value, reason):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={**DEV, f"COALITION_{name}": value})
    # secrets and database URLs (which may carry a password) are never echoed back
    hidden = ("SECRET_KEY", "DATABASE_URL", "RATE_LIMIT_STORAGE", "SMTP_URL")
    shown = "(hidden)" if name in hidden else repr(value)
    assert str(caught.value) == f"invalid configuration: COALITION_{name}={shown}: {reason}"


def test_every_malformed_setting_is_reported_at_once(tmp_path):
    environ = {**DEV, "COALITION_TX_RETRIES": "x", "COALITION_LOG_FORMAT": "xml"}
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ=environ)
    assert str(caught.value) == (
        "invalid configuration: COALITION_TX_RETRIES='x': expected a whole number; "
        "COALITION_LOG_FORMAT='xml': expected one of json, text")


def test_malformed_override_is_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ=DEV, overrides={"TX_RETRIES": True})
    assert str(caught.value) == (
        "invalid configuration: setting TX_RETRIES=True: expected a whole number")


def test_unknown_override_is_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ=DEV, overrides={"ACCESS_TOKEN_TTL": 60, "NOPE": 1})
    assert str(caught.value) == "unknown setting(s): ACCESS_TOKEN_TTL, NOPE"


def test_describe_lists_every_variable():
    assert [row[0] for row in describe()] == [f"COALITION_{s.name}" for s in SETTINGS]
    assert ("COALITION_ACCESS_TOKEN_LIFETIME", "900", "seconds an access token lives") in describe()


# --------------------------------------------------------------------------- create_app


def test_create_app_reads_the_environment(clean_environ, tmp_path):
    clean_environ.setenv("COALITION_INSTANCE_PATH", str(tmp_path / "instance"))
    clean_environ.setenv("COALITION_ENV", "development")
    clean_environ.setenv("COALITION_ACCESS_TOKEN_LIFETIME", "120")
    clean_environ.setenv("COALITION_MAX_CONTENT_LENGTH", "4096")
    clean_environ.setenv("COALITION_LOG_LEVEL", "warning")
    app = create_app()
    assert app.instance_path == str(tmp_path / "instance")
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'instance' / 'coalition.sqlite3'}"
    assert app.config["ACCESS_TOKEN_LIFETIME"] == 120
    # Flask's own limit follows the setting
    assert app.config["MAX_CONTENT_LENGTH"] == 4096
    assert app.config["TESTING"] is False
    assert app.config["SECRET_KEY"] == (tmp_path / "instance" / "secret_key").read_text()


def test_create_app_overrides_beat_the_environment(clean_environ, tmp_path):
    clean_environ.setenv("COALITION_ACCESS_TOKEN_LIFETIME", "120")
    app = create_app({"ENV": "testing", "SECRET_KEY": TEST_SECRET, "LOG_LEVEL": "warning",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
                      "ACCESS_TOKEN_LIFETIME": 60})
    assert app.config["ACCESS_TOKEN_LIFETIME"] == 60
    assert app.config["TESTING"] is True


def test_create_app_fails_at_start_naming_the_variable(clean_environ, tmp_path):
    clean_environ.setenv("COALITION_ACCESS_TOKEN_LIFETIME", "abc")
    with pytest.raises(ConfigError) as caught:
        create_app({"ENV": "testing", "SECRET_KEY": TEST_SECRET,
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"})
    assert str(caught.value) == (
        "invalid configuration: COALITION_ACCESS_TOKEN_LIFETIME='abc': expected a whole number")


# --------------------------------------------------------------------------- the command line


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COALITION_")}
    environ.update(COALITION_INSTANCE_PATH=str(tmp_path), **env)
    return subprocess.run([str(Path(sys.executable).with_name("coalition")), *args],
                          env=environ, capture_output=True, text=True, timeout=60)


def test_cli_prints_a_clear_error_for_a_malformed_setting(tmp_path):
    result = run_cli(tmp_path, "partner", "list", COALITION_ENV="development",
                     COALITION_ACCESS_TOKEN_LIFETIME="abc")
    assert result.returncode == 2
    assert result.stderr == ("coalition: invalid configuration: "
                             "COALITION_ACCESS_TOKEN_LIFETIME='abc': expected a whole number\n")
    assert result.stdout == ""


def test_cli_prints_a_clear_error_for_a_missing_secret(tmp_path):
    result = run_cli(tmp_path, "db", "upgrade")
    assert result.returncode == 2
    assert result.stderr == ("coalition: COALITION_SECRET_KEY is required in production "
                             "(set COALITION_ENV=development for a local instance)\n")
    # nothing was created before the settings were refused
    assert not (tmp_path / "coalition.sqlite3").exists()


def test_a_replica_needs_postgresql_on_both_sides(tmp_path):
    """Replica reads measure the standby's lag against the primary's WAL: PostgreSQL only."""
    environ = {**DEV, "COALITION_DATABASE_REPLICA_URL": REPLICA}
    with pytest.raises(ConfigError, match="COALITION_DATABASE_REPLICA_URL needs PostgreSQL"):
        load_settings(tmp_path, environ=environ)  # the primary is the embedded SQLite
    environ["COALITION_DATABASE_URL"] = PG
    assert load_settings(tmp_path, environ=environ)["DATABASE_REPLICA_URL"] == REPLICA
