"""The ``coalition`` command: a Flask CLI group with the project's commands."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask.cli import FlaskGroup, with_appcontext

from config import ConfigError


def _create_app() -> Any:
    from coalition.app import create_app

    try:
        return create_app()
    except ConfigError as exc:
        click.echo(f"coalition: {exc}", err=True)
        sys.exit(2)


main = FlaskGroup(create_app=_create_app, add_version_option=False,
              help="Coalition loyalty platform.")


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, default=str, indent=2) if as_json else text)


# --------------------------------------------------------------------------- db


@click.group("db", help="Database migrations.")
def db_cli() -> None:
    pass


@db_cli.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head)."""
    from coalition.migrations import runner

    runner.upgrade(revision)


@db_cli.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' for an empty schema)."""
    from coalition.migrations import runner

    runner.downgrade(revision)


@db_cli.command("check")
@with_appcontext
def db_check() -> None:
    """Fail if the models and the migrated schema differ."""
    from coalition.migrations import runner

    runner.check()
    click.echo("schema matches the models")


@db_cli.command("current")
@with_appcontext
def db_current() -> None:
    """Show the database's revision."""
    from coalition.migrations import runner

    runner.current()


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@with_appcontext
def db_revision(message: str) -> None:
    """Write a new migration from the difference between models and schema."""
    from coalition.migrations import runner

    runner.revision(message)


# --------------------------------------------------------------------------- clients


@click.group("client", help="OAuth clients.")
def client_cli() -> None:
    pass


@client_cli.command("create")
@click.option("--operator", "kind", flag_value="operator", required=True,
              help="An operator client (partner clients: `coalition partner client`).")
@click.option("--scope", "scope", required=True, help='Space-separated, e.g. "admin settlement:run".')
@click.option("--name", default="")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def client_create(kind: str, scope: str, name: str, as_json: bool) -> None:
    """Create an operator client and print its secret (shown once)."""
    from coalition.errors import CoalitionError
    from coalition.oauth.clients import create_operator_client

    try:
        issued = create_operator_client(scope.split(), name=name)
    except CoalitionError as exc:
        raise click.UsageError(exc.message) from exc
    data = {"client_id": issued.client_id, "client_secret": issued.client_secret,
            "scopes": issued.scopes}
    emit(data, as_json, f"client_id:     {issued.client_id}\n"
                        f"client_secret: {issued.client_secret}  (shown once)\n"
                        f"scopes:        {' '.join(issued.scopes)}")


@client_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def client_list(as_json: bool) -> None:
    """List OAuth clients (never their secrets)."""
    from coalition.oauth.clients import list_clients

    rows = [{"client_id": c.client_id, "kind": c.kind, "scopes": c.scopes,
             "revoked": c.revoked_at is not None} for c in list_clients()]
    emit(rows, as_json, "\n".join(
        f"{r['client_id']:<24} {r['kind']:<9} {' '.join(r['scopes'])}"
        f"{'  (revoked)' if r['revoked'] else ''}" for r in rows) or "no clients")


@client_cli.command("revoke")
@click.argument("client_id")
@with_appcontext
def client_revoke(client_id: str) -> None:
    """Revoke a client and its tokens."""
    from coalition.errors import CoalitionError
    from coalition.oauth.clients import revoke_client

    try:
        revoke_client(client_id)
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"revoked {client_id}")


# --------------------------------------------------------------------------- demo


@click.group("demo", help="The demo coalition.")
def demo_cli() -> None:
    pass


@demo_cli.command("load")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def demo_load(as_json: bool) -> None:
    """Load a demo coalition unless the database already has partners."""
    from coalition.demo import load_demo

    result = load_demo()
    if result is None:
        emit({"loaded": False}, as_json, "demo coalition already loaded")
        return
    if as_json:
        emit(result, True, "")
        return
    click.echo("Demo coalition loaded. These secrets are shown once:")
    for row in result["clients"]:
        click.echo(f"  {row['for']:<10} client_id={row['client_id']}  "
                   f"client_secret={row['client_secret']}  scope=\"{' '.join(row['scopes'])}\"")
