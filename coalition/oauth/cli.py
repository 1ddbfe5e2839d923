"""``coalition client …``: OAuth clients from the command line."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from coalition.audit.service import cli_actor
from coalition.commands import emit
from coalition.errors import CoalitionError
from coalition.oauth.clients import (
    create_operator_client,
    create_public_client,
    list_clients,
    revoke_client,
)


@click.group("client", help="OAuth clients.")
def client_cli() -> None:
    pass


@client_cli.command("create")
@click.option("--operator", "kind", flag_value="operator",
              help="An operator client (partner clients: `coalition partner client`).")
@click.option("--public", "kind", flag_value="public",
              help="A public client (a member app): no secret; members sign in through it "
                   "with the authorization code grant and PKCE; scope `member` (or, for "
                   "the finance page, where finance users sign in: `settlement:run`; for the "
                   "partner portal, where partner staff sign in: `partner:portal`).")
@click.option("--scope", "scope", help='Operator clients: space-separated, e.g. '
                                       '"admin settlement:run". Public clients: `member` '
                                       '(default), `settlement:run` (the finance page) or '
                                       '`partner:portal` (the partner portal).')
@click.option("--redirect-uri", "redirect_uris", multiple=True, metavar="URI",
              help="Public clients: where sign-in may return (exact match); repeatable.")
@click.option("--name", default="")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def client_create(kind: str | None, scope: str | None, redirect_uris: tuple[str, ...],
                  name: str, as_json: bool) -> None:
    """Create an operator client and print its secret (shown once), or a public client."""
    if kind is None:
        raise click.UsageError("Missing option '--operator' or '--public': the kind of "
                               "client to create.")
    try:
        if kind == "public":
            if scope not in (None, "member", "settlement:run", "partner:portal"):
                raise click.UsageError("A public client has the scope `member` (members sign "
                                       "in), `settlement:run` (the finance page) or "
                                       "`partner:portal` (the partner portal).")
            view = create_public_client(name, list(redirect_uris),
                                        scopes=((scope,) if scope else ("member",)),
                                        actor=cli_actor())
            data = {"client_id": view.client_id, "kind": view.kind, "name": view.name,
                    "scopes": view.scopes, "redirect_uris": view.redirect_uris,
                    "token_endpoint_auth_method": "none"}
            emit(data, as_json, f"client_id:     {view.client_id}  (public: no secret, PKCE)\n"
                                f"scopes:        {' '.join(view.scopes)}\n"
                                f"redirect_uris: {' '.join(view.redirect_uris)}")
            return
        if redirect_uris:
            raise click.UsageError("--redirect-uri is for public clients.")
        issued = create_operator_client((scope or "").split(), name=name, actor=cli_actor())
    except CoalitionError as exc:
        detail = exc.message
        if exc.errors and "redirect_uris" in exc.errors:
            problems = exc.errors["redirect_uris"]
            if isinstance(problems, dict):
                detail += " " + "; ".join(f"{redirect_uris[i]}: {' '.join(m)}"
                                          for i, m in problems.items())
        raise click.UsageError(detail) from exc
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
    clients = list_clients()
    rows = [{"client_id": c.client_id, "kind": c.kind, "scopes": c.scopes,
             "revoked": c.revoked_at is not None} for c in clients]
    emit(rows, as_json, "\n".join(
        f"{c.client_id:<24} {c.kind:<9} {' '.join(c.scopes)}"
        f"{'  (revoked)' if c.revoked_at is not None else ''}" for c in clients) or "no clients")


@client_cli.command("revoke")
@click.argument("client_id")
@with_appcontext
def client_revoke(client_id: str) -> None:
    """Revoke a client and its tokens."""
    try:
        revoke_client(client_id, actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"revoked {client_id}")
