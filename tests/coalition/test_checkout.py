"""A source checkout works as typed after ``make run``: its own instance folder is a
development instance, and nothing of that reaches a deployment by accident. The command
line shows Coalition's commands, not Flask's options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import ConfigError, load_settings, source_checkout
from tests.conftest import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]
PG = "postgresql+psycopg://coalition:pw@db.internal:5432/coalition"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "instance").mkdir()
    return tmp_path


def test_the_checkouts_own_instance_is_development(checkout):
    settings = load_settings(checkout / "instance", environ={}, checkout=checkout)
    assert settings["ENV"] == "development"
    assert settings["SECRET_KEY"] == (checkout / "instance" / "secret_key").read_text()
    assert settings["DATABASE_URL"] == f"sqlite:///{checkout / 'instance' / 'coalition.sqlite3'}"


@pytest.mark.parametrize("environ", [
    {"COALITION_DATABASE_URL": PG},
    {"COALITION_SECRET_KEY": TEST_SECRET},
    {"COALITION_DATABASE_URL": PG, "COALITION_SECRET_KEY": TEST_SECRET},
], ids=["database-url", "secret-key", "both"])
def test_a_deployments_settings_keep_production(checkout, environ):
    settings = load_settings(checkout / "instance", environ=environ | {
        "COALITION_SECRET_KEY": TEST_SECRET}, checkout=checkout)
    assert settings["ENV"] == "production"
    if "COALITION_SECRET_KEY" not in environ:
        # the database alone is enough to keep production, and its secret is then required
        with pytest.raises(ConfigError, match="COALITION_SECRET_KEY is required"):
            load_settings(checkout / "instance", environ=environ, checkout=checkout)


def test_an_instance_folder_elsewhere_is_production(checkout, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("srv") / "instance"
    with pytest.raises(ConfigError, match="COALITION_SECRET_KEY is required in production"):
        load_settings(elsewhere, environ={}, checkout=checkout)
    assert not (elsewhere / "secret_key").exists()


def test_an_installed_package_is_production(checkout):
    with pytest.raises(ConfigError, match="COALITION_SECRET_KEY is required in production"):
        load_settings(checkout / "instance", environ={}, checkout=None)
    assert not (checkout / "instance" / "secret_key").exists()


def test_coalition_env_always_wins(checkout):
    with pytest.raises(ConfigError, match="required in production"):
        load_settings(checkout / "instance", environ={"COALITION_ENV": "production"},
                      checkout=checkout)
    assert load_settings(checkout / "instance", environ={"COALITION_ENV": "testing"},
                         checkout=checkout)["ENV"] == "testing"


def test_this_source_tree_is_a_checkout():
    assert source_checkout() == ROOT


# --------------------------------------------------------------------------- the command line


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("COALITION_", "FLASK_"))}
    environ.update(env)
    return subprocess.run([str(Path(sys.executable).with_name("coalition")), *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=60)


def test_help_shows_coalitions_commands_not_flasks_options(tmp_path):
    result = run(tmp_path, "--help", COALITION_ENV="development",
                 COALITION_INSTANCE_PATH=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Coalition loyalty platform" in result.stdout
    for command in ("db", "client", "demo", "ledger", "settle", "finance", "partner", "run"):
        assert f"\n  {command} " in result.stdout, command
    for flask_option in ("--env-file", "--app", "--debug", "FLASK_APP", ".flaskenv"):
        assert flask_option not in result.stdout, flask_option


def test_a_dotenv_file_is_never_read(tmp_path):
    """Settings come from the environment only: a stray .env cannot switch a server to
    development."""
    (tmp_path / ".env").write_text("COALITION_ENV=development\n")
    (tmp_path / ".flaskenv").write_text("COALITION_ENV=development\n")
    result = run(tmp_path, "db", "current", COALITION_INSTANCE_PATH=str(tmp_path / "i"))
    assert result.returncode == 2
    assert "COALITION_SECRET_KEY is required in production" in result.stderr
    assert not (tmp_path / "i" / "secret_key").exists()
