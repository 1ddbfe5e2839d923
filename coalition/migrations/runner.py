"""Alembic commands run against the current app's database.

Alembic is loaded when one of them runs, not with the app: with Mako and Pygments it is a
fifth of the app's import time, which every server worker and command would pay.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    return cfg


def upgrade(revision: str = "head") -> None:
    _command().upgrade(alembic_config(), revision)


def downgrade(revision: str) -> None:
    _command().downgrade(alembic_config(), revision)


def check() -> None:
    """Raise if the models and the migrated schema differ."""
    _command().check(alembic_config())


def revision(message: str) -> None:
    _command().revision(alembic_config(), message=message, autogenerate=True)


def current() -> None:
    _command().current(alembic_config(), verbose=True)


def _command() -> ModuleType:
    from alembic import command

    return command
