"""Alembic commands run against the current app's database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    return cfg


def upgrade(revision: str = "head") -> None:
    command.upgrade(alembic_config(), revision)


def downgrade(revision: str) -> None:
    command.downgrade(alembic_config(), revision)


def check() -> None:
    """Raise if the models and the migrated schema differ."""
    command.check(alembic_config())


def revision(message: str) -> None:
    command.revision(alembic_config(), message=message, autogenerate=True)


def current() -> None:
    command.current(alembic_config(), verbose=True)
