"""The ``coalition`` command: a Flask CLI group over the application, whose packages add
their commands (:mod:`coalition.commands` for the core, ``partners`` and ``settlement``
for theirs)."""

from __future__ import annotations

import sys
from typing import Any

import click
from flask.cli import FlaskGroup

from coalition.app import create_app
from config import ConfigError


def _create_app() -> Any:
    try:
        return create_app()
    except ConfigError as exc:
        click.echo(f"coalition: {exc}", err=True)
        sys.exit(2)


main = FlaskGroup(create_app=_create_app, add_version_option=False, load_dotenv=False,
                 help="Coalition loyalty platform. Settings come from COALITION_* "
                      "environment variables (see the README); every command has --help.")
# Flask's --app, --env-file and --debug do not apply: the application is always Coalition,
# and its settings come from the environment only (never from a stray .env file)
main.params = [param for param in main.params if param.name not in ("app", "env_file", "debug")]
