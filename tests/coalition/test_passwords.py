"""Password hashing: the full Argon2id cost in production, the cheapest in the test suite."""

from __future__ import annotations

import pytest
from argon2 import extract_parameters, profiles

from coalition.app import create_app
from coalition.passwords import passwords
from config import ConfigError, load_settings
from tests.conftest import TEST_SECRET

PRODUCTION = {"ENV": "production", "SECRET_KEY": TEST_SECRET}


def test_production_hashes_at_the_full_cost(tmp_path):
    app = create_app({**PRODUCTION, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite3'}"})
    with app.app_context():
        made = passwords().hash("correct horse battery")
        assert passwords().verify(made, "correct horse battery")
    # RFC 9106's second recommended profile: 3 passes over 64 MiB in 4 lanes, Argon2id
    assert extract_parameters(made) == profiles.RFC_9106_LOW_MEMORY
    assert (profiles.RFC_9106_LOW_MEMORY.time_cost, profiles.RFC_9106_LOW_MEMORY.memory_cost,
            profiles.RFC_9106_LOW_MEMORY.parallelism) == (3, 64 * 1024, 4)
    assert made.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_the_full_cost_is_the_default_everywhere(tmp_path):
    for env in ("production", "development", "testing"):
        settings = load_settings(tmp_path, environ={"COALITION_ENV": env,
                                                    "COALITION_SECRET_KEY": TEST_SECRET})
        assert settings["PASSWORD_HASHING"] == "full", env


def test_production_refuses_the_minimal_cost(tmp_path):
    environ = {"COALITION_ENV": "production", "COALITION_SECRET_KEY": TEST_SECRET,
               "COALITION_PASSWORD_HASHING": "minimal"}
    with pytest.raises(ConfigError, match="PASSWORD_HASHING must be full in production"):
        load_settings(tmp_path, environ=environ)


def test_the_suite_hashes_at_the_minimal_cost_and_production_rehashes_it(app, tmp_path):
    made = passwords().hash("correct horse battery")
    assert extract_parameters(made) == profiles.CHEAPEST
    assert not passwords().verify(made, "wrong horse battery")
    assert not passwords().verify(None, "correct horse battery")
    production = create_app({**PRODUCTION, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite'}"})
    with production.app_context():
        # a cheap hash still verifies, and is replaced at the next sign-in
        assert passwords().verify(made, "correct horse battery")
        assert passwords().needs_rehash(made)
